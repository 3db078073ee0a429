#!/usr/bin/env python3
"""Retrain an architecture from scratch with the paper's final recipe and report its test error.

    python3 retrain.py --arc paper-micro                 # ENAS micro, Table 2: 4.6M params, 3.54% error
    python3 retrain.py --arc paper-micro --cutout 16     # the "+ CutOut" row: 2.89%
    python3 retrain.py --arc paper-macro                 # ENAS macro, Table 2: 21.3M params, 4.23% error
    python3 retrain.py --arc exported.json               # what search.py exported, at its own depth
    python3 retrain.py --arc paper-rnn --data-dir data/ptb   # the paper's recurrent cell on Penn Treebank
    python3 retrain.py --arc paper-micro --devices 4 --batch-size 36   # 4 GPUs, the paper's global batch
    python3 retrain.py --resume runs/retrain-paper-micro-20250101-120000

The network is built through NNI: load_architecture(--arc) -> build_network(record, final widths),
the space's class constructed under NNI's model_context(arch), with the final widths of nni_enas/paper.py (FINAL): macro 96
channels, dropout 0.5, the file's own depth; micro 15 normal cells, 36 channels, dropout 0.2,
auxiliary head (weight 0.4), drop path 0.4. It is trained on the whole training set (CIFAR-10:
50k images; pad-4 crops and flips, optional cutout) with Nesterov SGD, cosine warm restarts
(T0 10, Tmul 2) and global-norm gradient clipping, and the test set is evaluated after every epoch.

A recurrent cell (space rnn: paper-rnn, or a search's export, whose vocabulary numbers the words) is
trained as the corrected ENAS language-model code (enas_lm) trains it: hidden 800, batch 64,
truncated BPTT over windows of random length around 35 with the state carried from window to
window, SGD lr 20 (scaled by the window's length), clipping 0.25, weight decay, activation L2 and
the dropouts of nni_enas/paper.py (FINAL), averaged weights (NT-ASGD) once the validation
perplexity stalls. The validation perplexity is reported after every epoch, the test perplexity
(whole test text at batch 1, the state carried) at the end.

The run folder (--output, default runs/retrain-<arc>-<time>) holds args.json (the settings),
architecture.json (a copy of --arc: what --resume rebuilds, whatever the --arc file holds by then),
checkpoints/last.ckpt (after every epoch), tensorboard/, architecture.png (the network drawn)
and, at the end, result.json (test accuracy, parameter count, time). Ctrl-C stops at once keeping the last epoch's checkpoint;
--resume continues from there.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from nni_enas.run import control as runcontrol  # first: also hides library noise emitted while importing the rest

runcontrol.quiet_library_noise()

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from nni_enas.run import cli, nni_report, sizes  # noqa: E402
from nni_enas.run import folder as runfolder  # noqa: E402
from nni_enas.architecture import (MAX_PARAMETERS, ArchitectureError, architecture_path, build_network,  # noqa: E402
                                   check_record, load_architecture)
from nni_enas.run.checkpoints import RunIdentity, check_checkpoint_identity, last_checkpoint  # noqa: E402
from nni_enas.data.images import DataError, load_data  # noqa: E402
from nni_enas.draw import draw_architecture  # noqa: E402
from nni_enas.files import write_json_atomic  # noqa: E402
from nni_enas.paper import FINAL, FINAL_FLAGS, PAPER_RESULTS  # noqa: E402
from nni_enas.training.classification import ChildTraining, enas_sgd  # noqa: E402
from nni_enas.training.retraining import ReplicaHashes, RetrainData, count_parameters, final_space_args, weights_sha256  # noqa: E402
from nni_enas.data.text import Vocabulary  # noqa: E402
from nni_enas.training.language_data import TextData, fit_epoch, load_text_data, read_vocabulary  # noqa: E402
from nni_enas.training.language_model import LanguageModelTraining  # noqa: E402

COMMAND = 'retrain.py'
RESULT_NAME = 'result.json'
ARCH_COPY = 'architecture.json'       # the run's copy of --arc: what --resume (and every data-parallel rank) builds
DRAWING_NAME = 'architecture.png'     # the network being trained, drawn (nni_enas/draw.py)
# Settings taken from paper.FINAL[space] when not given: one flag each (paper.FINAL_FLAGS).
PAPER_KEYS = cli.paper_keys(FINAL_FLAGS)
# What --resume lets the command line change; everything else must stay as the run started.
RESUME_MAY_CHANGE = {'resume', 'epochs', 'device', 'cuda_graphs', 'devices', 'progress_bar'}
PRECISIONS = ('auto', '32', 'bf16-mixed', '16-mixed')


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The options: the architecture, the paper's final recipe (paper.FINAL_FLAGS), speed, data, run."""
    p = cli.ArgumentParser(
        prog=COMMAND,
        description=__doc__.split('\n\n')[0] + '\n\n' + __doc__.split('\n\n')[1],
        epilog='Defaults marked "macro X / micro Y / rnn Z" are the paper\'s final recipe (nni_enas/paper.py, '
               'FINAL), picked by the space of --arc; every one can be overridden; an option without a value for '
               'the space of --arc is refused.\n\n'
               'Data parallel (--devices N): each of the N processes trains on its own shard of every epoch\n'
               '(reshuffled each epoch) and --batch-size is PER DEVICE, so one step sees N x batch-size images\n'
               'and an epoch has N times fewer steps. To keep the paper\'s recipe, split its batch: e.g.\n'
               '--devices 4 --batch-size 36 (micro, 4 x 36 = 144) or --devices 2 --batch-size 50 (macro) with\n'
               'the default learning rates. If you keep the per-device batch instead, scale --lr-max and\n'
               '--lr-min by N (the linear scaling rule). BatchNorm statistics are per device.\n\n'
               'Exit status: 0 done, 1 failed (NaN loss, out of memory, a full disk), 2 bad input,\n'
               '130 / 143 stopped by Ctrl-C / SIGTERM.')
    g = p.add_argument_group('what to train')
    g.add_argument('--arc', metavar='PATH|NAME', default=None,
                   help='the architecture: a file exported by search.py, or a shipped one: paper-macro, '
                        'paper-micro, paper-rnn (nni_enas/architectures/); required unless --resume')
    cli.add_paper_flags(p, FINAL, FINAL_FLAGS, groups={'what to train': g})

    g = p.add_argument_group('speed')
    g.add_argument('--devices', type=cli.ranged('devices'), default=1, metavar='N',
                   help='data-parallel processes (DDP through Lightning): N GPUs, or N CPU processes (gloo) with '
                        '--device cpu; see the note below on batch size and learning rate (default: %(default)s)')
    g.add_argument('--precision', choices=PRECISIONS, default='auto',
                   help='arithmetic: auto = bf16-mixed on a CUDA GPU that supports it, else 32 (rnn: always 32, '
                        'as enas_lm); 16-mixed needs CUDA (default: %(default)s)')

    cli.add_data_options(p, cifar10_use='all 50k training images, evaluated on the 10k test images',
                         text_use='trained on train.txt, validated on valid.txt after every epoch, tested on '
                                  'test.txt at the end')
    g = cli.add_run_options(
        p, device_note='; on CUDA the data lives on the GPU and the network is channels-last',
        output_holds='result.json', run_name='retrain-<arc>',
        resume_note=f', exactly as if it had not stopped, with the architecture copied into RUN_DIR when it started; '
                    f'only {runfolder.resume_note(RESUME_MAY_CHANGE)} may be changed (--epochs to extend: the micro '
                    f'drop-path schedule then stretches to the new length; an --arc that is not the run\'s is refused)')
    # How the first process of a data-parallel run starts the others (Lightning re-runs the command
    # line): each rank reads the settings from the run folder, so all ranks train the same network.
    g.add_argument('--rank-of', metavar='RUN_DIR', default=None, help=argparse.SUPPRESS)
    return p


