"""The command-line contract ``search.py`` and ``retrain.py`` share.

* bad input gives ONE line ``error: <message>`` on stderr and exit status 2, before any work
  (:class:`ArgumentParser`, :class:`CliError`, :func:`fail`, :func:`run_main`, the ``type=``
  check of every numeric flag, :func:`ranged`, from the one table of limits ``limits.FLAG_RANGES``);
* out of memory or a full disk is one ``error:`` line and exit status 1 (:func:`run_main`, with
  :mod:`nni_enas.run.failures`); after the ``done:`` line signals are ignored (:func:`finished`);
* the paper's settings become flags: one per key of ``paper.SEARCH`` / ``paper.FINAL``, with the
  help and value kind written beside the table (``paper.SEARCH_FLAGS`` / ``paper.FINAL_FLAGS``)
  and the per-space default in the help (:func:`add_paper_flags`, :func:`fill_paper_defaults`);
* the option groups both commands have (:func:`add_data_options`, :func:`add_run_options`) and
  which options the user really typed (:func:`parse_args_explicit`, e.g. to let ``--resume``
  change only some of them).

A flag both commands should get (e.g. a speed switch) goes in :func:`add_run_options`.

Exit statuses: 0 done, 1 the run failed (NaN loss, out of memory, a full disk), 2 bad input, 130 / 143 stopped by
SIGINT (Ctrl-C) / SIGTERM after saving what was consistent (128 + the signal's number).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from typing import Any, Callable, NoReturn, Sequence

import torch

from nni_enas.limits import FLAG_RANGES
from nni_enas.run.failures import resource_failure
from nni_enas.training.cuda_graphs import MODES as CUDA_GRAPH_MODES
from nni_enas.training.cuda_graphs import CudaGraphCaptureError

__all__ = [
    'EXIT_OK', 'EXIT_FAILED', 'EXIT_USAGE', 'EXIT_SIGINT', 'EXIT_SIGTERM',
    'CliError', 'TerminateRequest', 'ArgumentParser', 'fail', 'run_main', 'say',
    'int_at_least', 'positive_int', 'non_negative_int', 'seed_value', 'positive_float', 'non_negative_float',
    'fraction', 'ranged', 'finished', 'resolve_device',
    'paper_default', 'add_paper_flags', 'paper_keys', 'fill_paper_defaults', 'foreign_settings',
    'parse_args_explicit', 'add_data_options', 'fill_data_defaults', 'add_run_options',
    'IMAGE_DATASETS', 'TEXT_DATASETS',
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_SIGINT, EXIT_SIGTERM = 128 + signal.SIGINT, 128 + signal.SIGTERM


# --------------------------------------------------------------------------------------------
# errors and the argument parser
# --------------------------------------------------------------------------------------------

class CliError(Exception):
    """Bad input found by a script; the message is one line for the user (exit status 2)."""


def fail(message: str) -> NoReturn:
    """Stop with ``error: message`` (exit status 2)."""
    raise CliError(message)


def _print_error(message: str) -> None:
    # One line, whatever the message: the first line is what a user (and a log grep) sees.
    line = ' '.join(str(message).split())
    print(f'error: {line}', file=sys.stderr, flush=True)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line, ``error: <message> (see -h)``, exit 2.

    (The stock parser prints the whole usage block first.) Help shows each option's
    ``%(default)s`` only where the help text asks for it, so per-space defaults can be spelled out.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('formatter_class', argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        _print_error(f'{message} (see {self.prog} -h)')
        raise SystemExit(EXIT_USAGE)


class TerminateRequest(KeyboardInterrupt):
    """SIGTERM turned into an exception (see :func:`nni_enas.run.control.sigterm_as_interrupt`)."""


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None, *,
             user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Call ``main(argv)``; turn :class:`CliError` and ``user_errors`` into ``error:`` + status 2.

    Out of memory or a full disk (:func:`~nni_enas.run.failures.resource_failure`, anywhere along the
    exception's chain) is one ``error:`` line saying what to change, status 1. A failed CUDA graph
    capture is its one ``error:`` line (rerun with ``--cuda-graphs off``) and status 1, also when
    Lightning's teardown failed after it (on torch < 2.13 its ``empty_cache`` trips over the dead
    capture). A Ctrl-C or SIGTERM that reaches here (outside a Lightning fit, which handles its own)
    gives status 130 / 143. Returns the exit status, so ``sys.exit(run_main(...))`` in the script
    and a plain call in tests; called with ``argv`` (in-process), it puts back the signal handlers
    :func:`finished` changed.
    """
    handlers = _signal_handlers()
    try:
        return main(argv)
    except (CliError, *user_errors) as exc:
        _print_error(str(exc))
        return EXIT_USAGE
    except TerminateRequest:
        print('\nterminated', file=sys.stderr, flush=True)
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        print('\ninterrupted', file=sys.stderr, flush=True)
        return EXIT_SIGINT
    except SystemExit as exc:   # argparse and -h
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
    except Exception as exc:
        capture = _capture_error(exc)
        if capture is not None:
            _print_error(str(capture))
            return EXIT_FAILED
        failure = resource_failure(exc)
        if failure is None:
            raise
        _print_error(f'{failure.line()}; {failure.advice}' + (' and run again' if failure.kind == 'disk' else ''))
        return EXIT_FAILED
    finally:
        if argv is not None:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _signal_handlers() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}


