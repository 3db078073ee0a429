"""Command-line plumbing shared by the scripts (``search.py``, ``retrain.py``).

Everything here is about being a well-behaved research tool, not about ENAS:

* bad input gives ONE line ``error: <message>`` on stderr and exit status 2, before any work
  (:class:`ArgumentParser`, :class:`CliError`, :func:`run_main`, the ``type=`` checkers);
* defaults taken from the paper's per-space tables (:func:`paper_default`,
  :func:`fill_paper_defaults`), and which options the user really typed
  (:func:`parse_args_explicit`), e.g. to let ``--resume`` change only some of them;
* a run folder with the settings it was started with (:func:`new_run_dir`,
  :func:`save_settings`, :func:`load_settings`), checkpoints written atomically
  (:class:`AtomicCheckpointIO`, :func:`checkpoint_callback`, :func:`last_checkpoint`) that also
  hold the random-number generators (:class:`RngStateCallback`), so that an interrupted run
  resumed from an epoch boundary continues exactly as if it had not stopped;
* the Lightning pieces every script wants (:class:`EpochProgressBar`, :class:`StopWatcher`,
  :func:`lightning_trainer_kwargs`) and quiet logs (:func:`quiet_library_noise`).

Typical use (see ``search.py``)::

    parser = cli.ArgumentParser(description=...)
    ...                                       # add options, type=cli.positive_int etc.
    def main(argv=None):
        return cli.run_main(_main, argv, user_errors=(DataError,))

Exit statuses: 0 done, 1 the run failed (e.g. NaN loss), 2 bad input, 130 / 143 stopped by
SIGINT (Ctrl-C) / SIGTERM after saving what was consistent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, NoReturn, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar

from .architecture import write_json_atomic

__all__ = [
    'EXIT_OK', 'EXIT_FAILED', 'EXIT_USAGE', 'EXIT_SIGINT', 'EXIT_SIGTERM',
    'CliError', 'ArgumentParser', 'run_main', 'fail',
    'positive_int', 'non_negative_int', 'int_at_least', 'positive_float', 'non_negative_float',
    'fraction', 'paper_default', 'fill_paper_defaults', 'parse_args_explicit',
    'resolve_device', 'seed_everything', 'quiet_library_noise',
    'new_run_dir', 'save_settings', 'load_settings', 'SETTINGS_FILE',
    'AtomicCheckpointIO', 'RngStateCallback', 'checkpoint_callback', 'last_checkpoint',
    'checkpoint_epoch', 'EpochProgressBar', 'TerminateRequest', 'sigterm_as_interrupt', 'StopWatcher', 'want_progress_bar', 'lightning_trainer_kwargs', 'say',
    'add_data_options', 'resume_settings', 'print_line', 'fit_watched',
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143
SETTINGS_FILE = 'args.json'
CHECKPOINT_DIR = 'checkpoints'
LAST_CHECKPOINT = 'last.ckpt'


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


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None, *,
             user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Call ``main(argv)``; turn :class:`CliError` and ``user_errors`` into ``error:`` + status 2.

    A Ctrl-C that reaches here (outside a Lightning fit, which handles its own) gives status 130.
    Returns the exit status, so ``sys.exit(run_main(...))`` in the script and a plain call in tests.
    """
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
    if isinstance(value, float) and not np.isfinite(value):
        raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}')
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    """``type=`` for an integer >= ``low``."""
    what = 'a positive integer' if low == 1 else 'an integer >= 0' if low == 0 else f'an integer >= {low}'

    def check(text: str) -> int:
        value = _number(text, int, what)
        if value < low:
            raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}')
        return value
    check.__name__ = f'int>={low}'
    return check


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


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


# --------------------------------------------------------------------------------------------
# per-space paper defaults and explicit options
# --------------------------------------------------------------------------------------------

def paper_default(table: dict[str, dict[str, Any]], key: str) -> str:
    """Help text ``default: macro 310 / micro 150`` for ``key`` of a per-space table (``paper.SEARCH``).

    Always per space, also where the spaces agree, so the help reads the same for every option;
    spaces without the key are left out.
    """
    values = {space: settings[key] for space, settings in table.items() if key in settings}
    return 'default: ' + ' / '.join(f'{space} {value}' for space, value in values.items())