# The kinds of network: the flags of one kind serve all its spaces (macro takes --layers though
# only micro's table has a default for it); a flag of the other kind is refused.
KINDS = {'macro': 'image', 'micro': 'image', 'rnn': 'rnn'}
KIND_NAMES = {'image': 'image (macro, micro)', 'rnn': 'rnn'}


def _check_space_options(args: argparse.Namespace, explicit: set[str], space: str) -> None:
    """Refuse the options the kind of network of --arc has no use for; fill the data defaults of its kind."""
    kind = KINDS[space]
    for key in sorted(explicit & set(PAPER_KEYS)):
        kinds = {KINDS[s] for s, table in FINAL.items() if key in table}
        if kind not in kinds:
            other = KIND_NAMES[kinds.pop()]
            cli.fail(f'--{key.replace("_", "-")} is only for {other} architectures ({args.arc} is {space})')
    if space == 'rnn' and args.devices > 1:
        cli.fail(f'--devices {args.devices}: an rnn architecture trains on one device')
    cli.fill_data_defaults(args, text=space == 'rnn')


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, dict[str, Any], dict[str, Any]]:
    """Parse, apply NNI tuner parameters, fill the paper's defaults, check the architecture.

    Returns ``(args, record, space_overrides)``; bad input fails with exit status 2. The file is
    read once and validated once, at the final widths. A resumed run (and every data-parallel
    rank) reads the run folder's copy of the architecture (:data:`ARCH_COPY`).
    """
    parser = build_parser()
    args, explicit = cli.parse_args_explicit(parser, argv)
    given_arc = None
    if args.rank_of:        # a data-parallel rank > 0: exactly the first process's settings
        args = argparse.Namespace(**{**runfolder.load_settings(args.rank_of), 'rank_of': args.rank_of})
    else:
        explicit |= set(nni_report.apply_tuner_parameters(args, parser))
        if args.resume:
            given_arc = args.arc if 'arc' in explicit else None
            args = runfolder.resume_settings(args, explicit - {'arc'}, RESUME_MAY_CHANGE, COMMAND)
        elif args.arc is None:
            cli.fail('--arc PATH|paper-macro|paper-micro|paper-rnn is required (or --resume RUN_DIR)')
    record, path = _read_architecture(args)
    if given_arc is not None:
        _check_same_architecture(given_arc, record, path)
    if not (args.resume or args.rank_of) and Path(args.arc).is_file():
        args.arc = str(Path(args.arc).resolve())   # where it came from, in the settings and result.json
    space = record['space']
    if space not in FINAL:      # a space with no final recipe here (yet): one line, not a KeyError
        cli.fail(f'{path}: a {space} architecture; retrain.py trains {" and ".join(sorted(FINAL))} networks')
    if not args.resume and not args.rank_of:
        _check_space_options(args, explicit, space)
    cli.fill_paper_defaults(args, FINAL[space], PAPER_KEYS)
    if space == 'rnn':
        check_record(record, where=str(path))
        return args, record, rnn_space_args(vars(args))
    if space == 'macro':
        for dest in ('aux_weight', 'drop_path_prob'):
            if getattr(args, dest):
                cli.fail(f'--{dest.replace("_", "-")} {getattr(args, dest)}: only the micro network has it '
                         f'({args.arc} is a macro architecture)')
    if args.lr_min > args.lr_max:
        cli.fail(f'--lr-min {args.lr_min} is larger than --lr-max {args.lr_max}')
    overrides = final_space_args(space, vars(args))
    # The labels must fit the final depth, and the network must fit in memory.
    check_record(record, where=str(path), max_parameters=MAX_PARAMETERS, **overrides)
    return args, record, overrides


