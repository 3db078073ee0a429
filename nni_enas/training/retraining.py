"""Retraining an exported architecture from scratch: the pieces ``retrain.py`` puts together.

* :func:`final_space_args`: the space arguments of the final network of a record (the paper's
  final widths, dropout, auxiliary head and drop path, each overridable);
* :class:`ShardedBatches` and :class:`RetrainData`: the batches of one data-parallel rank, a
  different shard of the training set every epoch (Lightning cannot inject a
  ``DistributedSampler``: :class:`~nni_enas.data.images.BatchLoader` is not a DataLoader), and its
  shard of the test set;
* :class:`ReplicaHashes`: the weight hashes of all ranks at the end (replicas must agree).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn as nn

from nni_enas.architecture import count_parameters
from nni_enas.data.images import BatchLoader, ImageTensors

__all__ = ['final_space_args', 'count_parameters', 'ShardedBatches', 'RetrainData',
           'weights_sha256', 'ReplicaHashes']

def final_space_args(space: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Space-argument overrides for the final network from retraining ``settings``.

    ``settings`` holds the CLI names of :data:`nni_enas.paper.FINAL` (``layers``, ``channels``,
    ``dropout``, ``aux_weight``, ``drop_path_prob``); ``layers=None`` keeps the record's depth.
    The micro auxiliary head is built when ``aux_weight > 0``.
    """
    args: dict[str, Any] = {'final': True, 'channels': settings['channels'], 'dropout': settings['dropout']}
    if settings.get('layers') is not None:
        args['num_layers'] = settings['layers']
    if space == 'micro':
        args['auxiliary'] = settings.get('aux_weight', 0.0) > 0
        args['drop_path_prob'] = settings.get('drop_path_prob', 0.0)
    return args


class _EpochSampler:
    """What Lightning calls ``set_epoch`` on (it looks for ``loader.sampler.set_epoch``)."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class ShardedBatches:
    """The batches of rank ``rank`` out of ``world_size``, built on the device by :class:`BatchLoader`.

    Training (``shuffle=True``): every epoch all ranks draw the same permutation (seeded by
    ``seed`` and the epoch), pad it to a multiple of ``world_size`` by repeating its head, and
    take every ``world_size``-th image from position ``rank``: the shards are disjoint, cover
    the data, and give every rank the same number of batches (DDP needs that). The crops, flips
    and cutout come from a generator seeded by (seed, epoch, rank), so an epoch replays exactly
    after a resume. Lightning sets the epoch through ``loader.sampler.set_epoch``.

    Evaluation (``shuffle=False``): rank ``rank`` takes images ``rank, rank + world_size, ...``
    in order, without padding (nothing is counted twice).

    Parameters
    ----------
    data
        The images.
    batch_size
        Images per batch on this rank (the per-device batch).
    rank, world_size
        This process's data-parallel rank and the number of processes.
    seed
        Seed of the permutations and the augmentation.
    shuffle, augment, cutout, device
        As for :class:`~nni_enas.data.images.BatchLoader`.
    channels_last
        Serve batches in channels-last memory format (faster convolutions on recent GPUs).
    """

    def __init__(self, data: ImageTensors, batch_size: int, *, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True, augment: bool = True, cutout: int = 0,
                 device: torch.device | str | None = None, channels_last: bool = False):
        if not 0 <= rank < world_size:
            raise ValueError(f'rank {rank} is not in 0..{world_size - 1}')
        if batch_size < 1:
            raise ValueError(f'batch_size must be at least 1, got {batch_size}')
        self.data = data.to(device) if device is not None else data
        self.batch_size = batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle, self.augment, self.cutout = shuffle, augment, cutout
        self.channels_last = channels_last
        self.sampler = _EpochSampler()
        self.batch_sampler = None     # Lightning inspects both to tell a shuffling loader

    @property
    def shard_size(self) -> int:
        n = len(self.data)
        if self.shuffle:
            return math.ceil(n / self.world_size)
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        return math.ceil(self.shard_size / self.batch_size)

    def _seed(self, epoch: int, rank: int = -1) -> int:
        return ((self.seed * 1_000_003 + epoch) * 1009 + rank + 1) % 2**63

    def shard(self, epoch: int) -> torch.Tensor:
        """The indices of this rank's images in ``epoch``, in the order they are served."""
        n = len(self.data)
        if not self.shuffle:
            return torch.arange(self.rank, n, self.world_size)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self._seed(epoch)))
        padded = torch.cat([order, order[:self.shard_size * self.world_size - n]])
        return padded[self.rank::self.world_size]

    def __iter__(self):
        epoch = self.sampler.epoch
        index = self.shard(epoch).to(self.data.images.device)
        part = ImageTensors(self.data.images[index], self.data.labels[index], self.data.classes,
                            mean=self.data.mean, std=self.data.std)
        generator = torch.Generator().manual_seed(self._seed(epoch, self.rank))
        batches = BatchLoader(part, self.batch_size, shuffle=False, augment=self.augment, cutout=self.cutout,
                              generator=generator)
        for x, y in batches:
            yield (x.contiguous(memory_format=torch.channels_last) if self.channels_last else x), y


class RetrainData(pl.LightningDataModule):
    """Training set (sharded, augmented) and test set (sharded, plain) for each data-parallel rank.

    The loaders are built when Lightning asks for them, once the rank and the device are known.
    """

    def __init__(self, train: ImageTensors, test: ImageTensors, *, batch_size: int, eval_batch_size: int,
                 seed: int = 0, cutout: int = 0, channels_last: bool = False):
        super().__init__()
        self.train, self.test = train, test
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.cutout, self.channels_last = seed, cutout, channels_last

    def _loader(self, data: ImageTensors, batch_size: int, train: bool) -> ShardedBatches:
        trainer = self.trainer
        return ShardedBatches(data, batch_size, rank=trainer.global_rank, world_size=trainer.world_size,
                              seed=self.seed, shuffle=train, augment=train, cutout=self.cutout if train else 0,
                              device=trainer.strategy.root_device, channels_last=self.channels_last)

    def train_dataloader(self) -> ShardedBatches:
        return self._loader(self.train, self.batch_size, train=True)

    def val_dataloader(self) -> ShardedBatches:
        return self._loader(self.test, self.eval_batch_size, train=False)


def weights_sha256(net: nn.Module) -> str:
    """SHA-256 of a network's state dict (parameters and buffers, in key order)."""
    digest = hashlib.sha256()
    for key, value in net.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class ReplicaHashes(pl.Callback):
    """At the end of training, every rank hashes its weights; ``.hashes`` lists them by rank.

    Data-parallel replicas must end identical; a difference means they diverged.
    """

    def __init__(self):
        self.hashes: list[str] = []

    def on_train_end(self, trainer, pl_module) -> None:
        mine = weights_sha256(pl_module.model)
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            hashes: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(hashes, mine)
            self.hashes = list(hashes)
        else:
            self.hashes = [mine]
