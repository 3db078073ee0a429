"""The search's result: the best of K architectures sampled from the trained controller.

The paper derives the architecture to retrain from the final controller: sample K
architectures, score each on the same validation minibatch(es), keep the best (spec Part 1).
:meth:`EnasModule.export_epoch <nni_enas.search.enas.EnasModule.export_epoch>` does that after an
epoch's controller phase and returns an :class:`EpochExport`; :class:`ArchitectureExport` is
the Lightning callback that does it after every epoch (and writes ``exported.json``);
:func:`write_exported` writes one in our format (:mod:`nni_enas.architecture`).

``exported.json`` holds the best candidate of the *last finished epoch* (the current
controller's choice), not the best score seen over all epochs: scores of different epochs come
from different shared weights and are not comparable, and the paper derives from the final
controller.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pytorch_lightning as pl

__all__ = ['EpochExport', 'ArchitectureExport', 'write_exported', 'export_record']


@dataclass
class EpochExport:
    """One export: the best of ``num_candidates`` architectures sampled from the controller.

    Attributes
    ----------
    arch
        The best candidate, ``{label: value}`` as ``space.freeze`` takes it.
    reward
        Its score: the reward metric's mean over ``candidate_batches`` validation minibatches
        (minus the metric when it is minimised, e.g. ``-val_mse``), without the entropy bonus.
    greedy
        The controller's most likely architecture (argmax of every decision).
    probabilities
        Per label, the controller's probability of each candidate along the greedy path.
    epoch
        The epoch (counted from 1) whose controller produced it; ``None`` outside a fit.
    mean_reward
        The epoch's mean controller reward (with the entropy bonus).
    num_candidates, candidate_batches
        How it was chosen.
    seconds
        Time spent choosing it.
    controller_version
        Controller updates done before it (tells whether the controller changed since).
    """

    arch: dict[str, Any]
    reward: float
    greedy: dict[str, Any]
    probabilities: dict[str, list[float]] = field(default_factory=dict)
    epoch: int | None = None
    mean_reward: float | None = None
    num_candidates: int = 1
    candidate_batches: int = 1
    seconds: float = 0.0
    controller_version: int = 0


def export_record(space, export: EpochExport, *, vocabulary: list[str] | None = None, **provenance) -> dict[str, Any]:
    """The ``exported.json`` record of ``export`` (our spaces only), with the recurrent space's ``vocabulary``."""
    from nni_enas.architecture import architecture_record
    if not (hasattr(space, 'name') and hasattr(space, 'args')):
        raise TypeError(f'exported.json holds architectures of nni_enas spaces (MacroSpace, MicroSpace), not of '
                        f'{type(space).__name__}; use the architecture dict (EpochExport.arch) instead')
    facts = dict(epoch=export.epoch, reward=export.reward, mean_reward=export.mean_reward,
                 num_candidates=export.num_candidates, candidate_batches=export.candidate_batches,
                 greedy=export.greedy)
    # facts first, then time and provenance; the export's facts win over provenance fields of the same name
    fields = {**facts, 'time': time.strftime('%Y-%m-%dT%H:%M:%S'), **provenance, **facts}
    if vocabulary is not None:
        fields['vocabulary'] = vocabulary         # a top-level field of the record, not provenance
    return architecture_record(space, export.arch, **fields)


def write_exported(paths: str | os.PathLike | Sequence[str | os.PathLike], space, export: EpochExport, *,
                   vocabulary: list[str] | None = None, **provenance) -> dict[str, Any]:
    """Write ``export`` as ``exported.json`` (our format) to one path or several; returns the record.

    The record is validated against ``space`` and written atomically (temp file, then rename)
    by :func:`nni_enas.architecture.save_architecture`. ``provenance`` adds fields (e.g.
    ``dataset``, ``seed``, ``epochs``, ``run_dir``); ``vocabulary`` (the recurrent space: the
    words, id = index) becomes the record's ``"vocabulary"``.

    Examples
    --------
    >>> export = module.export_epoch()            # after a fit, or ArchitectureExport(...).last
    >>> write_exported('exported.json', space, export, dataset='cifar10')
    """
    from nni_enas.architecture import save_architecture
    from nni_enas.files import write_json_atomic
    record = export_record(space, export, vocabulary=vocabulary, **provenance)
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    for i, path in enumerate(paths):
        if i == 0:
            save_architecture(path, record)      # validated
        else:
            write_json_atomic(path, record)
    return record


class ArchitectureExport(pl.Callback):
    """After every epoch: the best of K architectures from the trained controller, optionally written.

    Lightning runs callbacks' ``on_train_epoch_end`` before the module's, and ``ModelCheckpoint``
    after both: this callback first makes the module finish the epoch (its controller phase,
    :meth:`~nni_enas.search.enas.EnasModule.finish_epoch`), then exports
    (:meth:`~nni_enas.search.enas.EnasModule.export_epoch`), so the checkpoint written next holds the
    trained controller and the random state after the export's sampling (a resumed run continues
    exactly). Callbacks listed after this one see the epoch's result in :attr:`last`.

    Parameters
    ----------
    paths
        Where to write ``exported.json`` (one path or several; none: keep the result in memory).
        Writing needs our spaces (:func:`write_exported`).
    space
        The (unmutated) model space the record describes; required with ``paths``.
    provenance
        Extra provenance fields, or a callable ``(trainer) -> dict`` evaluated at each epoch
        (``epochs`` defaults to the trainer's ``max_epochs``; the export's own fields, such as
        ``epoch`` and ``reward``, cannot be overridden).
    vocabulary
        The recurrent space's words (id = index), written as the record's ``"vocabulary"``.

    Attributes
    ----------
    last
        The last epoch's :class:`EpochExport`.
    record
        The last record written (``None`` when nothing is written).

    Examples
    --------
    >>> export = ArchitectureExport('exported.json', space=MacroSpace(num_layers=4, channels=8))
    >>> EnasTrainer(space, ..., callbacks=[export]).fit()
    >>> export.last.arch, export.last.reward
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike] | None = None, space=None,
                 provenance: dict[str, Any] | Callable[[pl.Trainer], dict[str, Any]] | None = None,
                 vocabulary: list[str] | None = None):
        if paths is not None and space is None:
            raise ValueError('ArchitectureExport needs the space to write exported.json')
        self.paths = None if paths is None else [Path(p) for p in
                                                 ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
        self.space = space
        self.provenance = provenance
        self.vocabulary = vocabulary
        self.last: EpochExport | None = None
        self.record: dict[str, Any] | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        self.last = pl_module.export_epoch()
        if self.paths:
            extra = self.provenance(trainer) if callable(self.provenance) else dict(self.provenance or {})
            self.record = write_exported(self.paths, self.space, self.last, vocabulary=self.vocabulary,
                                         **{'epochs': trainer.max_epochs, **extra})
