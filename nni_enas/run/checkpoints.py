"""Checkpoint files of a run folder: where they are, how they are written, what they hold.

One file, ``<run folder>/checkpoints/last.ckpt`` (:data:`CHECKPOINT`), rewritten after every
epoch by Lightning's ``ModelCheckpoint`` (:func:`checkpoint_callback`). It holds what
Lightning saves (weights, optimizers, LR schedules, loop counters, callbacks' state) plus the
random-number generators (:class:`RngStateCallback`), so a run stopped at an epoch boundary
and resumed continues exactly as if it had not stopped.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from nni_enas.run.cli import fail
from nni_enas.files import atomic_write

__all__ = ['CHECKPOINT', 'checkpoint_path', 'AtomicCheckpointIO', 'RngStateCallback', 'checkpoint_callback',
           'last_checkpoint', 'checkpoint_epoch', 'saved_state']

CHECKPOINT = Path('checkpoints') / 'last.ckpt'


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    """``run_dir/checkpoints/last.ckpt`` (whether it exists or not)."""
    return Path(run_dir) / CHECKPOINT


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, with the temporary file beside the checkpoint.

    Lightning's own atomic save writes its temporary file to the system's temp folder and moves
    it; where that is another file system (a tmpfs ``/tmp``) the move is a copy, and a run killed
    during it leaves half a checkpoint. Here the temporary file is in the checkpoint's folder and
    synced before the rename (:func:`~nni_enas.files.atomic_write`), with the user's umask.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_write(path, binary=True, sync=True) as f:
            torch.save(checkpoint, f)


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

    One file, overwritten at each epoch end: the latest checkpoint under a fixed name
    (Lightning's ``save_last`` would write a second copy).
    """
    path = checkpoint_path(run_dir)
    return ModelCheckpoint(dirpath=path.parent, filename=path.stem, save_top_k=1, enable_version_counter=False,
                           every_n_epochs=1, save_on_train_epoch_end=True)


def last_checkpoint(run_dir: str | os.PathLike, command: str = 'search.py') -> Path:
    """``run_dir/checkpoints/last.ckpt`` (:class:`~nni_enas.run.cli.CliError` if the run has none yet)."""
    path = checkpoint_path(run_dir)
    if not path.is_file():
        fail(f'{run_dir} has no checkpoint ({CHECKPOINT}): the run stopped before finishing its first epoch, so '
             f'there is nothing to resume; start it again with: python3 {command} ... --output {run_dir}')
    return path


def checkpoint_epoch(path: str | os.PathLike) -> int:
    """Number of epochs completed in a Lightning checkpoint (:class:`~nni_enas.run.cli.CliError` if unreadable)."""
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=False, mmap=True)
        return int(checkpoint['epoch']) + 1
    except Exception as exc:  # noqa: BLE001 - any failure means the file cannot be used
        fail(f'{path}: cannot read the checkpoint ({type(exc).__name__}: {exc})')


def saved_state(run_dir: Path, exports: Sequence[Path] = ()) -> str:
    """What a stopped run left on disk, read back from it: the checkpoint's epoch and the exports'."""
    checkpoint = checkpoint_path(run_dir)
    if not checkpoint.is_file():
        return 'no epoch was completed, so nothing was saved'
    text = f'the checkpoint after epoch {checkpoint_epoch(checkpoint)} is {checkpoint}'
    if exports:
        try:
            export_epoch = json.loads(Path(exports[0]).read_text())['provenance']['epoch']
        except (OSError, ValueError, KeyError, TypeError):
            export_epoch = '?'
        text += f', the export of epoch {export_epoch} is ' + ' and '.join(str(p) for p in exports)
    return text
