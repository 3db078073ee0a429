"""The training recipe of a child network: loss (with the auxiliary head), optimizer, schedule.

:class:`ChildTraining` is the "evaluator" piece of the NNI split (space / algorithm / recipe):
the ENAS module wraps it during the search, and retraining uses it alone on a fixed network.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
from nni.nas.evaluator.pytorch.lightning import LightningModule

__all__ = ['ChildTraining', 'accuracy', 'enas_sgd', 'NonFiniteLossError']


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy of a batch, a 0-dim tensor."""
    return (logits.argmax(dim=1) == target).float().mean()


def enas_sgd(parameters, *, lr_max: float = 0.05, lr_min: float = 5e-4, weight_decay: float = 5e-4,
             t0: int = 10, t_mult: int = 2):
    """The ENAS child optimizer: Nesterov SGD (momentum 0.9) with cosine warm restarts per epoch (spec D.3)."""
    optimizer = torch.optim.SGD(parameters, lr=lr_max, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=t0, T_mult=t_mult, eta_min=lr_min)
    return optimizer, schedule


class ChildTraining(LightningModule):
    """Supervised training of one (child or fixed) network.

    Parameters
    ----------
    loss
        Criterion ``loss(logits, target)``.
    optimizer
        An optimizer over the model's parameters, or a callable ``parameters -> optimizer`` or
        ``parameters -> (optimizer, lr_scheduler)``.
    lr_scheduler
        An epoch-wise LR scheduler for ``optimizer`` (when ``optimizer`` is an instance).
    metrics
        ``metrics(logits, target) -> dict[str, float | tensor]``, logged with a ``child_`` prefix;
        top-1 accuracy by default.
    aux_weight
        Weight of the auxiliary loss when the network returns ``(logits, aux_logits)`` (0.4).
    drop_path_steps
        Total training steps for the drop-path schedule of networks that have
        ``set_drop_path_progress`` (the micro space); ``None`` leaves drop path alone.
    """

    def __init__(self, loss: Callable | None = None, optimizer=None, lr_scheduler=None,
                 metrics: Callable | None = None, aux_weight: float = 0.4, drop_path_steps: int | None = None):
        super().__init__()
        self.criterion = loss or nn.CrossEntropyLoss()
        self._optimizer = optimizer
        self._lr_scheduler = lr_scheduler
        self.metrics_fn = metrics or (lambda logits, y: {'acc': accuracy(logits, y)})
        self.aux_weight = aux_weight
        self.drop_path_steps = drop_path_steps

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.drop_path_steps and hasattr(self.model, 'set_drop_path_progress'):
            self.model.set_drop_path_progress((self.global_step + 1) / self.drop_path_steps)
        out = self.model(x)
        logits, aux = out if isinstance(out, tuple) else (out, None)
        loss = self.criterion(logits, y)
        if aux is not None:
            loss = loss + self.aux_weight * self.criterion(aux, y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f'the training loss is {loss.item()} at epoch {self.current_epoch}, '
                                     f'step {batch_idx}; stopping (lower the learning rate?)')
        # sync_dist: under data parallelism the epoch means cover every rank's shard (no-op on one device)
        self.log('child_loss', loss.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y),
                 sync_dist=True)
        with torch.no_grad():
            for name, value in self.metrics_fn(logits.detach(), y).items():
                self.log(f'child_{name}', value, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y),
                         sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        """Evaluate a held-out batch (retraining: the test set); logs ``test_loss`` and ``test_<metric>``.

        Per-epoch means weighted by batch size, summed over data-parallel ranks (each rank may
        evaluate its own shard).
        """
        x, y = batch
        out = self.model(x)
        logits = out[0] if isinstance(out, tuple) else out
        kwargs = dict(on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        self.log('test_loss', self.criterion(logits.float(), y), prog_bar=False, **kwargs)
        for name, value in self.metrics_fn(logits, y).items():
            self.log(f'test_{name}', value, prog_bar=True, **kwargs)

    def configure_optimizers(self):
        opt = self._optimizer
        if opt is None:
            opt = enas_sgd(self.model.parameters())
        elif callable(opt) and not isinstance(opt, torch.optim.Optimizer):
            opt = opt(self.model.parameters())
        schedule = self._lr_scheduler
        if isinstance(opt, tuple):
            opt, schedule = opt
        if schedule is None:
            return opt
        return {'optimizer': opt, 'lr_scheduler': {'scheduler': schedule, 'interval': 'epoch'}}
