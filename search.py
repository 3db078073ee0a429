#!/usr/bin/env python3
"""ENAS architecture search (Pham et al., 2018) on NNI 3.0, with the paper's settings.

    python3 search.py --search-for macro                  # the paper's macro search on CIFAR-10
    python3 search.py --search-for micro --epochs 10      # fewer epochs, everything else as the paper
    python3 search.py --search-for rnn --data-dir data/ptb   # the recurrent cell on Penn Treebank
    python3 search.py --search-for micro --dataset synthetic --epochs 2   # try it without data
    python3 search.py --resume runs/search-micro-20250101-120000          # continue a stopped run

Every epoch (spec D.2): one pass over the training split trains the shared weights, a new child
model sampled by the controller for every minibatch (rnn: every BPTT window, the hidden state
carried from window to window); then the controller phase trains the controller with REINFORCE
on validation minibatches (rnn: reward 80 / perplexity of one validation window from a zero
state); then the best of --num-candidates architectures sampled from the controller, scored on
the same validation batches, is written to exported.json (the paper's way of deriving the
architecture to retrain; rnn: with the vocabulary, also saved as vocabulary.json).

The run folder (--output, default runs/search-<space>-<time>) holds args.json (the settings),
checkpoints/last.ckpt (after every epoch), tensorboard/ (scalars, the controller's choice
probabilities, the exported architecture drawn), exported.json, drawings/ (that drawing per
epoch), and at the end architecture.gif and choice_probabilities.png (nni_enas/drawings.py). Ctrl-C (or SIGTERM) stops at once, keeping the last complete
epoch's checkpoint and export; --resume continues from there.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import torch.nn as nn

from nni_enas.run import cli, nni_report, sizes
from nni_enas.run import control as runcontrol
from nni_enas.run import folder as runfolder
from nni_enas.architecture import MAX_PARAMETERS, SPACES
from nni_enas.run.checkpoints import RunIdentity, check_checkpoint_identity
from nni_enas.data.images import BatchLoader, DataError, load_data
from nni_enas.draw.search import SearchDrawings
from nni_enas.files import write_bytes_atomic
from nni_enas.search.export import ArchitectureExport
from nni_enas.paper import SEARCH, SEARCH_FLAGS, controller_kwargs
from nni_enas.training.classification import accuracy, enas_sgd
from nni_enas.training.language_data import (RandomOrder, TextData, fit_epoch, load_text_data, read_vocabulary,
                                             supernet_parameters)
from nni_enas.training.language_model import LanguageModelTraining, PerplexityReward
from nni_enas.search.trainer import EnasTrainer

COMMAND = 'search.py'
EXPORT_NAME = 'exported.json'
# Settings taken from paper.SEARCH[space] when not given: one flag each (paper.SEARCH_FLAGS).
PAPER_KEYS = cli.paper_keys(SEARCH_FLAGS)
# What --resume lets the command line change; everything else must stay as the run started.
RESUME_MAY_CHANGE = {'resume', 'epochs', 'device', 'cuda_graphs', 'export', 'workers', 'progress_bar'}
# The summary values TensorBoard gets from search.py (search/<name>); the module logs the others.
SEARCH_ONLY_SCALARS = ('lr', 'seconds', 'export_seconds')


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The options: the space, the paper's settings (paper.SEARCH_FLAGS), export, data, run."""
    p = cli.ArgumentParser(
        prog=COMMAND,
        description=__doc__.split('\n\n')[0] + '\n\n' + __doc__.split('\n\n')[1],
        epilog='Defaults marked "macro X / micro Y" are the paper\'s (nni_enas/paper.py, SEARCH); '
               'every one can be overridden.\nExit status: 0 done, 1 failed (NaN loss, out of memory, a full disk), '
               '2 bad input, 130 / 143 stopped by Ctrl-C / SIGTERM.')
    g = p.add_argument_group('what to search')
    g.add_argument('--search-for', choices=sorted(SPACES), default=None,
                   help='the search space: macro (a whole network, layer by layer), micro (a normal '
                        'and a reduction cell) or rnn (the recurrent cell of a word-level language model); '
                        'required unless --resume')
    cli.add_paper_flags(p, SEARCH, SEARCH_FLAGS, groups={'what to search': g})
    _add_export_options(p)
    g = cli.add_data_options(p, cifar10_use='45k/5k split, as the paper',
                             text_use='train.txt trains the shared weights, valid.txt gives the rewards')
    g.add_argument('--valid-size', type=cli.ranged('valid_size'), default=5000, metavar='N',
                   help='macro, micro: images split off the end of the training set for the controller\'s '
                        'rewards (10%% if the set is not larger) (default: %(default)s)')
    g = cli.add_run_options(
        p, device_note='', output_holds='the export', run_name='search-<space>',
        resume_note=f'; only {runfolder.resume_note(RESUME_MAY_CHANGE)} may be changed (--epochs to extend)')
    g.add_argument('--workers', type=cli.ranged('workers'), default=0,
                   help='accepted for NNI 2.x command lines and ignored: batches are built in memory on the '
                        'device, no worker processes are needed (default: %(default)s)')
    return p


