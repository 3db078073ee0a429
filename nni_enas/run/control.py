"""Run control: how a Lightning fit is watched, stopped, shown and kept quiet.

* :func:`run_callbacks` and :func:`trainer_kwargs`: the callbacks and ``pl.Trainer`` arguments
  every run gets (progress bar, checkpoints with RNG state, stop watcher, TensorBoard logger
  holding the run's settings);
* :func:`fit_watched` runs the fit with SIGTERM acting like Ctrl-C (:func:`sigterm_as_interrupt`)
  and says how it ended; :func:`fit_ending` turns that into the user's last line and exit status;
* :class:`EpochProgressBar`, :func:`want_progress_bar`, :func:`print_line`: a per-epoch bar that
  never mixes with the one-line summaries;
* :func:`quiet_library_noise`: NNI's and Lightning's harmless warnings and tips hidden.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

from nni_enas.run.checkpoints import (AtomicCheckpointIO, RngStateCallback, checkpoint_callback, checkpoint_mismatch,
                                      checkpoint_path, saved_state)
from nni_enas.run.cli import EXIT_FAILED, EXIT_USAGE, TerminateRequest, say
from nni_enas.run.failures import resource_failure

__all__ = ['quiet_library_noise', 'EpochProgressBar', 'want_progress_bar', 'print_line', 'TerminateRequest',
           'sigterm_as_interrupt', 'StopWatcher', 'EpochAxis', 'run_callbacks', 'trainer_kwargs', 'fit_watched',
           'fit_ending']


# --------------------------------------------------------------------------------------------
# library noise
# --------------------------------------------------------------------------------------------

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
# progress bar and summary lines
# --------------------------------------------------------------------------------------------

class EpochProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, labelled ``epoch 3/150`` (counted from 1, like our summaries).

    While the epoch's last step runs it says what else happens in that step
    (``after_last_step``, e.g. ``'+ controller'``) so a long pause is not mistaken for a hang.
    The bar is erased when training ends, so the last thing on the screen is the last summary line.
    """

    def __init__(self, after_last_step: str = '', **kwargs):
        super().__init__(**kwargs)
        self.after_last_step = after_last_step

    def _label(self, trainer) -> str:
        return f'epoch {trainer.current_epoch + 1}/{trainer.max_epochs}'

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        bar.leave = False
        return bar

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(self._label(trainer))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.after_last_step and batch_idx + 1 == trainer.num_training_batches:
            self.train_progress_bar.set_description(f'{self._label(trainer)} {self.after_last_step}')

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop('v_num', None)
        items.pop('step', None)         # EpochAxis's
        return items


def want_progress_bar(choice: bool | None = None) -> bool:
    """``choice`` if given (``--progress-bar`` / ``--no-progress-bar``), else whether both stdout (the
    summaries) and stderr (where tqdm draws) are a terminal.

    In a log file or an NNI trial's stdout a redrawn bar is only noise; the scripts' one-line
    epoch summaries are the progress there.
    """
    if choice is not None:
        return choice
    try:
        return sys.stdout.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def print_line(trainer: pl.Trainer, line: str) -> None:
    """Print one line (an epoch summary) above Lightning's progress bar if one is drawn."""
    try:
        bar = trainer.progress_bar_callback.train_progress_bar   # TypeError until the bar exists
    except (AttributeError, TypeError):
        bar = None
    if bar is not None and not bar.disable:
        bar.write(line, file=sys.stdout)
        sys.stdout.flush()
    else:
        say(line)


# --------------------------------------------------------------------------------------------
# stopping: signals and how a fit ended
# --------------------------------------------------------------------------------------------

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
        self.failure = None         # what fit_watched found: a ResourceFailure, or a checkpoint mismatch's reason

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
        """128 + the signal's number: 130 for SIGINT, 143 for SIGTERM (the shell's convention)."""
        return 128 + (signal.SIGTERM if self.stopped_by == 'SIGTERM' else signal.SIGINT)


def fit_watched(fit: Callable[[], Any], stop: StopWatcher) -> str | None:
    """Call ``fit()`` (a Lightning fit with ``stop`` among its callbacks); say how it ended.

    Returns ``None`` when it completed, ``'nonfinite'`` when the training loss became NaN/inf
    (:class:`~nni_enas.training.classification.NonFiniteLossError`), ``'diverged'`` when the
    search's controller did (:class:`~nni_enas.search.controller.ControllerDivergedError`),
    ``'SIGINT'`` / ``'SIGTERM'`` when stopped by a signal (SIGTERM stops at once, see
    :func:`sigterm_as_interrupt`), ``'resource'`` when memory or the disk ran out and
    ``'mismatch'`` when the checkpoint to resume from does not fit the network (both with
    ``stop.failure`` saying more); any other exception propagates.
    """
    from nni_enas.search.controller import ControllerDivergedError
    from nni_enas.training.classification import NonFiniteLossError
    try:
        with sigterm_as_interrupt():
            fit()
    except ControllerDivergedError:
        return 'diverged'
    except NonFiniteLossError:
        return 'nonfinite'
    except SystemExit:
        if stop.stopped_by is None:
            raise
    except Exception as exc:
        if stop.stopped_by is not None:   # SIGTERM arrives as Lightning's SIGTERMException
            return stop.stopped_by
        stop.failure = resource_failure(exc)
        if stop.failure is not None:
            return 'resource'
        stop.failure = checkpoint_mismatch(exc)
        if stop.failure is not None:
            return 'mismatch'
        raise
    return stop.stopped_by


