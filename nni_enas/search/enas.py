"""The ENAS alternation (spec D.2): train the shared weights, then train the controller.

:class:`EnasModule` is an NNI one-shot Lightning module wrapped around a training recipe (any
NNI Lightning evaluator module, or our :class:`~nni_enas.training.classification.ChildTraining`). Each epoch:

1. child phase (Lightning's ordinary training steps): the controller samples all the epoch's
   child models at the epoch's start (it does not change during the phase); each minibatch
   trains its child model (a path through the shared weights) with one SGD step;
2. controller phase, at the epoch's end (:meth:`EnasModule.finish_epoch`, called from
   ``on_train_epoch_end``): ``ctrl_steps`` updates, each the average REINFORCE gradient of
   ``ctrl_steps_aggregate`` sampled children, rewarded by a validation metric on one validation
   minibatch plus an entropy bonus, against a moving-average baseline, plus the weighted skip
   penalty.

The controller lives on the CPU whatever device the child network is on (it is kept out of the
module's children, so Lightning never moves it); its state is saved in the module's
``state_dict`` (``controller.*``, ``baseline``) and its Adam optimizer in the checkpoint.

:class:`Enas` is the same algorithm as an NNI 3.0 ``OneShotStrategy``, for ``NasExperiment``.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from typing import Any, Callable, Iterator

import torch
from nni.nas.oneshot.pytorch.base_lightning import BaseOneShotLightningModule
from nni.nas.oneshot.pytorch.strategy import RandomOneShot
from pytorch_lightning.trainer.states import TrainerFn, TrainerStatus
from pytorch_lightning.utilities.data import extract_batch_size

from nni_enas.arguments import check_number
from nni_enas.search.controller import ControllerDivergedError, ReinforceController, check_controller_arguments
from nni_enas.training.cuda_graphs import graph_supernet, release_graphs, use_cuda_graphs
from nni_enas.search.export import EpochExport
from nni_enas.training.classification import NonFiniteLossError, accuracy
from nni_enas.spaces.supernet import mutation_hooks

__all__ = ['EnasModule', 'Enas', 'reward_direction', 'check_enas_arguments']

# Metric names that are minimised (the controller gets minus the metric as reward).
_MINIMISED = ('loss', 'mse', 'mae', 'error')
_CONTROLLER_OPTIMIZER_KEY = 'enas_controller_optimizer'


def reward_direction(metric_name: str, mode: str | None = None) -> str:
    """``'max'`` or ``'min'``: how the controller's reward follows ``metric_name``.

    ``mode`` wins when given; otherwise a name containing ``loss``, ``mse``, ``mae`` or
    ``error`` (any case) is minimised and every other name is maximised.
    """
    if mode is not None:
        if mode not in ('max', 'min'):
            raise ValueError(f"reward_metric_mode must be 'max' or 'min', got {mode!r}")
        return mode
    return 'min' if any(word in metric_name.lower() for word in _MINIMISED) else 'max'


# The numeric arguments of EnasModule (and Enas, EnasTrainer): check_number's keywords for each.
_RANGES = {
    'grad_clip': dict(low=0, optional=True),
    'entropy_weight': dict(low=0),
    'skip_weight': dict(low=0),
    'baseline_decay': dict(low=0, high=1, high_open=True),
    'ctrl_lr': dict(low=0, low_open=True),
    'ctrl_steps_aggregate': dict(low=1, integer=True),
    'ctrl_steps': dict(low=1, integer=True, optional=True),
    'num_candidates': dict(low=1, integer=True),
    'candidate_batches': dict(low=1, integer=True),
}


def check_enas_arguments(**kwargs) -> None:
    """Raise ``ValueError``/``TypeError`` for :class:`EnasModule` arguments it would refuse (see its docstring)."""
    for name, value in kwargs.items():
        if name in _RANGES:
            check_number(name, value, **_RANGES[name])
    if kwargs.get('reward_train_mode') is not None and not isinstance(kwargs['reward_train_mode'], bool):
        raise TypeError(f'reward_train_mode must be True or False, got {kwargs["reward_train_mode"]!r}')
    if kwargs.get('reward_metric_name') is not None and kwargs.get('reward_function') is not None:
        raise ValueError('give either reward_metric_name (a metric the evaluator logs in validation_step) '
                         'or reward_function(output, target), not both')
    if kwargs.get('reward_metric_mode') is not None:
        if kwargs.get('reward_metric_name') is None:
            raise ValueError('reward_metric_mode needs reward_metric_name')
        reward_direction(kwargs['reward_metric_name'], kwargs['reward_metric_mode'])
    ctrl_kwargs = kwargs.get('ctrl_kwargs')
    if ctrl_kwargs is not None:
        if not isinstance(ctrl_kwargs, dict):
            raise TypeError(f'ctrl_kwargs must be a dict of ReinforceController arguments, got {ctrl_kwargs!r}')
        try:
            check_controller_arguments(**ctrl_kwargs)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f'ctrl_kwargs: {exc}') from None


def _cycle(loader) -> Iterator:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError('the reward (validation) dataloader is empty')


def _batch_size(batch) -> int:
    try:
        return extract_batch_size(batch)
    except Exception:  # noqa: BLE001 - a batch without tensors: images/s is then unknown (0)
        return 0


@contextlib.contextmanager
def _recorded_logs(module) -> Iterator[dict[str, Any]]:
    """Within the block, ``module.log(name, value, ...)`` records ``{name: value}`` into the yielded dict.

    Lightning has no public way to read what one ``validation_step`` call logs without running a
    validation loop (which would log the values as the fit's metrics). ``log`` is an ordinary
    method, and NNI already shadows it per instance (``BaseOneShotLightningModule.setup`` sets
    ``training_module.log = self.log``, routing the recipe's logs to the one-shot module), so we
    shadow that instance attribute in turn and put back exactly what was there (NNI's routing, or
    nothing: the class's method), also when ``validation_step`` raises.
    """
    logged: dict[str, Any] = {}

    def record(name, value, *args, **kwargs):
        logged[name] = value

    missing = object()
    saved = module.__dict__.get('log', missing)
    module.__dict__['log'] = record
    try:
        yield logged
    finally:
        if saved is missing:
            module.__dict__.pop('log', None)
        else:
            module.__dict__['log'] = saved


class EnasModule(BaseOneShotLightningModule):
    """ENAS search on a supernet; see the module docstring for the loop.

    Parameters
    ----------
    training_module
        The recipe that trains the child model (its ``training_step`` gives the loss); any NNI
        Lightning evaluator module (``Classification``'s, ``Regression``'s) or
        :class:`~nni_enas.training.classification.ChildTraining`.
    reward_metric_name
        Reward the controller with this metric, read from what the recipe's ``validation_step``
        logs (``self.log(name, value)``) on one validation minibatch, as NNI's ENAS does: e.g.
        ``'val_acc'`` for NNI's ``Classification``, ``'val_mse'`` for ``Regression``. The batch
        goes to ``validation_step`` as the dataloader gives it (any structure).
    reward_metric_mode
        ``'max'`` (reward = metric) or ``'min'`` (reward = minus the metric). Default: from the
        name, see :func:`reward_direction` (``loss``/``mse``/``mae``/``error`` in the name: min).
    reward_function
        ``reward_function(output, target) -> 0-dim tensor`` on a validation batch ``(input,
        target)``, where ``output`` is the recipe's forward of ``input`` (the first element when it
        returns ``(logits, aux_logits)``). Not together with ``reward_metric_name``. When neither
        is given: top-1 accuracy (:func:`~nni_enas.training.classification.accuracy`), for classification.
    grad_clip
        Global-norm clip of the shared weights' gradients (5.0); ``None`` or 0 disables it.
    entropy_weight, skip_weight, baseline_decay, ctrl_lr
        Reward entropy bonus, skip penalty weight, baseline moving-average decay, controller
        Adam learning rate (Adam with beta1 = 0 and eps = 1e-3, as the TF code).
    ctrl_steps_aggregate
        Sampled children whose gradients are averaged into one controller update.
    ctrl_steps
        Controller updates per epoch; ``None``: one pass over the reward loader.
    ctrl_kwargs
        Keyword arguments of :class:`~nni_enas.search.controller.ReinforceController`.
    num_candidates
        How many architectures :meth:`export` samples and scores to pick the best.
    candidate_batches
        How many validation minibatches (the same for every candidate) score a candidate.
    reward_train_mode
        Compute rewards with the child in training mode (batch-statistics BN, as TF's micro
        search) instead of eval mode (TF's macro search).
    cuda_graphs
        ``'auto'`` (CUDA graphs for the supernet's choice-free modules when the fit runs on a
        CUDA device) or ``'off'``; see :mod:`nni_enas.training.cuda_graphs`.

    Every argument is checked when the module is built (``ctrl_kwargs`` too, against
    :class:`~nni_enas.search.controller.ReinforceController`): ``grad_clip``, ``entropy_weight``
    and ``skip_weight`` >= 0, ``baseline_decay`` in [0, 1), ``ctrl_lr`` > 0, the counts
    (``ctrl_steps_aggregate``, ``ctrl_steps``, ``num_candidates``, ``candidate_batches``) >= 1;
    a value out of range is a ``ValueError`` naming the argument, its value and the range.

    Attributes
    ----------
    epoch_stats
        The last finished epoch's statistics: ``reward``, ``baseline``, ``entropy``, ``loss``
        (controller), ``skip_rate`` (only when the space has skip decisions), ``samples``,
        ``seconds`` (controller phase), ``child_seconds``, ``images_per_s``. Also logged as
        ``ctrl_<name>`` at the epoch's end.
    last_export
        The last :class:`~nni_enas.search.export.EpochExport` made by :meth:`export_epoch`, or ``None``.
    """

    def __init__(self, training_module, *, reward_metric_name: str | None = None,
                 reward_metric_mode: str | None = None, reward_function: Callable | None = None,
                 grad_clip: float | None = 5.0, entropy_weight: float = 1e-4, skip_weight: float = 0.8,
                 baseline_decay: float = 0.999, ctrl_lr: float = 3.5e-4, ctrl_steps_aggregate: int = 20,
                 ctrl_steps: int | None = None, ctrl_kwargs: dict | None = None, num_candidates: int = 100,
                 candidate_batches: int = 1, reward_train_mode: bool = False, cuda_graphs: str = 'auto'):
        check_enas_arguments(grad_clip=grad_clip, entropy_weight=entropy_weight, skip_weight=skip_weight,
                             baseline_decay=baseline_decay, ctrl_lr=ctrl_lr, ctrl_steps_aggregate=ctrl_steps_aggregate,
                             ctrl_steps=ctrl_steps, ctrl_kwargs=ctrl_kwargs, num_candidates=num_candidates,
                             candidate_batches=candidate_batches, reward_train_mode=reward_train_mode)
        super().__init__(training_module)
        if hasattr(training_module, 'nonfinite_check_every'):
            # our recipe would read its NaN flag every few steps; this module checks once an epoch
            training_module.nonfinite_check_every = None
        if reward_metric_name is not None and reward_function is not None:
            raise ValueError('give either reward_metric_name (a metric the evaluator logs in validation_step) '
                             'or reward_function(output, target), not both')
        if reward_metric_mode is not None and reward_metric_name is None:
            raise ValueError('reward_metric_mode needs reward_metric_name')
        use_cuda_graphs(cuda_graphs, None)        # a bad mode is a ValueError now, not at fit time
        self.reward_metric_name = reward_metric_name
        self.reward_metric_mode = (reward_direction(reward_metric_name, reward_metric_mode)
                                   if reward_metric_name is not None else None)
        self.reward_function = reward_function or (accuracy if reward_metric_name is None else None)
        self.grad_clip = grad_clip or None
        self.entropy_weight = entropy_weight
        self.skip_weight = skip_weight
        self.baseline_decay = baseline_decay
        self.ctrl_lr = ctrl_lr
        self.ctrl_steps_aggregate = ctrl_steps_aggregate
        self.ctrl_steps = ctrl_steps
        self.ctrl_kwargs = dict(ctrl_kwargs or {})
        self.num_candidates = num_candidates
        self.candidate_batches = candidate_batches
        self.reward_train_mode = reward_train_mode
        self.cuda_graphs = cuda_graphs
        self.graphed_modules: list[str] = []
        # CPU state outside the module tree (see __setattr__): Lightning's .to(device) leaves it alone.
        self.controller: ReinforceController | None = None
        self.ctrl_optimizer: torch.optim.Optimizer | None = None
        self.baseline = torch.zeros(())
        self.baseline_ready = torch.zeros((), dtype=torch.bool)
        self.reward_dataloader = None
        self.epoch_stats: dict[str, float] = {}
        self.last_export: EpochExport | None = None
        self._controller_version = 0        # +1 per controller update: tells whether an export is current
        self._finished_epoch: int | None = None   # counted from 1
        self._epoch_pending = False
        self._child_archs: list[dict[str, Any]] = []
        self._child_losses: list[torch.Tensor] = []
        self._child_images = 0
        self._epoch_start = 0.0
        self._graphs_done = False
        self._fit_device: torch.device | None = None    # where the last fit ran (the export scores there)
        self._routing: list | None = None   # the supernet modules apply() routes (found once per model)

    _CPU_SIDE = ('controller', 'ctrl_optimizer', 'baseline', 'baseline_ready')

    def __setattr__(self, name, value):
        if name in self._CPU_SIDE:
            # Not a registered submodule/buffer: moving the module to CUDA (or casting it) must not
            # move the controller, and the child optimizer must not see its parameters.
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # -- set-up -----------------------------------------------------------------------------

    def set_model(self, model) -> None:
        super().set_model(model)
        self._routing = None
        # NNI calls set_model again before exporting: keep the trained controller.
        if self.controller is None:
            self.controller = ReinforceController(model, **self.ctrl_kwargs)
            self.ctrl_optimizer = torch.optim.Adam(self.controller.parameters(), lr=self.ctrl_lr,
                                                   betas=(0.0, 0.999), eps=1e-3)

    def configure_architecture_optimizers(self):
        return None   # the controller's Adam is ours (on the CPU), not Lightning's (which would move it)

    def apply(self, arch: dict[str, Any]) -> None:
        """Route the supernet along ``arch``: every supernet module takes its label's value."""
        if self._routing is None:
            # Once per model, not per child step: walking the module tree (supernet_modules()) costs
            # far more than the resampling (12-layer macro space: ~0.8 ms vs 0.06 ms on the dev CPU).
            self._routing = list(self.supernet_modules())
        for module in self._routing:
            module.resample(memo=arch)

    def on_fit_start(self):
        self._fit_device = self.device
        if not self._graphs_done:
            self._graphs_done = True
            self.graphed_modules = graph_supernet(self.model, self.cuda_graphs, device=self.device)
        return super().on_fit_start()

    def teardown(self, stage=None):
        # Lightning has just moved the supernet to the CPU and freed cuBLAS's workspaces: the
        # graphs could not replay; the next fit captures afresh (nni_enas.training.cuda_graphs)
        release_graphs(self)
        return super().teardown(stage)

    @contextlib.contextmanager
    def _on_fit_device(self) -> Iterator[None]:
        """Run the block on the device of the last fit (Lightning leaves the module on the CPU
        after a fit: an export then would score 100 candidates on the CPU); back afterwards."""
        here, there = self.device, self._fit_device
        if there is None or here == there:
            yield
            return
        self.to(there)
        try:
            yield
        finally:
            self.to(here)
            release_graphs(self)            # graphs captured there hold device memory

    # Batches travel through the recipe's own transfer hooks (Lightning's default moves any nesting).
    def on_before_batch_transfer(self, batch, dataloader_idx):
        return self.training_module.on_before_batch_transfer(batch, dataloader_idx)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return self.training_module.transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        return self.training_module.on_after_batch_transfer(batch, dataloader_idx)

    def _to_device(self, batch):
        batch = self.on_before_batch_transfer(batch, 0)
        batch = self.transfer_batch_to_device(batch, self.device, 0)
        return self.on_after_batch_transfer(batch, 0)

    # -- checkpoints: the CPU-side state -----------------------------------------------------------

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.controller is not None:
            for key, value in self.controller.state_dict(keep_vars=keep_vars).items():
                destination[f'{prefix}controller.{key}'] = value
        destination[prefix + 'baseline'] = self.baseline
        destination[prefix + 'baseline_ready'] = self.baseline_ready

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        ours = {key[len(prefix):]: state_dict.pop(key) for key in list(state_dict)
                if key.startswith(prefix + 'controller.') or key in (prefix + 'baseline', prefix + 'baseline_ready')}
        if self.controller is not None:
            controller = {k[len('controller.'):]: v for k, v in ours.items() if k.startswith('controller.')}
            result = self.controller.load_state_dict(controller, strict=False)
            self._controller_version += 1     # another controller: an earlier export is not current
            missing_keys += [f'{prefix}controller.{k}' for k in result.missing_keys]
            unexpected_keys += [f'{prefix}controller.{k}' for k in result.unexpected_keys]
        for name in ('baseline', 'baseline_ready'):
            if name in ours:
                getattr(self, name).copy_(ours[name].cpu())
            else:
                missing_keys.append(prefix + name)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.ctrl_optimizer is not None:
            checkpoint[_CONTROLLER_OPTIMIZER_KEY] = self.ctrl_optimizer.state_dict()
        return self.training_module.on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(_CONTROLLER_OPTIMIZER_KEY)
        if state is None and len(checkpoint.get('optimizer_states', ())) == 2:
            state = checkpoint['optimizer_states'].pop()   # a checkpoint of 0.1.0: Lightning held the Adam
        if state is not None and self.ctrl_optimizer is not None:
            self.ctrl_optimizer.load_state_dict(state)   # Adam casts its state to the (CPU) parameters
        return self.training_module.on_load_checkpoint(checkpoint)

    # -- child phase --------------------------------------------------------------------------

    def on_train_epoch_start(self):
        self._child_images = 0
        self._child_losses = []
        self._epoch_pending = True
        n = self.trainer.num_training_batches
        # The controller does not change during the child phase: sample the whole epoch at once.
        self._child_archs = self._sample_children(n if math.isfinite(n) else 64)
        self._epoch_start = time.perf_counter()
        return super().on_train_epoch_start()

    @torch.no_grad()
    def _sample_children(self, n: int) -> list[dict[str, Any]]:
        return self.controller.sample_batch(max(1, int(n)))[0]

    def training_step(self, batch, batch_idx):
        if batch_idx >= len(self._child_archs):        # a loader of unknown length
            self._child_archs += self._sample_children(max(64, len(self._child_archs)))
        self.apply(self._child_archs[batch_idx])
        out = self.training_module.training_step(batch, batch_idx)
        loss = out['loss'] if isinstance(out, dict) else out
        # Checked at the epoch's end (finish_epoch): a check here would wait for the device every step.
        self._child_losses.append(loss.detach())
        self.advance_optimization(loss, batch_idx, gradient_clip_val=self.grad_clip,
                                  gradient_clip_algorithm='norm' if self.grad_clip else None)
        self._child_images += _batch_size(batch)
        self.advance_lr_schedulers(batch_idx)
        return loss

    def _check_child_losses(self) -> None:
        """Raise :class:`NonFiniteLossError` if a child loss of this epoch was NaN/inf (one device sync)."""
        if not self._child_losses:
            return
        losses = torch.stack([loss.float() for loss in self._child_losses])
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            step = int((~finite).nonzero()[0, 0])
            raise NonFiniteLossError(f'the child loss is {losses[step].item()} at epoch {self.current_epoch}, '
                                     f'step {step}')

    # -- epoch end ------------------------------------------------------------------------------

    def on_train_epoch_end(self):
        self.finish_epoch()
        return super().on_train_epoch_end()

    def finish_epoch(self) -> dict[str, float]:
        """The epoch's end, once per epoch: check the child losses, then the controller phase.

        Lightning calls the module's ``on_train_epoch_end`` after the callbacks' (but before
        ``ModelCheckpoint``'s), so a callback that needs the trained controller (like
        :class:`~nni_enas.search.export.ArchitectureExport`) calls this first; later calls (and calls
        outside a fit) return the same statistics. Returns :attr:`epoch_stats`.
        """
        if not self._epoch_pending:
            return self.epoch_stats
        self._epoch_pending = False
        self._check_child_losses()
        child_seconds = time.perf_counter() - self._epoch_start   # after the check's sync: the phase's real time
        stats = self.train_controller()
        stats.update(child_seconds=child_seconds, images_per_s=self._child_images / max(child_seconds, 1e-9))
        self.epoch_stats = stats
        self._finished_epoch = self.current_epoch + 1
        if self._logging():
            self.log_dict({f'ctrl_{k}': float(v) for k, v in stats.items()})
        return stats

    def _logging(self) -> bool:
        """Inside a running fit (its hooks, e.g. the epoch's end, where ``self.log`` works).

        Outside a fit (never attached to a Trainer, or after ``fit`` returned or raised)
        :meth:`finish_epoch` and :meth:`export_epoch` work without logging.
        """
        try:
            state = self.trainer.state
        except RuntimeError:          # not attached to a Trainer
            return False
        return state.fn == TrainerFn.FITTING and state.status == TrainerStatus.RUNNING

    # -- rewards --------------------------------------------------------------------------------

    def _set_reward_mode(self) -> None:
        self.training_module.train(self.reward_train_mode)

    @torch.no_grad()
    def _reward(self, batch, batch_idx: int = 0) -> torch.Tensor:
        """The reward metric of the applied architecture on one (device) batch: a 0-dim device tensor."""
        module = self.training_module
        if self.reward_metric_name is None:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise ValueError('reward_function needs (input, target) validation batches; for other batches '
                                 'pass reward_metric_name (a metric the evaluator logs in validation_step)')
            x, y = batch
            out = module(x)
            value = self.reward_function(out[0] if isinstance(out, tuple) else out, y)
        else:
            with _recorded_logs(module) as logged:
                module.validation_step(batch, batch_idx)
            if self.reward_metric_name not in logged:
                raise ValueError(f'reward_metric_name={self.reward_metric_name!r} was not logged by the evaluator\'s '
                                 f'validation_step; it logged {sorted(logged)}')
            value = logged[self.reward_metric_name]
            if self.reward_metric_mode == 'min':
                value = -value
        return torch.as_tensor(value, dtype=torch.float32, device=self.device).reshape(())

    def _score(self, batches) -> torch.Tensor:
        """Mean reward metric of the applied architecture over ``batches`` (0-dim float32, on the device).

        The one scoring hook of the controller's rewards and of the export; an override may return a
        float (tests plant rewards here).
        """
        return torch.stack([self._reward(batch, i) for i, batch in enumerate(batches)]).mean()

    # -- controller phase ---------------------------------------------------------------------

    def train_controller(self) -> dict[str, float]:
        """The controller phase: ``ctrl_steps`` REINFORCE updates. Returns the phase's statistics.

        Raises :class:`~nni_enas.search.controller.ControllerDivergedError` when the controller's
        probabilities, loss, weights or baseline become NaN/inf (checked per update, and the weights
        once at the phase's end, so a checkpoint never holds a diverged controller), and
        :class:`~nni_enas.training.classification.NonFiniteLossError` when a reward is NaN/inf.
        """
        if self.reward_dataloader is None:
            raise RuntimeError('ENAS needs a validation (reward) dataloader')
        steps = self.ctrl_steps or max(1, math.ceil(len(self.reward_dataloader) / self.ctrl_steps_aggregate))
        batches = _cycle(self.reward_dataloader)
        start = time.perf_counter()
        self._set_reward_mode()
        self.controller.train()
        has_skips = any(d.kind == 'skip' for d in self.controller.decisions)
        rewards, entropies, losses, skip_on, skip_total = [], [], [], 0, 0
        try:
            for update in range(steps):
                archs, reward, entropy, loss = self._controller_update(batches, update)
                rewards.append(reward)
                entropies.append(entropy)
                losses.append(loss)
                if has_skips:
                    for arch in archs:
                        for label, value in arch.items():
                            if self.controller.is_skip(label):
                                skip_on += len(value)
                                skip_total += self.controller.num_candidates(label)
        finally:
            self.training_module.train()
        self._check_controller_state()
        stats = {
            'reward': float(torch.cat(rewards).mean()),
            'baseline': float(self.baseline),
            'entropy': float(torch.cat(entropies).mean()),
            'loss': float(torch.cat(losses).mean()),
            'samples': sum(len(r) for r in rewards),
            'seconds': time.perf_counter() - start,
        }
        if has_skips:
            stats['skip_rate'] = skip_on / skip_total if skip_total else 0.0
        return stats

    def _controller_update(self, batches, update: int):
        """One REINFORCE update: ``(archs, reward, entropy, loss)``, the tensors [ctrl_steps_aggregate], detached.

        ``ctrl_steps_aggregate`` architectures sampled in one batch, their rewards computed on the
        device and moved to the CPU together, then the baseline (updated before use, per sample, as
        TF) and one backward of the averaged loss.
        """
        archs, log_prob, entropy, skip_penalty = self.controller.sample_batch(self.ctrl_steps_aggregate)
        metric = []
        for arch in archs:
            self.apply(arch)
            metric.append(torch.as_tensor(self._score([self._to_device(next(batches))]), dtype=torch.float32))
        reward = torch.stack(metric).cpu() + self.entropy_weight * entropy.detach()   # one transfer
        where = f'at epoch {self.current_epoch}, controller update {update}'
        if not bool(torch.isfinite(reward).all()):
            raise NonFiniteLossError(f'the reward (the child models\' validation metric) is NaN/inf {where}')
        baselines = []
        for r in reward:
            if not self.baseline_ready:    # start the baseline at the first reward
                self.baseline.fill_(r)
                self.baseline_ready.fill_(True)
            # TF updates the baseline before using it.
            self.baseline.sub_((1 - self.baseline_decay) * (self.baseline - r))
            baselines.append(self.baseline.clone())
        loss = -log_prob * (reward - torch.stack(baselines)) + self.skip_weight * skip_penalty
        if not bool(torch.isfinite(loss.detach()).all()):   # CPU tensors: no device sync
            raise ControllerDivergedError(f'the controller diverged: its loss is NaN/inf {where}')
        self.ctrl_optimizer.zero_grad()
        loss.mean().backward()   # the average gradient of the aggregated samples, in one pass
        self.ctrl_optimizer.step()
        self._controller_version += 1
        return archs, reward, entropy.detach(), loss.detach()

    def _check_controller_state(self) -> None:
        """Raise if an update left NaN/inf in the controller's weights or the baseline (once per phase)."""
        if not bool(torch.isfinite(self.baseline)):
            raise ControllerDivergedError(f'the controller diverged: its baseline is NaN/inf '
                                          f'at epoch {self.current_epoch}')
        for name, value in self.controller.named_parameters():
            if not bool(torch.isfinite(value).all()):
                raise ControllerDivergedError(f'the controller diverged: NaN/inf in its weights ({name}) '
                                              f'at epoch {self.current_epoch}')

    # -- export ---------------------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """The paper's choice: the best of ``num_candidates`` sampled architectures (spec Part 1).

        Every candidate is scored on the same ``candidate_batches`` validation minibatches. When
        :meth:`export_epoch` already ran with the current controller (e.g. at the last epoch's
        end), its architecture is returned instead of sampling again.
        """
        if self.last_export is not None and self.last_export.controller_version == self._controller_version:
            return self.last_export.arch
        return self.export_candidates()[0]

    def export_epoch(self) -> EpochExport:
        """The finished epoch's export, once per epoch: :meth:`finish_epoch`, then the best of K.

        Run before the checkpoint is written (:class:`~nni_enas.search.export.ArchitectureExport` calls
        it from ``on_train_epoch_end``), so the checkpoint's random state follows the export's
        sampling and a resumed run continues exactly as one that did not stop.
        """
        stats = self.finish_epoch()
        last = self.last_export
        if last is not None and last.controller_version == self._controller_version:
            return last
        start = time.perf_counter()
        best, score, greedy = self.export_candidates()
        self.last_export = EpochExport(
            arch=best, reward=score, greedy=greedy, probabilities=self.controller.choice_probabilities(),
            epoch=self._finished_epoch, mean_reward=stats.get('reward'), num_candidates=max(1, self.num_candidates),
            candidate_batches=self.candidate_batches, seconds=time.perf_counter() - start,
            controller_version=self._controller_version)
        if self._logging():
            self.log('ctrl_export_reward', score)
        return self.last_export

    def export_candidates(self) -> tuple[dict[str, Any], float, dict[str, Any]]:
        """``(best_arch, its_score, greedy_arch)``: the score is the reward metric's mean (minus it for 'min').

        Scored on the device the last fit ran on, also when called after the fit.
        """
        with self._on_fit_device():
            return self._export_candidates()

    @torch.no_grad()
    def _export_candidates(self) -> tuple[dict[str, Any], float, dict[str, Any]]:
        batches = []
        for batch in self.reward_dataloader:
            batches.append(self._to_device(batch))
            if len(batches) >= self.candidate_batches:
                break
        self._set_reward_mode()
        try:
            archs = self.controller.sample_batch(max(1, self.num_candidates))[0]
            scores = []
            for arch in archs:
                self.apply(arch)
                scores.append(torch.as_tensor(self._score(batches), dtype=torch.float32))
        finally:
            self.training_module.train()
        scores = torch.stack(scores).cpu()          # one transfer for all candidates
        best = int(scores.argmax())                 # the first of equal scores, as a running max
        return archs[best], float(scores[best]), self.controller.greedy()

    def export_probs(self) -> dict[str, Any]:
        return self.controller.choice_probabilities()


def _enas_module_keywords() -> set[str]:
    return {name for name, p in inspect.signature(EnasModule.__init__).parameters.items()
            if p.kind == p.KEYWORD_ONLY}


class Enas(RandomOneShot):
    """ENAS (Pham et al., 2018) as an NNI 3.0 one-shot strategy.

    Use it like NNI's own strategies::

        evaluator = Regression(train_dataloaders=..., val_dataloaders=..., max_epochs=10)
        experiment = NasExperiment(space, evaluator, Enas(reward_metric_name='val_mse'))
        experiment.run()
        experiment.export_top_models(formatter='dict')[0]   # {label: value}: the best of num_candidates

    The evaluator's train dataloader trains the shared weights and its validation dataloader
    gives the controller's rewards (``reward_metric_name``: a metric its ``validation_step``
    logs). Keyword arguments are those of :class:`EnasModule` (``reward_metric_name``,
    ``reward_metric_mode``, ``reward_function``, ``cuda_graphs``, ...); the space may use
    ``InputChoice(n_chosen=None)``. Add :class:`~nni_enas.search.export.ArchitectureExport` to the
    evaluator's callbacks to export (and write) the best architecture after every epoch.
    """

    def __init__(self, **enas_kwargs):
        unknown = sorted(set(enas_kwargs) - _enas_module_keywords())
        if unknown:
            raise TypeError(f'Enas() got unexpected keyword argument(s) {", ".join(unknown)}')
        check_enas_arguments(**enas_kwargs)     # now, not when the experiment builds the module
        if 'cuda_graphs' in enas_kwargs:
            use_cuda_graphs(enas_kwargs['cuda_graphs'], None)
        super().__init__()
        self.enas_kwargs = enas_kwargs
        self._module: EnasModule | None = None

    def default_mutation_hooks(self):
        return mutation_hooks() + super().default_mutation_hooks()

    def configure_oneshot_module(self, training_module) -> EnasModule:
        self._module = EnasModule(training_module, **self.enas_kwargs)
        return self._module

    def train_dataloader(self, train_dataloader_fn, val_dataloader_fn):
        self._module.reward_dataloader = val_dataloader_fn()
        return train_dataloader_fn()

    def val_dataloader(self, train_dataloader_fn, val_dataloader_fn):
        return None   # the validation data is the controller's; there is no separate validation loop

    def list_models(self, sort: bool = True, limit: int | None = 1):
        # NNI's version calls set_model() first; ours keeps the trained controller either way.
        yield self.model_space.freeze(self.oneshot_module.export())
