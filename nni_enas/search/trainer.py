"""``EnasTrainer``: the ENAS search behind the NNI 2.x trainer API users already know.

It composes the pieces: :class:`~nni_enas.search.enas.Enas`'s mutation hooks turn the space into a
supernet, :class:`~nni_enas.training.classification.ChildTraining` is the recipe, :class:`~nni_enas.search.enas.EnasModule`
the alternation, and a Lightning ``Trainer`` runs the epochs (progress bar, logging, checkpoints).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Subset

from nni_enas.arguments import check_number
from nni_enas.search.enas import Enas, EnasModule, check_enas_arguments
from nni_enas.search.export import ArchitectureExport
from nni_enas.training.classification import ChildTraining
from nni_enas.training.cuda_graphs import use_cuda_graphs

__all__ = ['EnasTrainer']


def _device_kwargs(device) -> dict[str, Any]:
    """``pl.Trainer``'s ``accelerator`` and ``devices`` for ``device`` (``'cuda:1'`` is GPU 1, not the first GPU)."""
    if device is None or str(device) == 'auto':
        return dict(accelerator='gpu' if torch.cuda.is_available() else 'cpu', devices=1)
    device = torch.device(device)
    if device.type != 'cuda':
        return dict(accelerator='cpu', devices=1)
    return dict(accelerator='gpu', devices=1 if device.index is None else [device.index])