def _read_architecture(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """The record to train and its file: the run folder's copy when resuming, else ``--arc``."""
    run_dir = args.rank_of or args.resume
    if run_dir and (Path(run_dir) / ARCH_COPY).is_file():
        path = Path(run_dir) / ARCH_COPY
    else:
        if args.resume:     # a run folder made before runs kept a copy
            cli.say(f'note: {run_dir} has no {ARCH_COPY} (made by an older retrain.py); rebuilding from {args.arc} '
                    f'as that file is now')
        path = architecture_path(args.arc)
    return load_architecture(path, validate=False), path


def _check_same_architecture(given: str, record: dict[str, Any], copy: Path) -> None:
    """``--arc`` on ``--resume`` is allowed only when it is the run's architecture (a reminder, not a change)."""
    other = load_architecture(given, validate=False)
    keys = ('space', 'space_args', 'arch')
    if [other.get(k) for k in keys] != [record.get(k) for k in keys]:
        cli.fail(f'--arc {given} is not the architecture this run trains (the run folder\'s copy, {copy}); '
                 f'--resume always continues the run\'s own: leave --arc out, or start a new run with it')


# --------------------------------------------------------------------------------------------
# devices
# --------------------------------------------------------------------------------------------

def resolve_precision(choice: str, device: torch.device) -> str:
    if choice == 'auto':
        return 'bf16-mixed' if device.type == 'cuda' and torch.cuda.is_bf16_supported() else '32-true'
    if choice == '16-mixed' and device.type != 'cuda':
        cli.fail('--precision 16-mixed needs a CUDA device (use 32 or bf16-mixed)')
    return '32-true' if choice == '32' else choice


def lightning_devices(device: torch.device, n: int) -> dict[str, Any]:
    """``pl.Trainer`` accelerator/devices/strategy for ``n`` data-parallel processes on ``device``."""
    if device.type == 'cuda':
        available = torch.cuda.device_count()
        if n > available:
            cli.fail(f'--devices {n}: only {available} CUDA device(s) here')
        devices = [device.index] if device.index is not None and n == 1 else n
        kwargs = dict(accelerator='gpu', devices=devices)
    else:
        sizes.check_cpu_processes(n, device)
        kwargs = dict(accelerator='cpu', devices=n)
    kwargs['strategy'] = 'ddp' if n > 1 else 'auto'     # DDP on CPU uses the gloo backend
    return kwargs


def describe_device(device: torch.device, n: int) -> str:
    if device.type == 'cuda':
        name = torch.cuda.get_device_name(device.index or 0)
        return f'{n} x {name}' if n > 1 else name
    return f'cpu ({n} processes)' if n > 1 else 'cpu'


# --------------------------------------------------------------------------------------------
# per-epoch report: summary line, TensorBoard, NNI
# --------------------------------------------------------------------------------------------

class RetrainMonitor(pl.Callback):
    """After every epoch (validation included): one summary line, TensorBoard scalars, NNI report.

    Its state (best test accuracy, time so far) is saved in the checkpoint, so a resumed run
    reports the same bests and total time as one that never stopped.
    """

    def __init__(self, images_per_epoch: int):
        self.images_per_epoch = images_per_epoch
        self.best_acc = float('nan')
        self.best_epoch = 0
        self.wall_seconds_before = 0.0      # of earlier sessions of this run (restored on --resume)
        self.session_start = time.perf_counter()
        self.last: dict[str, float] = {}
        self._epoch_start = self._train_seconds = 0.0
        self._lr = float('nan')

    @property
    def wall_seconds(self) -> float:
        return self.wall_seconds_before + time.perf_counter() - self.session_start

    def state_dict(self) -> dict[str, Any]:
        return {'best_acc': self.best_acc, 'best_epoch': self.best_epoch, 'wall_seconds': self.wall_seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_acc, self.best_epoch = state['best_acc'], state['best_epoch']
        self.wall_seconds_before = state['wall_seconds']
        self.session_start = time.perf_counter()

    def on_train_epoch_start(self, trainer, module) -> None:
        self._epoch_start = time.perf_counter()
        self._train_seconds = 0.0
        self._lr = trainer.optimizers[0].param_groups[0]['lr'] if trainer.optimizers else float('nan')

    def on_validation_epoch_start(self, trainer, module) -> None:
        if not trainer.sanity_checking and not self._train_seconds:     # the epoch's training part ends
            if module.device.type == 'cuda':
                torch.cuda.synchronize(module.device)
            self._train_seconds = time.perf_counter() - self._epoch_start

    def on_train_epoch_end(self, trainer, module) -> None:
        epoch = trainer.current_epoch + 1
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if k in ('train_loss', 'train_acc', 'test_loss', 'test_acc')}
        test_acc = metrics.get('test_acc', float('nan'))
        if not test_acc <= self.best_acc:       # also when best is still NaN
            self.best_acc, self.best_epoch = test_acc, epoch
        seconds = time.perf_counter() - self._epoch_start
        train_seconds = self._train_seconds or seconds
        summary = {
            'train_loss': metrics.get('train_loss', float('nan')), 'train_acc': metrics.get('train_acc', float('nan')),
            'test_loss': metrics.get('test_loss', float('nan')), 'test_acc': test_acc, 'test_error': 1 - test_acc,
            'best_test_acc': self.best_acc, 'lr': self._lr, 'seconds': seconds,
            'images_per_s': self.images_per_epoch / train_seconds,
        }
        self.last = {'epoch': epoch, **summary}
        if not trainer.is_global_zero:
            return
        if trainer.logger is not None:
            # The module logs train_loss/train_acc/test_loss/test_acc itself (Lightning); the rest is ours.
            duplicates = ('train_loss', 'train_acc', 'test_loss', 'test_acc')
            trainer.logger.log_metrics({f'retrain/{k}': v for k, v in summary.items()
                                        if math.isfinite(v) and k not in duplicates}, step=epoch)
        nni_report.report_epoch(summary, 'test_acc')
        runcontrol.print_line(trainer, (
            f'epoch {epoch}/{trainer.max_epochs}  train loss {summary["train_loss"]:.3f} '
            f'acc {summary["train_acc"]:.3f}  test loss {summary["test_loss"]:.3f} acc {test_acc:.4f} '
            f'(error {100 * (1 - test_acc):.2f}%, best {self.best_acc:.4f} @{self.best_epoch})  '
            f'lr {self._lr:.5f}  {seconds:.1f}s ({_rate(summary["images_per_s"])} img/s)'))


class TextRetrainMonitor(RetrainMonitor):
    """:class:`RetrainMonitor` for a language model: perplexities and tokens/s, lower is better.

    Per epoch: the training loss and perplexity (with dropout, as trained), the validation
    perplexity (whole validation text, the state carried; averaged weights once NT-ASGD started),
    the best one so far. Its state is saved in the checkpoint, as the image monitor's.
    """

    def __init__(self, tokens_per_epoch: int, nominal_lr: float):
        super().__init__(images_per_epoch=tokens_per_epoch)
        self.best_acc = float('nan')        # the best (lowest) validation perplexity: the base class's slot
        self.nominal_lr = nominal_lr

    def on_train_epoch_end(self, trainer, module) -> None:
        epoch = trainer.current_epoch + 1
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if k in ('train_loss', 'train_ppl', 'val_loss', 'val_ppl')}
        nan = float('nan')
        val_ppl = metrics.get('val_ppl', nan)
        if not val_ppl >= self.best_acc:       # also when best is still NaN
            self.best_acc, self.best_epoch = val_ppl, epoch
        seconds = time.perf_counter() - self._epoch_start
        summary = {
            'train_loss': metrics.get('train_loss', nan), 'train_ppl': metrics.get('train_ppl', nan),
            'val_loss': metrics.get('val_loss', nan), 'val_ppl': val_ppl, 'best_val_ppl': self.best_acc,
            'averaging': float(module.trigger.fired), 'lr': self.nominal_lr, 'seconds': seconds,
            'tokens_per_s': self.images_per_epoch / (self._train_seconds or seconds),
        }
        self.last = {'epoch': epoch, **summary}
        if trainer.logger is not None:
            duplicates = ('train_loss', 'train_ppl', 'val_loss', 'val_ppl')
            trainer.logger.log_metrics({f'retrain/{k}': v for k, v in summary.items()
                                        if math.isfinite(v) and k not in duplicates}, step=epoch)
        nni_report.report_epoch(summary, 'val_ppl')
        averaged = ', averaged weights' if module.trigger.fired else ''
        runcontrol.print_line(trainer, (
            f'epoch {epoch}/{trainer.max_epochs}  train loss {summary["train_loss"]:.3f} ppl {summary["train_ppl"]:.1f}  '
            f'valid ppl {val_ppl:.2f} (best {self.best_acc:.2f} @{self.best_epoch}{averaged})  lr {self.nominal_lr:g}  '
            f'{seconds:.1f}s ({_rate(summary["tokens_per_s"])} tokens/s)'))


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def _arc_name(arc: str) -> str:
    return Path(arc).stem if Path(arc).suffix == '.json' else Path(arc).name