def _add_export_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('export')
    g.add_argument('--num-candidates', type=cli.ranged('num_candidates'), default=100,
                   help='architectures sampled from the controller after each epoch; the best one on the '
                        'same validation batches is exported (default: %(default)s)')
    g.add_argument('--candidate-batches', type=cli.ranged('candidate_batches'), default=1,
                   help='validation minibatches that score each candidate (default: %(default)s)')
    g.add_argument('--export', metavar='PATH', default=None,
                   help=f'where to write the exported architecture after every epoch (default: '
                        f'{EXPORT_NAME} in the working folder; in an NNI trial, in the trial\'s folder); '
                        f'always also written to the run folder. Left alone if another run wrote it after this '
                        f'one started (two searches in one folder): the run folder\'s copy is then the result')


def _settings_for(args: argparse.Namespace) -> dict[str, Any]:
    """paper.SEARCH[space] overridden by the options (what the controller and trainer get)."""
    return {**SEARCH[args.search_for], **{k: getattr(args, k) for k in PAPER_KEYS if getattr(args, k) is not None}}


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    """Parse, apply NNI tuner parameters, fill the paper's defaults, check; or fail with exit 2."""
    parser = build_parser()
    args, explicit = cli.parse_args_explicit(parser, argv)
    explicit |= set(nni_report.apply_tuner_parameters(args, parser))
    if args.resume:
        args = runfolder.resume_settings(args, explicit, RESUME_MAY_CHANGE, COMMAND)
    elif args.search_for is None:
        cli.fail(f'--search-for {"|".join(sorted(SPACES))} is required (or --resume RUN_DIR)')
    else:
        for key in cli.foreign_settings(SEARCH, args.search_for, PAPER_KEYS, explicit):
            owners = ' or '.join(space for space, table in SEARCH.items() if key in table)
            cli.fail(f'--{key.replace("_", "-")} is only for --search-for {owners}')
        if args.search_for == 'rnn' and 'valid_size' in explicit:
            cli.fail('--valid-size is only for --search-for macro or micro (rnn rewards come from the '
                     'validation text)')
        cli.fill_data_defaults(args, text=args.search_for == 'rnn')
    cli.fill_paper_defaults(args, SEARCH[args.search_for], PAPER_KEYS)
    if args.lr_max is not None and args.lr_min > args.lr_max:
        cli.fail(f'--lr-min {args.lr_min} is larger than --lr-max {args.lr_max}')
    return args, parser


# --------------------------------------------------------------------------------------------
# per-epoch report: summary line, TensorBoard, NNI (the export is the library's)
# --------------------------------------------------------------------------------------------