def finished() -> None:
    """The work is done: ignore Ctrl-C and SIGTERM from now on (call it just before the ``done:`` line).

    What is left (closing logs, releasing the run folder's lock, the interpreter's exit) must not
    turn a finished run into a signal status with no message.
    """
    for signum in _signal_handlers():
        signal.signal(signum, signal.SIG_IGN)


def _capture_error(exc: BaseException | None) -> CudaGraphCaptureError | None:
    """The :class:`CudaGraphCaptureError` that ``exc`` is, or was raised while handling."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, CudaGraphCaptureError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def say(*parts: Any, file=None) -> None:
    """Print one line and flush it (so a log, a pipe or a test sees it as soon as it happens)."""
    print(*parts, file=file or sys.stdout, flush=True)


# --------------------------------------------------------------------------------------------
# value checkers for ``type=``
# --------------------------------------------------------------------------------------------

def _number(text: str, kind: type, what: str):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}') from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}')
    return value


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """``type=`` for an integer >= ``low`` (and <= ``high`` if given).

    For options outside the commands' table; a flag of search.py or retrain.py takes
    :func:`ranged` (``tests/test_limits.py`` checks that every one does).
    """
    if high is not None:
        what = f'an integer from {low} to {high}'
    else:
        what = 'a positive integer' if low == 1 else 'an integer >= 0' if low == 0 else f'an integer >= {low}'

    def check(text: str) -> int:
        value = _number(text, int, what)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}')
        return value
    check.__name__ = f'int>={low}'
    return check


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
seed_value = int_at_least(0, 2**32 - 1)      # what numpy (and pl.seed_everything) accept


def positive_float(text: str) -> float:
    """``type=`` for a finite float > 0."""
    value = _number(text, float, 'a positive number')
    if value <= 0:
        raise argparse.ArgumentTypeError(f'expected a positive number, got {text!r}')
    return value


def non_negative_float(text: str) -> float:
    """``type=`` for a finite float >= 0."""
    value = _number(text, float, 'a number >= 0')
    if value < 0:
        raise argparse.ArgumentTypeError(f'expected a number >= 0, got {text!r}')
    return value


def fraction(text: str) -> float:
    """``type=`` for a float in [0, 1)."""
    value = _number(text, float, 'a number in [0, 1)')
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f'expected a number in [0, 1), got {text!r}')
    return value


def ranged(dest: str) -> Callable[[str], int | float]:
    """``type=`` for the flag ``dest``: its range in the one table of limits (``limits.FLAG_RANGES``)."""
    allowed = FLAG_RANGES[dest]
    what = allowed.describe()

    def check(text: str):
        value = _number(text, allowed.kind, what)
        if not allowed.contains(value):
            raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}')
        return value
    check.__name__ = dest
    return check


def resolve_device(name: str) -> torch.device:
    """``'auto'`` (CUDA if available, else CPU), ``'cpu'``, ``'cuda'`` or ``'cuda:N'``; checked now."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        fail(f'unknown device {name!r} (expected auto, cpu or cuda)')
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            fail('--device cuda: CUDA is not available here (torch.cuda.is_available() is False); '
                 'use --device cpu or auto')
        if device.index is not None and device.index >= torch.cuda.device_count():
            fail(f'--device {name}: only {torch.cuda.device_count()} CUDA device(s)')
    elif device.type != 'cpu':
        fail(f'unsupported device {name!r} (expected auto, cpu or cuda)')
    return device