def run_identity(record: dict[str, Any], overrides: dict[str, Any], num_classes: int | None = None) -> dict[str, Any]:
    """What fixes the shapes of a checkpoint of this run (checkpoints.RunIdentity): the network trained
    (an rnn's vocabulary size is among its ``overrides``)."""
    extra = {} if num_classes is None else {'num_classes': num_classes}
    return {'command': COMMAND, 'space': record['space'], 'arch': record['arch'],
            'space_args': {**record.get('space_args', {}), **overrides, **extra}}


def _main(argv: Sequence[str] | None) -> int:
    args, record, overrides = parse(argv)
    lead = args.rank_of is None        # the first (or only) process writes files and prints
    device = cli.resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    trainer_devices = lightning_devices(device, args.devices)
    if argv is not None and args.devices > 1 and list(argv) != sys.argv[1:]:
        cli.fail('--devices > 1 needs retrain.py run as a script: Lightning starts the other processes '
                 'with a command line')
    trial_dir = nni_report.trial_output_dir()
    if record['space'] != 'rnn':     # text sizes: nni_enas.data.text's own limits
        sizes.check_data_size(args.dataset, args.synthetic_size, device, with_test_set=True)
    if lead:    # every check before any work: the sizes, the run folder, then the data
        run_dir, checkpoint, _ = runfolder.check_run_dir(args, COMMAND)
        if run_dir is None:
            runfolder.check_writable(trial_dir or 'runs', '--output (not given: the default)', folder=True)
    else:
        run_dir = Path(args.rank_of)
        checkpoint = last_checkpoint(run_dir, COMMAND) if args.resume else None
    pl.seed_everything(args.seed, verbose=False)
    if record['space'] == 'rnn':
        data = _load_text(args, record, overrides, run_dir if checkpoint else None, device)
        identity = run_identity(record, overrides)
    else:
        data = load_data(args.dataset, args.data_dir, split='final', synthetic_size=args.synthetic_size,
                         seed=args.seed)
        identity = run_identity(record, overrides, data[0].num_classes)
    if lead and checkpoint is not None:
        check_checkpoint_identity(checkpoint, identity)
    lock = None
    if lead:
        run_dir, lock = runfolder.start_run_dir(args, argv, run_dir, checkpoint, command=COMMAND,
                                                prefix=f'retrain-{_arc_name(args.arc)}', root=trial_dir or 'runs')
        if checkpoint is None:
            write_json_atomic(run_dir / ARCH_COPY, record)
    try:
        if record['space'] == 'rnn':
            data.save_vocabulary(run_dir)
            return _retrain_text(args, record, overrides, data, device, run_dir, checkpoint)
        return _retrain(args, record, overrides, *data, device, precision, trainer_devices, run_dir,
                        checkpoint, lead)
    finally:
        if lock is not None:
            lock.release()