class EnasTrainer:
    """ENAS search with the NNI 2.x ``EnasTrainer`` signature.

    Parameters
    ----------
    model
        The model space (e.g. :class:`~nni_enas.MacroSpace`); it becomes the supernet in place.
    loss
        Child loss ``loss(logits, target)``.
    metrics
        ``metrics(logits, target) -> dict``, logged for the child model.
    reward_function
        ``reward_function(logits, target)`` -> the controller's reward on a validation minibatch;
        ``None`` with ``reward_metric_name``, or for top-1 accuracy.
    optimizer
        Optimizer of the shared weights (built on ``model.parameters()``).
    num_epochs
        Search epochs.
    dataset
        A dataset split like NNI 2.x (first half trains the shared weights, second half rewards
        the controller), or a ``(train, valid)`` pair of datasets.
    batch_size, workers
        DataLoader settings (ignored when ``dataloaders`` is given).
    device
        ``'cpu'``, ``'cuda'`` (the first GPU), ``'cuda:N'`` (GPU N) or ``None``/``'auto'``.
    log_frequency
        Lightning logging interval in steps.
    grad_clip, entropy_weight, skip_weight, baseline_decay, ctrl_lr, ctrl_steps_aggregate, ctrl_steps, ctrl_kwargs
        See :class:`~nni_enas.search.enas.EnasModule`.
    lr_scheduler
        Epoch-wise LR scheduler of ``optimizer``.
    dataloaders
        ``(train_loader, reward_loader)`` to use instead of building loaders from ``dataset``.
    num_candidates, candidate_batches, reward_train_mode, aux_weight
        Export and reward settings, see :class:`~nni_enas.search.enas.EnasModule` and
        :class:`~nni_enas.training.classification.ChildTraining`.
    reward_metric_name, reward_metric_mode
        Reward the controller with a metric the recipe's ``validation_step`` logs instead of
        ``reward_function`` (:class:`~nni_enas.training.classification.ChildTraining` logs ``test_loss`` and
        ``test_<name>`` for each of ``metrics``, e.g. ``test_acc``); see
        :class:`~nni_enas.search.enas.EnasModule`.
    cuda_graphs
        ``'auto'`` (CUDA graphs on a CUDA device) or ``'off'``.
    export_path
        Write ``exported.json`` (the best of ``num_candidates``, :mod:`nni_enas.search.export`) there
        after every epoch; needs a :class:`~nni_enas.MacroSpace` / :class:`~nni_enas.MicroSpace`.
    callbacks, trainer_kwargs
        Extra Lightning callbacks and ``pl.Trainer`` arguments (e.g. ``default_root_dir``, ``logger``).
    recipe
        The recipe that trains each child model, instead of
        ``ChildTraining(loss, optimizer, lr_scheduler, metrics, aux_weight)`` (then ``loss``,
        ``metrics``, ``optimizer``, ``lr_scheduler`` and ``aux_weight`` are not used): e.g.
        :class:`~nni_enas.training.language_model.LanguageModelTraining` for the recurrent space,
        with ``reward_function=PerplexityReward()``.

    Every numeric argument is checked before the space is touched (``num_epochs`` and
    ``batch_size`` >= 1, ``workers`` >= 0, ``aux_weight`` >= 0, and those of
    :class:`~nni_enas.search.enas.EnasModule`): a ``ValueError`` or ``TypeError`` naming the
    argument, its value and the allowed range.

    Examples
    --------
    >>> space = MacroSpace(num_layers=4, channels=8)
    >>> trainer = EnasTrainer(space, nn.CrossEntropyLoss(), None, accuracy,
    ...                       torch.optim.SGD(space.parameters(), 0.05), 1, dataset)
    >>> trainer.fit()
    >>> arch = trainer.export()
    """

    def __init__(self, model, loss, metrics, reward_function, optimizer, num_epochs, dataset,
                 batch_size=64, workers=4, device=None, log_frequency=None, grad_clip=5.0,
                 entropy_weight=0.0001, skip_weight=0.8, baseline_decay=0.999, ctrl_lr=0.00035,
                 ctrl_steps_aggregate=20, ctrl_steps=None, ctrl_kwargs=None, *,
                 lr_scheduler=None, dataloaders: tuple | None = None, num_candidates: int = 100,
                 candidate_batches: int = 1, reward_train_mode: bool = False, aux_weight: float = 0.4,
                 callbacks: list | None = None, trainer_kwargs: dict[str, Any] | None = None,
                 reward_metric_name: str | None = None, reward_metric_mode: str | None = None,
                 cuda_graphs: str = 'auto', export_path: str | None = None, recipe=None):
        # Every argument checked before the space is turned into a supernet (in place).
        for name, value, low in (('num_epochs', num_epochs, 1), ('batch_size', batch_size, 1), ('workers', workers, 0)):
            check_number(name, value, low=low, integer=True)
        check_number('log_frequency', log_frequency, low=1, integer=True, optional=True)
        check_number('aux_weight', aux_weight, low=0)
        check_enas_arguments(
            grad_clip=grad_clip, entropy_weight=entropy_weight, skip_weight=skip_weight, baseline_decay=baseline_decay,
            ctrl_lr=ctrl_lr, ctrl_steps_aggregate=ctrl_steps_aggregate, ctrl_steps=ctrl_steps, ctrl_kwargs=ctrl_kwargs,
            num_candidates=num_candidates, candidate_batches=candidate_batches, reward_train_mode=reward_train_mode,
            reward_metric_name=reward_metric_name, reward_metric_mode=reward_metric_mode, reward_function=reward_function)
        use_cuda_graphs(cuda_graphs, None)
        self.space = model
        self.num_epochs = num_epochs
        self.device = device
        self.strategy = Enas()
        self.supernet = self.strategy.mutate_model(model)
        if recipe is None:
            recipe = ChildTraining(loss, optimizer, lr_scheduler, metrics=metrics, aux_weight=aux_weight)
        self.module = EnasModule(
            recipe, reward_function=reward_function, reward_metric_name=reward_metric_name,
            reward_metric_mode=reward_metric_mode, cuda_graphs=cuda_graphs, grad_clip=grad_clip,
            entropy_weight=entropy_weight, skip_weight=skip_weight, baseline_decay=baseline_decay, ctrl_lr=ctrl_lr,
            ctrl_steps_aggregate=ctrl_steps_aggregate, ctrl_steps=ctrl_steps, ctrl_kwargs=ctrl_kwargs,
            num_candidates=num_candidates, candidate_batches=candidate_batches, reward_train_mode=reward_train_mode)
        self.module.set_model(self.supernet)
        self.train_loader, self.module.reward_dataloader = dataloaders or self._loaders(
            dataset, batch_size, workers, pin_memory=_device_kwargs(device)['accelerator'] == 'gpu')
        kwargs = dict(max_epochs=num_epochs, **_device_kwargs(device), num_sanity_val_steps=0,
                      enable_model_summary=False, logger=False, enable_checkpointing=False,
                      log_every_n_steps=log_frequency or 50)
        kwargs.update(trainer_kwargs or {})
        callbacks = list(callbacks or [])
        if export_path is not None:
            callbacks.insert(0, ArchitectureExport(export_path, space=model))
        self.trainer = pl.Trainer(callbacks=callbacks, **kwargs)

    @property
    def controller(self):
        return self.module.controller

    @staticmethod
    def _loaders(dataset, batch_size, workers, pin_memory=False):
        if isinstance(dataset, (tuple, list)):
            train, valid = dataset
        else:
            n = len(dataset)
            train, valid = Subset(dataset, range(n // 2)), Subset(dataset, range(n // 2, n))
        # pinned batches on a GPU: Lightning's non_blocking copy is then asynchronous (from
        # pageable memory the driver may wait for the GPU queue)
        kwargs = dict(batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=pin_memory)
        return DataLoader(train, shuffle=True, **kwargs), DataLoader(valid, shuffle=True, **kwargs)

    def fit(self, ckpt_path: str | None = None) -> None:
        """Run the search (``num_epochs`` epochs), resuming from ``ckpt_path`` if given."""
        self.trainer.fit(self.module, train_dataloaders=self.train_loader, ckpt_path=ckpt_path)

    def export(self) -> dict[str, Any]:
        """The best of ``num_candidates`` architectures sampled from the trained controller.

        After a fit with an export every epoch (``export_path`` or an
        :class:`~nni_enas.search.export.ArchitectureExport` callback) it is the last epoch's export.
        """
        return self.module.export()