# --------------------------------------------------------------------------------------------
# the paper's settings as flags
# --------------------------------------------------------------------------------------------

def paper_default(table: dict[str, dict[str, Any]], key: str) -> str:
    """Help text ``default: macro 310 / micro 150`` for ``key`` of a per-space table (``paper.SEARCH``).

    Always per space, also where the spaces agree, so the help reads the same for every option;
    spaces without the key are left out.
    """
    values = {space: settings[key] for space, settings in table.items() if key in settings}
    return 'default: ' + ' / '.join(f'{space} {value}' for space, value in values.items())


def add_paper_flags(parser: argparse.ArgumentParser, table: dict[str, dict[str, Any]],
                    flags: dict[str, dict[str, tuple[str, str]]],
                    groups: dict[str, Any] | None = None) -> dict[str, Any]:
    """One option per setting of ``flags`` (``{group title: {key: (kind, help)}}``), default ``None``.

    The flag is the key with ``-`` for ``_``; its help ends with the paper's per-space default
    from ``table``; kind ``'switch'`` is a ``--x/--no-x`` pair, ``'number'`` a value checked
    against its range in ``limits.FLAG_RANGES`` (:func:`ranged`). ``groups`` are groups the script
    already made (to put its own options first); returns every group by title, to add
    script-specific options.
    """
    groups = dict(groups or {})
    for title, settings in flags.items():
        group = groups.setdefault(title, parser.add_argument_group(title))
        for key, (kind, text) in settings.items():
            flag = '--' + key.replace('_', '-')
            help_text = f'{text} ({paper_default(table, key)})'
            if kind == 'switch':
                group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            else:
                group.add_argument(flag, type=ranged(key), default=None, help=help_text)
    return groups


def paper_keys(flags: dict[str, dict[str, tuple[str, str]]]) -> list[str]:
    """The settings that ``flags`` makes flags of (the keys filled from the paper's table)."""
    return [key for settings in flags.values() for key in settings]