def _retrain(args, record, overrides, train, test, device, precision, trainer_devices, run_dir: Path,
             checkpoint: Path | None, lead: bool) -> int:
    """Build the network and the Lightning pieces, fit, and say how it ended."""
    world = args.devices
    # The network, through NNI: the space's class at the final widths, under the architecture.
    net = build_network(record, **overrides, num_classes=train.num_classes)
    params = count_parameters(net)
    if device.type == 'cuda':
        net = net.to(memory_format=torch.channels_last)
    elif world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))

    # The recipe: the same ChildTraining the search trains its child models with.
    steps_per_epoch = math.ceil(math.ceil(len(train) / world) / args.batch_size)
    lr_max, lr_min, wd = args.lr_max, args.lr_min, args.weight_decay
    drop_path = record['space'] == 'micro' and args.drop_path_prob > 0
    module = ChildTraining(
        optimizer=lambda params: enas_sgd(params, lr_max=lr_max, lr_min=lr_min, weight_decay=wd),
        aux_weight=args.aux_weight, drop_path_steps=args.epochs * steps_per_epoch if drop_path else None,
        cuda_graphs=args.cuda_graphs, log_prefix='train_')
    module.set_model(net)
    data = RetrainData(train, test, batch_size=args.batch_size, eval_batch_size=max(100, 2 * args.batch_size),
                       seed=args.seed, cutout=args.cutout, channels_last=device.type == 'cuda')

    monitor = RetrainMonitor(images_per_epoch=math.ceil(len(train) / world) * world)
    replicas = ReplicaHashes()
    bar = runcontrol.want_progress_bar(args.progress_bar)
    identity = RunIdentity(run_identity(record, overrides, train.num_classes))
    callbacks, stop = runcontrol.run_callbacks(run_dir, [monitor, replicas, identity], progress_bar=bar,
                                               after_last_step='(last step + test set)')
    trainer = pl.Trainer(
        max_epochs=args.epochs, precision=precision, gradient_clip_val=args.grad_clip or None,
        gradient_clip_algorithm='norm', num_sanity_val_steps=0, log_every_n_steps=50,
        benchmark=device.type == 'cuda', callbacks=callbacks, **trainer_devices,
        **runcontrol.trainer_kwargs(run_dir, settings=vars(args) if lead else None, progress_bar=bar))

    # The paper's figures are only comparable at the shipped file's own (final) settings.
    space_args = dict(net.args)
    paper = PAPER_RESULTS.get(_arc_name(args.arc))
    if paper is not None and space_args != {**record['space_args'], 'num_classes': train.num_classes}:
        paper = None
    if lead:
        # the network trained: the file's arch at the widths it is built with (the file's own may be overridden)
        draw_architecture({**record, 'space_args': space_args}, run_dir / DRAWING_NAME,
                          title=f'{args.arc}: {_describe_space(space_args)}')
        cli.say(f'{"resuming" if checkpoint else "retraining"} {args.arc} ({record["space"]}, '
                f'{_describe_space(space_args)}): {params:,} parameters'
                + (f' (paper: {paper["params_m"]}M)' if paper else '')
                + f'; {_epochs(args.epochs)} on {args.dataset} ({len(train)} train / {len(test)} test images), '
                  f'{describe_device(device, world)}, precision {precision}; run folder {run_dir}')
    how = runcontrol.fit_watched(lambda: _fit(trainer, module, data, checkpoint, run_dir, world), stop)
    status = runcontrol.fit_ending(how, stop, command=COMMAND, run_dir=run_dir, loss='training loss',
                                   epoch=trainer.current_epoch + 1, epochs=args.epochs, lead=lead)
    if status is not None:
        return status
    if lead:
        _finish(args, record['space'], space_args, params, trainer, monitor, replicas.hashes or [weights_sha256(net)],
                paper, run_dir, describe_device(device, world), precision)
    return cli.EXIT_OK