def fill_paper_defaults(args: argparse.Namespace, settings: dict[str, Any],
                        keys: Iterable[str] | None = None) -> list[str]:
    """Set every ``args.<key>`` that is ``None`` (not given) to ``settings[key]``; return those keys."""
    filled = []
    for key in (keys if keys is not None else settings):
        if key in settings and getattr(args, key, None) is None:
            setattr(args, key, settings[key])
            filled.append(key)
    return filled


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
    probe = argparse.Namespace(**{a.dest: marker for a in parser._actions  # noqa: SLF001
                                  if a.dest != argparse.SUPPRESS})
    parser.parse_args(argv, namespace=probe)
    return args, {dest for dest, value in vars(probe).items() if value is not marker}


# --------------------------------------------------------------------------------------------
# device, seeds, noise
# --------------------------------------------------------------------------------------------

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


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# Message patterns of Lightning's start-up chatter and tips that tell users nothing.
_NOISY_LOGS = [
    r'GPU available:', r'TPU available:', r'HPU available:', r'IPU available:',
    r'💡 Tip', r'litlogger', r'litmodels', r'LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES',
    r'`Trainer.fit` stopped: `max_epochs=', r'Restoring states from the checkpoint path',
    r'Restored all states from the checkpoint', r'Seed set to',
    r'You are using a CUDA device .* that has Tensor Cores',
    r'Received SIGTERM: ', r'Detected KeyboardInterrupt, attempting graceful shutdown',  # we say it ourselves
]
# (message regex, category) of warnings that are harmless here.
_NOISY_WARNINGS = [
    (r'.*is found to be not a nn\.Module.*', RuntimeWarning),            # NNI 3.0 on torch 2.x
    (r'.*isinstance\(treespec, LeafSpec\)`? is deprecated.*', FutureWarning),  # Lightning on torch's _pytree
    (r'.*torch\.utils\._pytree\._register_pytree_node.*deprecated.*', None),
    (r".*does not have many workers.*", None),                            # in-memory batches
    (r'.*Checkpoint directory .* exists and is not empty.*', None),      # resuming into it
    (r'.*The number of training batches \(\d+\) is smaller than the logging interval.*', None),
    (r'.*Trying to infer the `batch_size`.*', None),
    (r'.*You defined a `validation_step` but have no `val_dataloader`.*', None),
]