def fit_ending(how: str | None, stop: StopWatcher, *, command: str, run_dir: Path, epoch: int, epochs: int,
               loss: str, exports: Sequence[Path] = (), lead: bool = True, lr_flag: str = '--lr-max') -> int | None:
    """Say how a fit that did not complete ended (``how`` from :func:`fit_watched`); its exit status.

    ``None`` when it completed. A NaN/inf ``loss``, a diverged controller, out of memory or a full
    disk is one ``error:`` line and status 1; a checkpoint that does not fit, one line and status 2;
    a signal says what is saved and how to go on (``--resume``, or start again when no epoch was
    saved), status 130 / 143. Only the ``lead`` process (data-parallel rank 0) prints. ``lr_flag`` is the
    learning-rate option the NaN message suggests lowering.
    """
    if how is None:
        return None
    failed = {'nonfinite': EXIT_FAILED, 'diverged': EXIT_FAILED, 'resource': EXIT_FAILED, 'mismatch': EXIT_USAGE}
    status = failed.get(how, stop.exit_status)
    if not lead:
        return status
    if how in ('nonfinite', 'diverged'):
        what = (f'the {loss} became NaN/inf' if how == 'nonfinite'
                else 'the controller diverged (NaN/inf in its probabilities, loss, weights or baseline)')
        say(f'error: {what} in epoch {epoch}/{epochs}; stopped ({saved_state(run_dir, exports)}); '
            f'try a lower {lr_flag if how == "nonfinite" else "--ctrl-lr"}', file=sys.stderr)
    elif how == 'resource':
        then = ''
        if stop.failure.kind == 'disk':     # the settings stay: once there is space, the run can go on
            then = (f', then continue with --resume {run_dir}' if checkpoint_path(run_dir).is_file()
                    else f', then start again with the same options and --output {run_dir}')
        say(f'error: {stop.failure.line(f"in epoch {epoch}/{epochs}")}; stopped ({saved_state(run_dir, exports)}); '
            f'{stop.failure.advice}{then}', file=sys.stderr)
    elif how == 'mismatch':
        say(f'error: {checkpoint_path(run_dir)} does not fit this run: {stop.failure}; was a file of the run folder '
            f'replaced or edited?', file=sys.stderr)
    else:
        if checkpoint_path(run_dir).is_file():
            next_step = f'Continue with: python3 {command} --resume {run_dir}'
        else:
            next_step = f'Nothing to resume: start it again with the same options and --output {run_dir}'
        say(f'\n{how}: stopped in epoch {stop.epoch}/{epochs}; {saved_state(run_dir, exports)}. {next_step}',
            file=sys.stderr)
    return status


# --------------------------------------------------------------------------------------------
# what every run's Lightning trainer gets
# --------------------------------------------------------------------------------------------

class EpochAxis(pl.Callback):
    """Every value a run logs to TensorBoard is plotted against the epoch, counted from 1 as the summary lines.

    Lightning writes what a module logs at an epoch's end at its global step (the child steps so
    far), unless a value named ``step`` is logged with it (``LoggerConnector.log_metrics``): this
    callback logs the epoch as ``step`` at the ends of the training and the test (validation)
    epochs. The commands write their own values (``search/*``, ``controller/*``, ``retrain/*``,
    the drawings) at the epoch too, so one run's tags share one x-axis.
    """

    @staticmethod
    def _log(trainer, module) -> None:
        module.log('step', float(trainer.current_epoch + 1), on_step=False, on_epoch=True, sync_dist=True)

    def on_train_epoch_end(self, trainer, module) -> None:
        self._log(trainer, module)

    def on_validation_epoch_end(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, module)


def run_callbacks(run_dir: Path, monitors: Sequence[pl.Callback], *, progress_bar: bool,
                  after_last_step: str = '') -> tuple[list[pl.Callback], StopWatcher]:
    """The callbacks of a run, in the order they must run at an epoch's end: the progress bar,
    the command's ``monitors`` (summaries, export), the TensorBoard x-axis (:class:`EpochAxis`),
    the RNG state, the stop watcher, and last the checkpoint (so it holds the RNG state after the
    monitors drew from it). Returns them and the :class:`StopWatcher` to pass to :func:`fit_watched`."""
    stop = StopWatcher()
    bar = [EpochProgressBar(after_last_step=after_last_step)] if progress_bar else []
    return [*bar, *monitors, EpochAxis(), RngStateCallback(), stop, checkpoint_callback(run_dir)], stop


def trainer_kwargs(run_dir: str | os.PathLike, *, settings: dict[str, Any] | None = None,
                   progress_bar: bool = True) -> dict[str, Any]:
    """``pl.Trainer`` arguments for a run folder: TensorBoard logs in ``run_dir/tensorboard`` (with
    ``settings`` as its ``hparams.yaml``), atomic checkpoints, Lightning's own files under
    ``run_dir``, its progress bar on or off (:func:`run_callbacks` adds ours)."""
    from pytorch_lightning.loggers import TensorBoardLogger
    logger = TensorBoardLogger(str(run_dir), name='tensorboard', version='', default_hp_metric=False)
    if settings:
        logger.log_hyperparams(settings)
    return dict(default_root_dir=str(run_dir), enable_checkpointing=True, plugins=[AtomicCheckpointIO()],
                enable_model_summary=False, enable_progress_bar=progress_bar, logger=logger)