def _fit(trainer: pl.Trainer, module, data, checkpoint: Path | None, run_dir: Path, world: int) -> None:
    """``trainer.fit``; with several processes, Lightning starts the others with ``--rank-of RUN_DIR``."""
    argv = sys.argv
    if world > 1 and trainer.is_global_zero:
        sys.argv = [argv[0], '--rank-of', str(run_dir.resolve())]
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(checkpoint) if checkpoint else None)
    finally:
        sys.argv = argv


def _finish(args, space: str, space_args: dict[str, Any], params: int, trainer: pl.Trainer,
            monitor: RetrainMonitor, hashes: list[str], paper: dict | None, run_dir: Path, device: str,
            precision: str) -> None:
    """Write result.json, report the final result to NNI, say it."""
    last = monitor.last
    paper_error = None
    if paper:
        paper_error = paper.get('test_error_cutout') if args.cutout else paper['test_error']
    result = {
        'architecture': args.arc, 'space': space, 'space_args': space_args, 'parameters': params,
        'test_acc': last.get('test_acc'), 'test_error': last.get('test_error'),
        'best_test_acc': monitor.best_acc, 'best_epoch': monitor.best_epoch,
        'epochs': trainer.current_epoch, 'wall_seconds': round(monitor.wall_seconds, 1),
        'device': device, 'devices': args.devices, 'precision': precision,
        'batch_size_per_device': args.batch_size, 'dataset': args.dataset, 'cutout': args.cutout,
        'seed': args.seed, 'weights_sha256': hashes,
        'paper': {'parameters_m': paper['params_m'], 'test_error_percent': paper_error} if paper else None,
        'run_dir': str(run_dir.resolve()), 'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
    }
    write_json_atomic(run_dir / RESULT_NAME, result)
    nni_report.report_final({k: result[k] for k in ('test_acc', 'test_error', 'best_test_acc', 'parameters',
                                                    'wall_seconds')}, 'test_acc')
    cli.finished()
    cli.say(f'done: {args.arc} after {_epochs(result["epochs"])}: test accuracy {result["test_acc"]:.4f} '
            f'(error {100 * result["test_error"]:.2f}%' + (f'; paper {paper_error}%' if paper_error else '')
            + f'), best {monitor.best_acc:.4f} at epoch {monitor.best_epoch}; {params:,} parameters; '
              f'{result["wall_seconds"] / 3600:.2f} h; {run_dir / RESULT_NAME}')