class _DropNoise(logging.Filter):
    def __init__(self, patterns: Sequence[str]):
        super().__init__()
        self.pattern = re.compile('|'.join(f'(?:{p})' for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not self.pattern.search(record.getMessage())


_noise_filter = _DropNoise(_NOISY_LOGS)


def quiet_library_noise() -> None:
    """Hide NNI's and Lightning's harmless warnings and start-up tips; errors are never hidden.

    Only messages that match a known harmless pattern are dropped (see ``_NOISY_LOGS`` and
    ``_NOISY_WARNINGS``); every other warning and log line still shows.
    """
    for pattern, category in _NOISY_WARNINGS:
        warnings.filterwarnings('ignore', message=pattern, category=category or Warning)
    for name in ('pytorch_lightning', 'lightning', 'lightning.pytorch', 'lightning_fabric',
                 'lightning.fabric', 'pytorch_lightning.utilities.rank_zero',
                 'lightning_fabric.utilities.rank_zero', 'pytorch_lightning.accelerators.cuda'):
        logger = logging.getLogger(name)
        if _noise_filter not in logger.filters:
            logger.addFilter(_noise_filter)
        for handler in logger.handlers:
            if _noise_filter not in handler.filters:
                handler.addFilter(_noise_filter)


# --------------------------------------------------------------------------------------------
# run folders and settings
# --------------------------------------------------------------------------------------------

def new_run_dir(prefix: str, root: str | os.PathLike = 'runs') -> Path:
    """Create and return ``root/<prefix>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... if taken)."""
    root = Path(root)
    stamp = time.strftime('%Y%m%d-%H%M%S')
    for n in range(1, 1000):
        path = root / (f'{prefix}-{stamp}' if n == 1 else f'{prefix}-{stamp}-{n}')
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    fail(f'cannot create a new run folder under {root}')


def save_settings(run_dir: str | os.PathLike, args: argparse.Namespace | dict,
                  argv: Sequence[str] | None = None, *, resumed_after: int | None = None) -> Path:
    """Write ``run_dir/args.json`` (atomically): ``{"settings": vars(args), "argv": [...]}``.

    ``argv`` is the command line (default ``sys.argv[1:]``). With ``resumed_after`` (epochs done
    when resuming) the file is updated instead: new settings, the original ``argv`` kept, and
    ``{"argv": ..., "after_epoch": n}`` appended to its ``"resumed"`` list.
    """
    settings = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    argv = list(sys.argv[1:] if argv is None else argv)
    path = Path(run_dir) / SETTINGS_FILE
    content: dict[str, Any] = {'settings': settings, 'argv': argv}
    if resumed_after is not None:
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        content['argv'] = old.get('argv', argv)
        content['resumed'] = [*old.get('resumed', []), {'argv': argv, 'after_epoch': resumed_after}]
    write_json_atomic(path, content)
    return path


def load_settings(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``settings`` saved by :func:`save_settings` (:class:`CliError` if missing or unreadable)."""
    path = Path(run_dir) / SETTINGS_FILE
    if not Path(run_dir).is_dir():
        fail(f'{run_dir}: no such run folder')
    try:
        with open(path) as f:
            settings = json.load(f)['settings']
    except FileNotFoundError:
        fail(f'{run_dir} is not a run folder (no {SETTINGS_FILE})')
    except (OSError, ValueError, KeyError, TypeError) as exc:
        fail(f'{path}: cannot read the run settings ({exc})')
    if not isinstance(settings, dict):
        fail(f'{path}: "settings" is not an object')
    return settings


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------

class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint writer that never leaves half a file.

    Writes to a temporary file in the same folder, syncs it, then renames it over the target:
    a run killed (even with SIGKILL) while saving keeps its previous checkpoint intact.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
        try:
            with os.fdopen(fd, 'wb') as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


class RngStateCallback(pl.Callback):
    """Keep the random-number generators in Lightning checkpoints.

    Lightning's checkpoint holds the weights, optimizers, LR schedules, buffers and loop
    counters, but not the RNGs that draw the next epoch's shuffles, augmentations, dropout masks
    and (for ENAS) sampled architectures. With them restored, a run stopped at an epoch boundary
    and resumed on the same device with the same seed continues exactly as the run that did not
    stop. Saved: python ``random``, numpy, torch CPU and every CUDA device.
    """

    KEY = 'rng_states'

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        # Plain types and tensors only, so the checkpoint still loads with torch.load(weights_only=True).
        name, keys, pos, has_gauss, cached = np.random.get_state()
        states = {'python': random.getstate(), 'torch': torch.get_rng_state(),
                  'numpy': {'name': name, 'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': int(pos),
                            'has_gauss': int(has_gauss), 'cached_gaussian': float(cached)}}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            states['cuda'] = torch.cuda.get_rng_state_all()
        checkpoint[self.KEY] = states

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get(self.KEY)
        if not states:
            return
        random.setstate(states['python'])
        n = states['numpy']
        np.random.set_state((n['name'], n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'],
                             n['cached_gaussian']))
        torch.set_rng_state(states['torch'].cpu())
        if 'cuda' in states and torch.cuda.is_available():
            saved = states['cuda']
            if len(saved) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all([s.cpu() for s in saved])


def checkpoint_callback(run_dir: str | os.PathLike) -> ModelCheckpoint:
    """Lightning's ``ModelCheckpoint`` writing ``run_dir/checkpoints/last.ckpt`` after every epoch.

    One file, overwritten (atomically, with :class:`AtomicCheckpointIO`) at each epoch end: the
    latest checkpoint under a fixed name (Lightning's ``save_last`` would write a second copy).
    """
    return ModelCheckpoint(dirpath=Path(run_dir) / CHECKPOINT_DIR, filename=Path(LAST_CHECKPOINT).stem,
                           save_top_k=1, enable_version_counter=False, every_n_epochs=1,
                           save_on_train_epoch_end=True)


def last_checkpoint(run_dir: str | os.PathLike) -> Path:
    """``run_dir/checkpoints/last.ckpt`` (:class:`CliError` if the run has none yet)."""
    path = Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT
    if not path.is_file():
        fail(f'{run_dir} has no checkpoint ({CHECKPOINT_DIR}/{LAST_CHECKPOINT}): it stopped before '
             f'finishing its first epoch, or is not a run folder; start a new run instead')
    return path


def checkpoint_epoch(path: str | os.PathLike) -> int:
    """Number of epochs completed in a Lightning checkpoint (:class:`CliError` if unreadable)."""
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=False, mmap=True)
        return int(checkpoint['epoch']) + 1
    except Exception as exc:  # noqa: BLE001 - any failure means the file cannot be used
        fail(f'{path}: cannot read the checkpoint ({type(exc).__name__}: {exc})')


# --------------------------------------------------------------------------------------------
# Lightning pieces
# --------------------------------------------------------------------------------------------

class EpochProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, labelled ``epoch 3/150`` (counted from 1, like our summaries).

    While the epoch's last step runs it says what else happens in that step
    (``after_last_step``, e.g. ``'+ controller'``) so a long pause is not mistaken for a hang.
    """

    def __init__(self, after_last_step: str = '', **kwargs):
        super().__init__(**kwargs)
        self.after_last_step = after_last_step

    def _label(self, trainer) -> str:
        return f'epoch {trainer.current_epoch + 1}/{trainer.max_epochs}'

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(self._label(trainer))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.after_last_step and batch_idx + 1 == trainer.num_training_batches:
            self.train_progress_bar.set_description(f'{self._label(trainer)} {self.after_last_step}')

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop('v_num', None)
        return items


class TerminateRequest(KeyboardInterrupt):
    """SIGTERM turned into an exception (see :func:`sigterm_as_interrupt`)."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM stops the program at once, like Ctrl-C.

    Lightning on its own only notes a SIGTERM and stops at the next batch, which can be a whole
    controller phase later; ``kill`` (or NNI stopping a trial) should not wait that long. The
    exception is a ``KeyboardInterrupt`` so Lightning shuts down gracefully as for Ctrl-C.
    Only in the main thread (elsewhere the block runs unchanged); the old handler comes back after.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise TerminateRequest(f'signal {signum}')
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopWatcher(pl.Callback):
    """Remembers why a fit stopped early: ``.stopped_by`` is ``'SIGINT'``, ``'SIGTERM'`` or ``None``.

    Lightning turns Ctrl-C (and SIGTERM inside :func:`sigterm_as_interrupt`) into a graceful
    shutdown: callbacks' ``on_exception``, teardown, then ``SystemExit(1)``. Without our handler
    a SIGTERM is an exception at the next batch. This callback records which signal stopped the
    fit so the script can report what is on disk and exit with 130 / 143.
    """

    def __init__(self):
        self.stopped_by: str | None = None
        self.epoch: int | None = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        from pytorch_lightning.utilities.exceptions import SIGTERMException
        # A signal's exception raised inside a ``with lock:`` (e.g. TensorBoard's flush) can come out
        # as the lock's "release unlocked lock" RuntimeError: look for it along the context chain.
        seen = set()
        while exception is not None and id(exception) not in seen:
            if isinstance(exception, (TerminateRequest, SIGTERMException)):
                self.stopped_by = 'SIGTERM'
                break
            if isinstance(exception, KeyboardInterrupt):
                self.stopped_by = 'SIGINT'
                break
            seen.add(id(exception))
            exception = exception.__context__
        self.epoch = trainer.current_epoch + 1

    @property
    def exit_status(self) -> int:
        return EXIT_SIGTERM if self.stopped_by == 'SIGTERM' else EXIT_SIGINT


def want_progress_bar(choice: bool | None = None) -> bool:
    """``choice`` if given (``--progress-bar`` / ``--no-progress-bar``), else whether stdout is a terminal.

    In a log file or an NNI trial's stdout a redrawn bar is only noise; the scripts' one-line
    epoch summaries are the progress there.
    """
    if choice is not None:
        return choice
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def lightning_trainer_kwargs(run_dir: str | os.PathLike, *, tensorboard: bool = True,
                             progress_bar: bool = True) -> dict[str, Any]:
    """``pl.Trainer`` arguments for a run folder: TensorBoard logs in ``run_dir/tensorboard``,
    atomic checkpoints, Lightning's own files under ``run_dir``, its progress bar on or off
    (pass an :class:`EpochProgressBar` in the callbacks to get ours)."""
    from pytorch_lightning.loggers import TensorBoardLogger
    kwargs: dict[str, Any] = dict(default_root_dir=str(run_dir), enable_checkpointing=True,
                                  plugins=[AtomicCheckpointIO()], enable_model_summary=False,
                                  enable_progress_bar=progress_bar)
    if tensorboard:
        kwargs['logger'] = TensorBoardLogger(str(run_dir), name='tensorboard', version='',
                                             default_hp_metric=False)
    return kwargs


# --------------------------------------------------------------------------------------------
# steps every script's main shares (added with retrain.py)
# --------------------------------------------------------------------------------------------

def add_data_options(parser: argparse.ArgumentParser, *, cifar10_use: str):
    """The ``data`` option group: ``--dataset``, ``--data-dir``, ``--synthetic-size`` (returned,
    to add script-specific data options). ``cifar10_use`` says how the script splits CIFAR-10."""
    g = parser.add_argument_group('data')
    g.add_argument('--dataset', choices=['cifar10', 'imagefolder', 'synthetic'], default='cifar10',
                   help=f'cifar10 ({cifar10_use}), imagefolder (one sub-folder per class) or synthetic '
                        f'(random images, to try things) (default: %(default)s)')
    g.add_argument('--data-dir', default='./data', metavar='DIR',
                   help='where the data is: the folder holding cifar-10-batches-py, or the image folder '
                        '(default: %(default)s)')
    g.add_argument('--synthetic-size', type=int_at_least(2), default=1024, metavar='N',
                   help='images of --dataset synthetic (default: %(default)s)')
    return g


def add_sgd_options(parser: argparse.ArgumentParser, paper: Callable[[str, str], str], *, title: str,
                    epochs_help: str, batch_help: str, weight_decay_help: str = 'SGD weight decay'):
    """The child-training recipe flags both commands share (``--epochs``, ``--batch-size``, the
    cosine-restart SGD's ``--lr-max``/``--lr-min``/``--weight-decay``, ``--grad-clip``); ``paper``
    formats a help text with the paper's default. Returns the group for script-specific flags."""
    g = parser.add_argument_group(title)
    g.add_argument('--epochs', type=positive_int, help=paper('epochs', epochs_help))
    g.add_argument('--batch-size', type=positive_int, help=paper('batch_size', batch_help))
    g.add_argument('--lr-max', type=positive_float, help=paper(
        'lr_max', 'SGD learning rate at each (warm) restart of the cosine schedule'))
    g.add_argument('--lr-min', type=non_negative_float, help=paper('lr_min', 'cosine schedule minimum'))
    g.add_argument('--weight-decay', type=non_negative_float, help=paper('weight_decay', weight_decay_help))
    g.add_argument('--grad-clip', type=non_negative_float, help=paper('grad_clip', 'global gradient-norm clip, 0 = off'))
    return g


def check_run_dir(args: argparse.Namespace, verb: str) -> tuple[Path | None, Path | None, int]:
    """``(run folder, checkpoint to resume from, epochs it completed)`` from ``--resume``/``--output``.

    Fails (exit 2) on a finished run without more ``--epochs`` or an ``--output`` that already
    holds a run. The folder is ``None`` when a new one is to be created; nothing is created here.
    """
    if args.resume:
        run_dir = Path(args.resume)
        checkpoint = last_checkpoint(run_dir)
        done = checkpoint_epoch(checkpoint)
        if done >= args.epochs:
            fail(f'{run_dir} already completed {done} of {args.epochs} epochs; pass --epochs N '
                 f'(N > {done}) to {verb} longer')
        return run_dir, checkpoint, done
    if args.output:
        run_dir = Path(args.output)
        if (run_dir / SETTINGS_FILE).exists():
            fail(f'{run_dir} already holds a run; continue it with --resume {run_dir} or pick another --output')
        return run_dir, None, 0
    return None, None, 0


def add_run_options(parser: argparse.ArgumentParser, *, device_note: str, output_holds: str, run_name: str,
                    resume_note: str):
    """The ``run`` option group both commands share: ``--device``, ``--seed``, ``--progress-bar``,
    ``--output``, ``--resume`` (returned, to add script-specific run options)."""
    g = parser.add_argument_group('run')
    g.add_argument('--device', default='auto', help=f'auto (CUDA if available), cpu or cuda{device_note} '
                                                    '(default: %(default)s)')
    g.add_argument('--seed', type=non_negative_int, default=0, help='random seed (default: %(default)s)')
    g.add_argument('--progress-bar', action=argparse.BooleanOptionalAction, default=None,
                   help='show a progress bar during each epoch (default: only when the output is a terminal; '
                        'the one-line epoch summaries are always printed)')
    g.add_argument('--output', metavar='DIR', default=None,
                   help=f'run folder for settings, checkpoints, TensorBoard logs and {output_holds} (default: a '
                        f'new runs/{run_name}-<time>; in an NNI trial, inside the trial\'s folder)')
    g.add_argument('--resume', metavar='RUN_DIR', default=None,
                   help=f'continue the run in RUN_DIR from its last checkpoint with its saved settings{resume_note}')
    return g


def resume_settings(args: argparse.Namespace, explicit: set[str], may_change: set[str]) -> argparse.Namespace:
    """The settings of the run in ``args.resume`` (it must have a checkpoint), with the options in
    ``may_change`` that the user typed (``explicit``) taken from ``args``; any other typed option
    that differs from the run's fails (:class:`CliError`)."""
    run_dir = Path(args.resume)
    saved = load_settings(run_dir)
    last_checkpoint(run_dir)     # fail now if there is none
    changeable = ', '.join('--' + d.replace('_', '-') for d in sorted(may_change - {'resume'}))
    for dest in sorted(explicit - may_change):
        if dest in saved and getattr(args, dest) != saved[dest]:
            flag = '--' + dest.replace('_', '-')
            fail(f'--resume keeps the run\'s settings: {flag} {getattr(args, dest)} differs from the '
                 f'run\'s {saved[dest]} (only {changeable} may change)')
    merged = argparse.Namespace(**{**vars(args), **saved})
    for dest in explicit & may_change:
        setattr(merged, dest, getattr(args, dest))
    merged.resume = str(run_dir)
    merged.output = str(run_dir)
    return merged


def print_line(trainer: pl.Trainer, line: str) -> None:
    """Print one line (an epoch summary) above Lightning's progress bar if one is drawn."""
    bar = trainer.progress_bar_callback
    if bar is not None and getattr(bar, '_train_progress_bar', None) is not None:
        bar.print(line)
        sys.stdout.flush()
    else:
        say(line)


def fit_watched(fit: Callable[[], Any], stop: StopWatcher) -> str | None:
    """Call ``fit()`` (a Lightning fit with ``stop`` among its callbacks); say how it ended.

    Returns ``None`` when it completed, ``'nonfinite'`` when the training loss became NaN/inf
    (:class:`~nni_enas.recipe.NonFiniteLossError`), ``'SIGINT'`` / ``'SIGTERM'`` when stopped
    by a signal (SIGTERM stops at once, see :func:`sigterm_as_interrupt`); any other exception
    propagates.
    """
    from .recipe import NonFiniteLossError
    try:
        with sigterm_as_interrupt():
            fit()
    except NonFiniteLossError:
        return 'nonfinite'
    except SystemExit:
        if stop.stopped_by is None:
            raise
    except Exception:
        if stop.stopped_by is None:   # SIGTERM arrives as Lightning's SIGTERMException
            raise
    return stop.stopped_by