def fill_paper_defaults(args: argparse.Namespace, settings: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """Set every ``args.<key>`` that is ``None`` (not given) to ``settings[key]``; return those keys."""
    filled = []
    for key in keys:
        if key in settings and getattr(args, key, None) is None:
            setattr(args, key, settings[key])
            filled.append(key)
    return filled


def foreign_settings(table: dict[str, dict[str, Any]], space: str, keys: Sequence[str], given: set[str]) -> list[str]:
    """The settings among ``keys`` the user gave (``given``) that the ``space``'s column of ``table`` lacks."""
    return [key for key in keys if key in given and key not in table[space]]


class _NotGiven:
    def __repr__(self):
        return '<not given>'


def parse_args_explicit(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
                        ) -> tuple[argparse.Namespace, set[str]]:
    """``(parser.parse_args(argv), dests of the options the user typed)``.

    argparse only fills a default into a namespace attribute that does not exist yet, so parsing
    once more into a namespace pre-filled with a marker tells which options were given.
    """
    args = parser.parse_args(argv)
    marker = _NotGiven()
    probe = argparse.Namespace(**{dest: marker for dest in vars(args)})
    parser.parse_args(argv, namespace=probe)
    return args, {dest for dest, value in vars(probe).items() if value is not marker}


# --------------------------------------------------------------------------------------------
# option groups both commands have
# --------------------------------------------------------------------------------------------

IMAGE_DATASETS = ('cifar10', 'imagefolder', 'synthetic')
TEXT_DATASETS = ('ptb', 'wikitext2', 'textfolder', 'synthetic')
# --synthetic-size when not given: images (macro, micro), tokens of training text (rnn)
SYNTHETIC_DEFAULTS = {'images': 1024, 'text': 20_000}


def add_data_options(parser: argparse.ArgumentParser, *, cifar10_use: str, text_use: str):
    """The ``data`` option group: ``--dataset``, ``--data-dir``, ``--synthetic-size`` (returned,
    to add script-specific data options). ``cifar10_use`` says how the script splits CIFAR-10,
    ``text_use`` how it uses a text's three files. The image spaces take images, the rnn space
    text; :func:`fill_data_defaults` picks the default of each and refuses the other kind."""
    g = parser.add_argument_group('data')
    g.add_argument('--dataset', choices=[*IMAGE_DATASETS[:2], *TEXT_DATASETS[:3], 'synthetic'], default=None,
                   help=f'macro, micro: cifar10 ({cifar10_use}), imagefolder (one sub-folder per class, or train/ '
                        f'and val/ or test/ sub-folders of them; every image is resized to 32x32) or synthetic '
                        f'(random images, to try things); rnn: ptb (ptb.train.txt, ptb.valid.txt, ptb.test.txt '
                        f'in --data-dir, downloaded there when missing), wikitext2 (wiki.*.tokens), textfolder '
                        f'(your own train.txt, valid.txt and test.txt: one sentence per line, words separated '
                        f'by spaces, rare words written <unk>) or synthetic (generated text); {text_use} '
                        f'(default: cifar10; rnn: ptb)')
    g.add_argument('--data-dir', default='./data', metavar='DIR',
                   help='where the data is: the folder holding cifar-10-batches-py, the image folder, or the '
                        'folder of the text files (default: %(default)s)')
    g.add_argument('--synthetic-size', type=ranged('synthetic_size'), default=None, metavar='N',
                   help=f'--dataset synthetic: images (default: {SYNTHETIC_DEFAULTS["images"]}); rnn: tokens of '
                        f'training text (default: {SYNTHETIC_DEFAULTS["text"]})')
    return g


def fill_data_defaults(args: argparse.Namespace, *, text: bool) -> None:
    """``--dataset`` and ``--synthetic-size`` for images or ``text``, if not given; another kind's dataset fails."""
    kind = 'text' if text else 'images'
    datasets = TEXT_DATASETS if text else IMAGE_DATASETS
    if args.dataset is None:
        args.dataset = datasets[0]
    elif args.dataset not in datasets:
        choices = ', '.join(datasets[:-1]) + ' or ' + datasets[-1]
        if text:
            fail(f'--dataset {args.dataset} holds images (for macro and micro); the rnn space needs text: {choices}')
        fail(f'--dataset {args.dataset} is text (for rnn); macro and micro need images: {choices}')
    if args.synthetic_size is None:
        args.synthetic_size = SYNTHETIC_DEFAULTS[kind]


def add_run_options(parser: argparse.ArgumentParser, *, device_note: str, output_holds: str, run_name: str,
                    resume_note: str):
    """The ``run`` option group both commands share: ``--device``, ``--cuda-graphs``, ``--seed``, ``--progress-bar``,
    ``--output``, ``--resume`` (returned, to add script-specific run options)."""
    g = parser.add_argument_group('run')
    g.add_argument('--device', default='auto', help=f'auto (CUDA if available), cpu or cuda{device_note} '
                                                    '(default: %(default)s)')
    g.add_argument('--cuda-graphs', choices=CUDA_GRAPH_MODES, default='auto',
                   help='on a GPU, run the networks as CUDA graphs (one launch replays a module\'s kernels): '
                        'auto (on for CUDA) or off (plain eager PyTorch, for debugging) (default: %(default)s)')
    g.add_argument('--seed', type=ranged('seed'), default=0, help='random seed (default: %(default)s)')
    g.add_argument('--progress-bar', action=argparse.BooleanOptionalAction, default=None,
                   help='show a progress bar during each epoch (default: only when the output is a terminal; '
                        'the one-line epoch summaries are always printed)')
    g.add_argument('--output', metavar='DIR', default=None,
                   help=f'run folder for settings, checkpoints, TensorBoard logs and {output_holds} (default: a '
                        f'new runs/{run_name}-<time>; in an NNI trial, inside the trial\'s folder)')
    g.add_argument('--resume', metavar='RUN_DIR', default=None,
                   help=f'continue the run in RUN_DIR from its last checkpoint with its saved settings{resume_note}')
    return g