# --------------------------------------------------------------------------------------------
# a recurrent cell (space rnn): the language-model recipe
# --------------------------------------------------------------------------------------------

RNN_WIDTH_KEYS = ('hidden_size', 'dropout_e', 'dropout_i', 'dropout_x', 'dropout_h', 'dropout_o')


def rnn_space_args(settings: dict[str, Any]) -> dict[str, Any]:
    """Space-argument overrides of the final recurrent network (hidden size and dropouts; the
    vocabulary size comes from the data)."""
    return {key: settings[key] for key in RNN_WIDTH_KEYS}


def _load_text(args, record: dict[str, Any], overrides: dict[str, Any], run_dir: Path | None, device) -> TextData:
    """The text, numbered with the record's vocabulary (or a resumed run's), cut into the splits' rows;
    the network at its final size checked against it (bad input: exit 2, nothing written)."""
    if run_dir is not None:
        vocabulary = read_vocabulary(run_dir)
    else:
        vocabulary = Vocabulary(record['vocabulary']) if record.get('vocabulary') else None
    data = load_text_data(args.dataset, args.data_dir, vocabulary=vocabulary, synthetic_tokens=args.synthetic_size,
                          seed=args.seed, device=device, batch_sizes={
                              'train': args.batch_size, 'valid': args.valid_batch_size, 'test': args.test_batch_size})
    overrides['vocab_size'] = len(data.vocabulary)
    check_record(record, where=str(architecture_path(args.arc)), max_parameters=MAX_PARAMETERS, **overrides)
    return data


def _retrain_text(args, record: dict[str, Any], overrides: dict[str, Any], data: TextData, device,
                  run_dir: Path, checkpoint: Path | None) -> int:
    """Train the recurrent network on the text, then test it; say how it ended."""
    net = build_network(record, **overrides)
    if hasattr(net, 'reset_parameters'):
        net.reset_parameters(args.init_range)       # enas_lm's final init, U(-0.05, 0.05)
    params = count_parameters(net)
    module = LanguageModelTraining(lr=args.lr, bptt=args.bptt, weight_decay=args.weight_decay,
                                   slowness=args.slowness, activation_l2=args.activation_l2,
                                   weight_averaging=args.weight_averaging, averaging_patience=args.averaging_patience,
                                   cuda_graphs=args.cuda_graphs, log_prefix='train_')
    module.set_model(net)
    monitor = TextRetrainMonitor(data.train_tokens, args.lr)
    bar = runcontrol.want_progress_bar(args.progress_bar)
    callbacks, stop = runcontrol.run_callbacks(run_dir, [monitor, RunIdentity(run_identity(record, overrides))],
                                               progress_bar=bar, after_last_step='(last step + validation)')
    trainer = pl.Trainer(
        max_epochs=args.epochs, precision='32-true', gradient_clip_val=args.grad_clip or None,
        gradient_clip_algorithm='norm', num_sanity_val_steps=0, log_every_n_steps=50, callbacks=callbacks,
        **lightning_devices(device, 1), **runcontrol.trainer_kwargs(run_dir, settings=vars(args), progress_bar=bar))
    paper = PAPER_RESULTS.get(_arc_name(args.arc))
    if paper is not None and overrides['hidden_size'] != record['space_args'].get('hidden_size'):
        paper = None
    draw_architecture({**record, 'space_args': {**record['space_args'], **overrides}}, run_dir / DRAWING_NAME,
                      title=f'{args.arc}: rnn cell, hidden {overrides["hidden_size"]}')
    cli.say(f'{"resuming" if checkpoint else "retraining"} {args.arc} (rnn, {record["space_args"]["num_nodes"]} '
            f'nodes, hidden {overrides["hidden_size"]}): {params:,} parameters'
            + (f' (paper: {paper["params_m"]}M)' if paper else '')
            + f'; {_epochs(args.epochs)} on {args.dataset} ({data.describe()}), {describe_device(device, 1)}; '
              f'run folder {run_dir}')
    windows = data.train_windows(args.bptt, seed=args.seed), data.windows('valid', args.bptt)
    windows[0].epoch_of = fit_epoch(trainer)       # a resumed run draws the window lengths it would have

    def fit_and_test():
        trainer.fit(module, train_dataloaders=windows[0], val_dataloaders=windows[1],
                    ckpt_path=str(checkpoint) if checkpoint else None)
        return trainer.test(module, dataloaders=data.windows('test', args.bptt), verbose=False)[0]

    tested: dict[str, Any] = {}
    how = runcontrol.fit_watched(lambda: tested.update(fit_and_test()), stop)
    status = runcontrol.fit_ending(how, stop, command=COMMAND, run_dir=run_dir, loss='training loss',
                                   epoch=trainer.current_epoch + 1, epochs=args.epochs, lr_flag='--lr')
    if status is not None:
        return status
    _finish_text(args, record, overrides, params, trainer, monitor, module, tested, paper, run_dir,
                 describe_device(device, 1), len(data.vocabulary))
    return cli.EXIT_OK


