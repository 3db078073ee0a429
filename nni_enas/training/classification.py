"""The training recipe of a child network: loss (with the auxiliary head), optimizer, schedule.

:class:`ChildTraining` is the "evaluator" piece of the NNI split (space / algorithm / recipe):
the ENAS module wraps it during the search, and retraining uses it alone on a fixed network.
"""

from __future__ import annotations

import sys
from typing import Callable

import torch
import torch.nn as nn
from nni.nas.evaluator.pytorch.lightning import LightningModule

from nni_enas.arguments import check_number
from nni_enas.training.cuda_graphs import _holds_choice, graph_supernet, release_graphs, use_cuda_graphs

__all__ = ['ChildTraining', 'accuracy', 'enas_sgd', 'NonFiniteLossError']


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy of a batch, a 0-dim tensor."""
    return (logits.argmax(dim=1) == target).float().mean()


def enas_sgd(parameters, *, lr_max: float = 0.05, lr_min: float = 5e-4, weight_decay: float = 5e-4,
             t0: int = 10, t_mult: int = 2):
    """The ENAS child optimizer: Nesterov SGD (momentum 0.9) with cosine warm restarts per epoch (spec D.3).

    PyTorch's default step (foreach on CUDA), not ``fused=True``: the fused SGD step of torch 2.14
    fails with a ``TypeError`` as soon as a step holds a parameter without momentum buffer after
    the first step, which is every ENAS child step that samples an op for the first time (only
    the sampled path has gradients). Lightning also refuses to clip gradients for fused
    optimizers under ``16-mixed``.
    """
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
        ``metrics(logits, target) -> dict[str, float | tensor]``, logged with ``log_prefix``;
        top-1 accuracy by default.
    aux_weight
        Weight of the auxiliary loss when the network returns ``(logits, aux_logits)`` (0.4).
    drop_path_steps
        Total training steps for the drop-path schedule of networks that have
        ``set_drop_path_progress`` (the micro space); ``None`` leaves drop path alone.
    cuda_graphs
        ``'auto'``: on a CUDA device, a fixed network (no choices: retraining) runs its training
        forward + backward and its evaluation forward as CUDA graphs
        (:mod:`nni_enas.training.cuda_graphs`), inside whatever autocast the trainer's precision sets;
        the optimizer step stays eager (the LR changes per epoch). A supernet is left to the
        search (:func:`~nni_enas.training.cuda_graphs.graph_supernet`). Off under data parallelism.
        ``'off'``: plain eager PyTorch.
    log_prefix
        Prefix of the logged training loss and metrics: ``'child_'`` (``child_loss``,
        ``child_acc``: the search's child models) or, for a fixed network, e.g. ``'train_'``.
        The held-out values are always ``test_loss`` and ``test_<metric>``.

    Notes
    -----
    No host-device sync per step, and no Lightning ``self.log`` per step (each call costs ~0.6 ms
    of CPU time on the dev machine, more than the rest of Lightning's step): the loss and the
    metrics, weighted by batch size, are summed on the device, and their epoch means go to
    Lightning once, at the epoch's last step (or its end, if it stops early), weighted by the
    epoch's images so that data-parallel ranks reduce to the exact mean. Non-finite losses show
    in that sum: it is read every ``nonfinite_check_every`` steps and at the epoch's last step,
    raising :class:`NonFiniteLossError` (``None``: not checked here; the ENAS module sets it,
    as it checks the child losses itself once an epoch).
    """

    nonfinite_check_every: int | None = 25

    def __init__(self, loss: Callable | None = None, optimizer=None, lr_scheduler=None,
                 metrics: Callable | None = None, aux_weight: float = 0.4, drop_path_steps: int | None = None,
                 cuda_graphs: str = 'auto', log_prefix: str = 'child_'):
        check_number('aux_weight', aux_weight, low=0)
        check_number('drop_path_steps', drop_path_steps, low=1, integer=True, optional=True)
        super().__init__()
        use_cuda_graphs(cuda_graphs, None)        # ValueError now on a bad mode, not at fit time
        self.criterion = loss or nn.CrossEntropyLoss()
        self._optimizer = optimizer
        self._lr_scheduler = lr_scheduler
        self.metrics_fn = metrics or (lambda logits, y: {'acc': accuracy(logits, y)})
        self.aux_weight = aux_weight
        self.drop_path_steps = drop_path_steps
        self.cuda_graphs = cuda_graphs
        self.log_prefix = log_prefix
        self.graphed: list[str] = []          # what enable_cuda_graphs wrapped
        # this epoch's sums of (loss, *metrics) x batch size, on the device, and its images
        self._epoch_names: list[str] = []
        self._epoch_sums: torch.Tensor | None = None
        self._epoch_images = 0
        self._last_clean_step = -1
        self._step_in_epoch = 0

    def forward(self, x):
        return self.model(x)

    # -- CUDA graphs ----------------------------------------------------------------------------

    def on_fit_start(self):
        self.enable_cuda_graphs()

    def teardown(self, stage=None):
        # Lightning has just moved the network to the CPU and freed cuBLAS's workspaces: its
        # graphs could not replay; the next fit/validate/test captures afresh
        release_graphs(self)
        return super().teardown(stage)

    def enable_cuda_graphs(self, device=None, wrapper=None) -> list[str]:
        """Graph the fixed network when ``cuda_graphs`` and the device allow it; returns the wrapped names.

        ``device`` defaults to the module's device; ``wrapper`` is for CPU stand-in tests.
        """
        device = self.device if device is None else device
        if not use_cuda_graphs(self.cuda_graphs, device) or self.graphed:
            return self.graphed
        model = self.model
        if _holds_choice(model):
            return []           # a supernet: the search graphs its modules (graph_supernet)
        if getattr(model, '_compiled_call_impl', None) is not None:
            self._note('CUDA graphs are off: the network is compiled with torch.compile')
            return []
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1:
            # DDP's gradient all-reduce hooks and graph capture have not been tested together here.
            self._note(f'CUDA graphs are off under data parallelism ({world} processes)')
            return []
        self.graphed = graph_supernet(model, self.cuda_graphs, device=device, wrapper=wrapper)
        return self.graphed

    def _note(self, text: str) -> None:
        """One info line on stderr (rank 0 only)."""
        if self._trainer is None or self.trainer.is_global_zero:
            print(f'note: {text}', file=sys.stderr, flush=True)

    # -- steps ----------------------------------------------------------------------------------

    def on_train_epoch_start(self):
        self._epoch_sums = None
        self._epoch_images = 0
        self._last_clean_step = -1

    def _check_finite(self, step: int, force: bool = False) -> None:
        """Raise if a loss since the last check was NaN/inf: one host read every few steps, not every step.

        A non-finite loss makes the epoch's loss sum non-finite, and it stays so.
        """
        if self.nonfinite_check_every is None or self._epoch_sums is None:
            return
        if not (force or (step + 1) % self.nonfinite_check_every == 0 or step + 1 >= self._epoch_steps()):
            return
        if not bool(torch.isfinite(self._epoch_sums[0])):
            raise NonFiniteLossError(f'the training loss became nan/inf at epoch {self.current_epoch}, '
                                     f'steps {self._last_clean_step + 1}-{step}; stopping (lower the learning rate?)')
        self._last_clean_step = step

    def _epoch_steps(self) -> float:
        return self.trainer.num_training_batches if self._trainer is not None else float('inf')

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.drop_path_steps and hasattr(self.model, 'set_drop_path_progress'):
            self.model.set_drop_path_progress((self.global_step + 1) / self.drop_path_steps)
        out = self.model(x)
        logits, aux = out if isinstance(out, tuple) else (out, None)
        loss = self.criterion(logits, y)
        if aux is not None:
            loss = loss + self.aux_weight * self.criterion(aux, y)
        with torch.no_grad():
            self._add_to_epoch(loss.detach(), self.metrics_fn(logits.detach(), y), len(y))
        self._step_in_epoch = batch_idx
        self._check_finite(batch_idx)
        if batch_idx + 1 >= self._epoch_steps():
            self._log_epoch_means()
        return loss

    def _add_to_epoch(self, loss: torch.Tensor, metrics: dict, batch_size: int) -> None:
        """Add this batch's loss and metrics, times its size, to the epoch's sums (a few kernels, no sync)."""
        values = [loss, *metrics.values()]
        row = torch.stack([torch.as_tensor(v, device=loss.device).float().reshape(()) for v in values]) * batch_size
        if self._epoch_sums is None:
            self._epoch_names = ['loss', *metrics]
            self._epoch_sums = row
        else:
            self._epoch_sums += row
        self._epoch_images += batch_size

    def _log_epoch_means(self) -> None:
        """Hand the epoch's means to Lightning, once (read, and summed over ranks, at the epoch's end)."""
        if self._epoch_sums is None:
            return
        means = self._epoch_sums / self._epoch_images
        for i, name in enumerate(self._epoch_names):
            self.log(f'{self.log_prefix}{name}', means[i], on_step=False, on_epoch=True, prog_bar=True,
                     batch_size=self._epoch_images, sync_dist=True)
        self._epoch_sums = None

    def on_train_epoch_end(self):
        self._check_finite(self._step_in_epoch, force=True)
        self._log_epoch_means()        # an epoch that stopped before its last step

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