class SearchMonitor(pl.Callback):
    """After every epoch: log and print one summary line of the epoch and its export.

    The export itself is the library's :class:`~nni_enas.search.export.ArchitectureExport`, listed
    before this callback: it finishes the epoch (the controller phase), picks the best of
    --num-candidates and writes exported.json, all before the checkpoint is written. With
    ``tokens_per_epoch`` (the rnn search) the line gives perplexities and tokens/s instead of
    accuracy and images/s: the child's training perplexity, and the validation perplexity of the
    export (``c / its reward``, on its scoring window(s), from a zero state without dropout).
    """

    def __init__(self, export: ArchitectureExport, tokens_per_epoch: int | None = None, reward_constant: float = 80.0):
        self.export = export
        self.tokens_per_epoch = tokens_per_epoch
        self.reward_constant = reward_constant
        self.last: dict[str, Any] | None = None
        self._epoch_start = 0.0
        self._lr = float('nan')

    def on_train_epoch_start(self, trainer, module) -> None:
        self._epoch_start = time.perf_counter()
        self._lr = trainer.optimizers[0].param_groups[0]['lr'] if trainer.optimizers else float('nan')
        if self.tokens_per_epoch is not None:      # the nominal rate (each window scales it by its length)
            self._lr = getattr(module.training_module, 'lr', self._lr)

    def on_train_epoch_end(self, trainer, module) -> None:
        epoch = trainer.current_epoch + 1
        stats = module.finish_epoch()          # already finished by ArchitectureExport: its statistics
        summary = self._summary(trainer, stats, time.perf_counter() - self._epoch_start)
        self.last = {'epoch': epoch, **summary}
        self._log_tensorboard(trainer, module, epoch, summary)
        nni_report.report_epoch(summary, 'mean_reward')
        runcontrol.print_line(trainer, f'epoch {epoch}/{trainer.max_epochs}  ' + self._line(summary))

    def _summary(self, trainer, stats: dict[str, float], seconds: float) -> dict[str, Any]:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if k in ('child_loss', 'child_acc', 'child_ppl')}
        nan = float('nan')
        summary = {
            'child_loss': metrics.get('child_loss', nan), 'mean_reward': stats.get('reward', nan),
            'baseline': stats.get('baseline', nan), 'entropy': stats.get('entropy', nan),
            'ctrl_loss': stats.get('loss', nan), 'skip_rate': stats.get('skip_rate'),
            'best_reward': self.export.last.reward, 'lr': self._lr, 'seconds': seconds,
            'child_seconds': stats.get('child_seconds', nan), 'ctrl_seconds': stats.get('seconds', nan),
            'export_seconds': self.export.last.seconds,
        }
        if self.tokens_per_epoch is None:
            summary.update(child_acc=metrics.get('child_acc', nan), images_per_s=stats.get('images_per_s', nan))
        else:
            best = summary['best_reward']
            summary.update(child_ppl=metrics.get('child_ppl', nan),
                           best_valid_ppl=self.reward_constant / best if best > 0 else float('inf'),
                           tokens_per_s=self.tokens_per_epoch / max(summary['child_seconds'], 1e-9))
        return summary

    def _line(self, s: dict[str, Any]) -> str:
        skip = f'  skip {s["skip_rate"]:.2f}' if s['skip_rate'] is not None else ''
        times = (f'{s["seconds"]:.1f}s (child {s["child_seconds"]:.1f}s {{rate}}, controller {s["ctrl_seconds"]:.1f}s, '
                 f'export {s["export_seconds"]:.1f}s)')
        if self.tokens_per_epoch is None:
            return (f'child loss {s["child_loss"]:.3f} acc {s["child_acc"]:.3f}  reward {s["mean_reward"]:.3f} '
                    f'baseline {s["baseline"]:.3f}  entropy {s["entropy"]:.2f}{skip}  best {s["best_reward"]:.3f}  '
                    + times.format(rate=f'{s["images_per_s"]:.0f} img/s'))
        return (f'child loss {s["child_loss"]:.3f} ppl {s["child_ppl"]:.1f}  reward {s["mean_reward"]:.3f} '
                f'baseline {s["baseline"]:.3f}  entropy {s["entropy"]:.2f}  best {s["best_reward"]:.3f} '
                f'(valid ppl {s["best_valid_ppl"]:.1f})  ' + times.format(rate=f'{s["tokens_per_s"]:.0f} tokens/s'))

    @staticmethod
    def _log_tensorboard(trainer, module, epoch: int, summary: dict[str, float]) -> None:
        if trainer.logger is None:
            return
        # One tag per value: the module logs child_loss / child_acc and the controller phase's
        # statistics itself (ctrl_reward, ctrl_baseline, ctrl_entropy, ctrl_loss, ctrl_skip_rate,
        # ctrl_seconds, ctrl_child_seconds, ctrl_images_per_s, ctrl_export_reward); only the rest is ours.
        scalars = {f'search/{k}': v for k, v in summary.items()
                   if k in SEARCH_ONLY_SCALARS and v is not None and math.isfinite(v)}
        controller = module.controller
        values = {d.label: d.values for d in controller.decisions}
        for label, probs in controller.choice_probabilities().items():
            for value, p in zip(values[label], probs):
                scalars[f'controller/{label}/{value}'] = p
        trainer.logger.log_metrics(scalars, step=epoch)
        experiment = getattr(trainer.logger, 'experiment', None)
        if hasattr(experiment, 'flush'):
            experiment.flush()