def _finish_text(args, record, overrides, params, trainer, monitor: TextRetrainMonitor, module, tested, paper,
                 run_dir: Path, device: str, words: int) -> None:
    """Write result.json (validation and test perplexity), report the final result to NNI, say it."""
    last = monitor.last
    test_ppl = float(tested.get('test_ppl', float('nan')))
    result = {
        'architecture': args.arc, 'space': 'rnn', 'space_args': {**record['space_args'], **overrides},
        'parameters': params, 'test_ppl': test_ppl, 'test_loss': float(tested.get('test_loss', float('nan'))),
        'valid_ppl': last.get('val_ppl'), 'best_valid_ppl': monitor.best_acc, 'best_epoch': monitor.best_epoch,
        'averaged_weights': module.trigger.fired, 'averaging_from_epoch': module.trigger.fired_at,
        'epochs': trainer.current_epoch, 'wall_seconds': round(monitor.wall_seconds, 1), 'device': device,
        'precision': '32-true', 'batch_size': args.batch_size, 'test_batch_size': args.test_batch_size,
        'tokens_per_s': last.get('tokens_per_s'), 'vocabulary_size': words, 'dataset': args.dataset,
        'seed': args.seed, 'weights_sha256': [weights_sha256(module.model)],
        'paper': {'parameters_m': paper['params_m'], 'test_ppl': paper['test_ppl']} if paper else None,
        'run_dir': str(run_dir.resolve()), 'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
    }
    write_json_atomic(run_dir / RESULT_NAME, result)
    nni_report.report_final({k: result[k] for k in ('test_ppl', 'valid_ppl', 'best_valid_ppl', 'parameters',
                                                    'wall_seconds')}, 'test_ppl')
    cli.say(f'done: {args.arc} after {_epochs(result["epochs"])}: test perplexity {test_ppl:.2f}'
            + (f' (paper {paper["test_ppl"]})' if paper else '')
            + f', validation {result["valid_ppl"]:.2f} (best {monitor.best_acc:.2f} at epoch {monitor.best_epoch})'
            + (f', averaged weights from epoch {module.trigger.fired_at + 1}' if module.trigger.fired else '')
            + f'; {params:,} parameters; {result["wall_seconds"] / 3600:.2f} h; {run_dir / RESULT_NAME}')


def _rate(images_per_s: float) -> str:
    return f'{images_per_s:.0f}' if images_per_s >= 100 else f'{images_per_s:.3g}'


def _epochs(n: int) -> str:
    return f'{n} epoch' + ('s' if n != 1 else '')


def _describe_space(space_args: dict[str, Any]) -> str:
    keys = ('num_layers', 'channels', 'dropout', 'auxiliary', 'drop_path_prob')
    return ', '.join(f'{k} {space_args[k]}' for k in keys if k in space_args)


def main(argv: Sequence[str] | None = None) -> int:
    """Retrain; returns the exit status (0 done, 1 failed, 2 bad input, 130/143 stopped)."""
    return cli.run_main(_main, argv, user_errors=(DataError, ArchitectureError))


if __name__ == '__main__':
    sys.exit(main())