class ExportCopy(pl.Callback):
    """After every epoch's export: copy the run folder's ``exported.json`` to ``--export``, unless
    another run wrote that file after this one started.

    Two searches started in one folder would otherwise both write ``./exported.json``, and both
    final lines claim it holds their result. The file names the run that wrote it
    (``provenance.run_dir``): a file there before this run started is replaced (as the previous
    run's result always is), one written since by another run is left alone, and this run says so.
    """

    def __init__(self, target: Path, run_dir: Path):
        self.source = run_dir / EXPORT_NAME
        self.target = target
        self.same = target.resolve() == self.source.resolve()
        self.run_dir = str(run_dir.resolve())
        self.started = time.time()
        self.other_writer: str | None = None      # the run that wrote the target since this one started

    def paths(self) -> list[Path]:
        """The files that hold this run's latest export: the run folder's, and the copy when it is current."""
        if self.same or self.other_writer or not self.target.is_file():
            return [self.source]
        return [self.source, self.target]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.same:
            return
        other = self._other_writer()
        if other is not None:
            if other != self.other_writer:
                runcontrol.print_line(trainer, f'note: not copying the export to {self.target}: another run ({other}) '
                                               f'wrote it since this one started; this run\'s is {self.source}')
            self.other_writer = other
            return
        self.other_writer = None
        write_bytes_atomic(self.target, self.source.read_bytes())

    def _other_writer(self) -> str | None:
        try:
            modified = self.target.stat().st_mtime
            writer = json.loads(self.target.read_text())['provenance']['run_dir']
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            writer = None
        if writer == self.run_dir or modified < self.started:
            return None
        return writer or 'unknown'


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def space_args(args: argparse.Namespace, data_size: int) -> dict[str, Any]:
    """The search space's constructor arguments of the settings (``data_size``: classes, or words for rnn)."""
    if args.search_for == 'rnn':
        return _rnn_space_args(args, data_size)
    common = dict(num_layers=args.layers, channels=args.channels, num_classes=data_size, dropout=args.dropout)
    if args.search_for == 'micro':
        common['num_nodes'] = args.nodes
    return common


def data_size(data) -> int:
    """What the space is built for: the number of classes of ``(train, valid)`` images, or of words of text."""
    return len(data.vocabulary) if isinstance(data, TextData) else data[0].num_classes


def build_space(args: argparse.Namespace, size: int):
    """The search space of the settings (the one registry: ``architecture.SPACES``)."""
    return SPACES[args.search_for](**space_args(args, size))


def run_identity(args: argparse.Namespace, size: int) -> dict[str, Any]:
    """What fixes the shapes of a checkpoint of this search (checkpoints.RunIdentity)."""
    return {'command': COMMAND, 'space': args.search_for, 'space_args': space_args(args, size),
            'lstm_size': args.lstm_size}


def check_sizes(args: argparse.Namespace, device) -> None:
    """Refuse (exit 2) settings whose data, search space, controller or candidate pool cannot fit.

    The recurrent space's size depends on the vocabulary: :func:`_load` checks it once the text is read.
    """
    if args.search_for == 'rnn':
        h = args.lstm_size        # the LSTM cell (8 h^2) and the attention (2 h^2): nothing else grows with h^2
        if 10 * h * h > MAX_PARAMETERS:
            cli.fail(f'--lstm-size {h}: the controller would have about {10 * h * h:,} parameters, more than '
                     f'{MAX_PARAMETERS:,}')
        return
    sizes.check_data_size(args.dataset, args.synthetic_size, device, with_test_set=False)
    sizes.check_search_sizes(args.search_for, space_args(args, 10), controller_kwargs(_settings_for(args)),
                             num_candidates=args.num_candidates, ctrl_steps_aggregate=args.ctrl_steps_aggregate)


def _rnn_space_args(args: argparse.Namespace, vocab_size: int) -> dict[str, Any]:
    rates = {key: getattr(args, key) for key in ('dropout_e', 'dropout_i', 'dropout_x', 'dropout_h', 'dropout_o')}
    return dict(vocab_size=vocab_size, num_nodes=args.nodes, hidden_size=args.hidden_size, **rates)


def _load(args: argparse.Namespace, run_dir: Path | None, device):
    """The data of the search: ``(train, valid)`` images, or the text (vocabulary of a resumed run kept)."""
    if args.search_for != 'rnn':
        return load_data(args.dataset, args.data_dir, split='search', synthetic_size=args.synthetic_size,
                         valid_size=args.valid_size, seed=args.seed)
    vocabulary = read_vocabulary(run_dir) if args.resume else None      # a resumed run numbers words as before
    data = load_text_data(args.dataset, args.data_dir, batch_sizes={'train': args.batch_size, 'valid': args.batch_size},
                          vocabulary=vocabulary, synthetic_tokens=args.synthetic_size, seed=args.seed, device=device)
    # the shared weights must fit in memory (a typo such as --hidden-size 1000000000 is refused here)
    size = supernet_parameters(SPACES['rnn'], **_rnn_space_args(args, len(data.vocabulary)))
    if size > MAX_PARAMETERS:
        cli.fail(f'the rnn supernet would have {size:,} shared weights, more than {MAX_PARAMETERS:,} '
                 f'(--hidden-size {args.hidden_size}, --nodes {args.nodes}, {len(data.vocabulary):,} words)')
    return data


def _main(argv: Sequence[str] | None) -> int:
    runcontrol.quiet_library_noise()
    args, _ = parse(argv)
    device = cli.resolve_device(args.device)
    trial_dir = nni_report.trial_output_dir()     # None outside an NNI trial

    # Every check before any work: the sizes, the run folder, the export path, then the data.
    check_sizes(args, device)
    run_dir, checkpoint, done = runfolder.check_run_dir(args, COMMAND)
    if run_dir is None:
        runfolder.check_writable(trial_dir or 'runs', '--output (not given: the default)', folder=True)
    if args.export is None:
        args.export = str(Path(trial_dir or '.') / EXPORT_NAME)
    runfolder.check_writable(args.export, '--export', folder=False)
    pl.seed_everything(args.seed, verbose=False)
    data = _load(args, run_dir, device)
    if checkpoint is not None:
        check_checkpoint_identity(checkpoint, run_identity(args, data_size(data)))

    run_dir, lock = runfolder.start_run_dir(args, argv, run_dir, checkpoint, command=COMMAND,
                                            prefix=f'search-{args.search_for}', root=trial_dir or 'runs')
    try:
        if isinstance(data, TextData):
            data.save_vocabulary(run_dir)
        return _search(args, data, device, run_dir, checkpoint, done)
    finally:
        lock.release()


def _search(args: argparse.Namespace, data, device, run_dir: Path, checkpoint: Path | None, done: int) -> int:
    """Build the space and the ENAS trainer, fit, and say how it ended."""
    text = isinstance(data, TextData)
    if args.resume:
        cli.say(f'resuming {run_dir} after epoch {done} of {args.epochs}')
    else:
        what = data.describe() if text else f'{len(data[0])} train / {len(data[1])} reward images'
        cli.say(f'searching the {args.search_for} space for {_epochs(args.epochs)} on {args.dataset} '
                f'({what}, {device.type}); run folder {run_dir}')

    size = data_size(data)
    space = build_space(args, size)
    export = ArchitectureExport(run_dir / EXPORT_NAME, space=space, provenance=dict(
        dataset=args.dataset, seed=args.seed, run_dir=str(run_dir.resolve())),
        vocabulary=data.vocabulary.to_list() if text else None)
    copy = ExportCopy(Path(args.export), run_dir)
    monitor = (SearchMonitor(export, tokens_per_epoch=data.train_tokens, reward_constant=args.reward_constant)
               if text else SearchMonitor(export))
    # export first (the monitor reads its result), then the drawings of what it wrote
    monitors = [export, copy, monitor, SearchDrawings(run_dir, run_dir / EXPORT_NAME),
                RunIdentity(run_identity(args, size))]
    trainer, stop = (_rnn_trainer if text else _enas_trainer)(args, space, device, data, run_dir, monitors)
    how = runcontrol.fit_watched(lambda: trainer.fit(ckpt_path=str(checkpoint) if checkpoint else None), stop)
    status = runcontrol.fit_ending(how, stop, command=COMMAND, run_dir=run_dir, loss='child loss',
                                   epoch=trainer.trainer.current_epoch + 1, epochs=args.epochs, exports=copy.paths(),
                                   lr_flag='--lr' if text else '--lr-max')
    if status is None:
        _report_done(args, monitor, copy)
    return cli.EXIT_OK if status is None else status


def _controller_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The EnasTrainer arguments of the controller phase (the same for every space)."""
    return dict(
        grad_clip=args.grad_clip, entropy_weight=args.entropy_weight, skip_weight=args.skip_weight or 0.0,
        baseline_decay=args.baseline_decay, ctrl_lr=args.ctrl_lr, ctrl_steps_aggregate=args.ctrl_steps_aggregate,
        ctrl_steps=args.ctrl_steps, ctrl_kwargs=controller_kwargs(_settings_for(args)),
        num_candidates=args.num_candidates, candidate_batches=args.candidate_batches,
        reward_train_mode=args.reward_train_mode, cuda_graphs=args.cuda_graphs)


def _enas_trainer(args: argparse.Namespace, space, device, data, run_dir: Path,
                  monitors: list[pl.Callback]) -> tuple[EnasTrainer, runcontrol.StopWatcher]:
    """The ENAS trainer of the settings with the run's callbacks, and the stop watcher among them."""
    train, valid = data
    train_loader = BatchLoader(train, args.batch_size, shuffle=True, augment=True, device=device)
    reward_loader = BatchLoader(valid, args.batch_size, shuffle=True, augment=False, device=device)
    bar = runcontrol.want_progress_bar(args.progress_bar)
    callbacks, stop = runcontrol.run_callbacks(run_dir, monitors, progress_bar=bar)
    lr_max, lr_min, wd = args.lr_max, args.lr_min, args.weight_decay
    trainer = EnasTrainer(
        space, nn.CrossEntropyLoss(), None, accuracy,
        lambda params: enas_sgd(params, lr_max=lr_max, lr_min=lr_min, weight_decay=wd),
        args.epochs, None, batch_size=args.batch_size, workers=0, device=device.type,
        dataloaders=(train_loader, reward_loader), callbacks=callbacks, **_controller_settings(args),
        trainer_kwargs=runcontrol.trainer_kwargs(run_dir, settings=vars(args), progress_bar=bar))
    return trainer, stop


def _rnn_trainer(args: argparse.Namespace, space, device, data: TextData, run_dir: Path,
                 monitors: list[pl.Callback]) -> tuple[EnasTrainer, runcontrol.StopWatcher]:
    """The same ENAS trainer with the language-model recipe: truncated BPTT, reward c / perplexity."""
    recipe = LanguageModelTraining(lr=args.lr, bptt=args.bptt, weight_decay=args.weight_decay,
                                   slowness=args.slowness)
    # training windows: new random lengths every epoch; rewards: the validation windows in a random order
    loaders = (data.train_windows(args.bptt, seed=args.seed), RandomOrder(data.windows('valid', args.bptt)))
    bar = runcontrol.want_progress_bar(args.progress_bar)
    callbacks, stop = runcontrol.run_callbacks(run_dir, monitors, progress_bar=bar)
    trainer = EnasTrainer(
        space, None, None, PerplexityReward(args.reward_constant), None, args.epochs, None,
        batch_size=args.batch_size, workers=0, device=device.type, dataloaders=loaders, callbacks=callbacks,
        recipe=recipe, **_controller_settings(args),
        trainer_kwargs=runcontrol.trainer_kwargs(run_dir, settings=vars(args), progress_bar=bar))
    loaders[0].epoch_of = fit_epoch(trainer.trainer)       # a resumed run draws the lengths it would have
    return trainer, stop


def _report_done(args: argparse.Namespace, monitor: SearchMonitor, copy: ExportCopy) -> None:
    last = monitor.last or {}
    paths = copy.paths()
    nni_report.report_final({**last, 'mean_reward': last.get('mean_reward', float('nan')),
                             'export': str(paths[-1].resolve())}, 'mean_reward')
    cli.finished()
    where = ' and '.join(str(p) for p in reversed(paths))
    if copy.other_writer:
        where += f' ({copy.target} holds the export of another run: {copy.other_writer})'
    cli.say(f'done: {_epochs(args.epochs)}; the best architecture of the last epoch (reward '
            f'{last.get("best_reward", float("nan")):.3f}) is in {where}; retrain it from scratch with retrain.py')


def _epochs(n: int) -> str:
    return f'{n} epoch' + ('s' if n != 1 else '')


def main(argv: Sequence[str] | None = None) -> int:
    """Run the search; returns the exit status (0 done, 1 failed, 2 bad input, 130/143 stopped)."""
    return cli.run_main(_main, argv, user_errors=(DataError,))


if __name__ == '__main__':
    sys.exit(main())
