"""The ENAS alternation (spec D.2): train the shared weights, then train the controller.

:class:`EnasModule` is an NNI one-shot Lightning module wrapped around a training recipe (any
NNI Lightning evaluator module, or our :class:`~nni_enas.recipe.ChildTraining`). Each epoch:

1. child phase: for every training minibatch the controller samples a child model (a path
   through the shared weights), which takes one SGD step on that minibatch;
2. controller phase (after the epoch's last child step): ``ctrl_steps`` updates, each the
   average REINFORCE gradient of ``ctrl_steps_aggregate`` sampled children, rewarded by their
   accuracy on one validation minibatch plus an entropy bonus, against a moving-average baseline,
   plus the weighted skip penalty.

:class:`Enas` is the same algorithm as an NNI 3.0 ``OneShotStrategy``, for ``NasExperiment``.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterator

import torch
from nni.nas.oneshot.pytorch.base_lightning import BaseOneShotLightningModule
from nni.nas.oneshot.pytorch.strategy import RandomOneShot

from .controller import ReinforceController
from .recipe import NonFiniteLossError, accuracy
from .supernet import mutation_hooks

__all__ = ['EnasModule', 'Enas']


def _cycle(loader) -> Iterator:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError('the reward (validation) dataloader is empty')


class EnasModule(BaseOneShotLightningModule):
    """ENAS search on a supernet; see the module docstring for the loop.

    Parameters
    ----------
    training_module
        The recipe that trains the child model (its ``training_step`` gives the loss).
    reward_function
        ``reward_function(logits, target) -> float tensor``; top-1 accuracy by default.
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
        Keyword arguments of :class:`~nni_enas.controller.ReinforceController`.
    num_candidates
        How many architectures :meth:`export` samples and scores to pick the best.
    candidate_batches
        How many validation minibatches (the same for every candidate) score a candidate.
    reward_train_mode
        Compute rewards with the child in training mode (batch-statistics BN, as TF's micro
        search) instead of eval mode (TF's macro search).
    """

    def __init__(self, training_module, *, reward_function: Callable | None = None, grad_clip: float | None = 5.0,
                 entropy_weight: float = 1e-4, skip_weight: float = 0.8, baseline_decay: float = 0.999,
                 ctrl_lr: float = 3.5e-4, ctrl_steps_aggregate: int = 20, ctrl_steps: int | None = None,
                 ctrl_kwargs: dict | None = None, num_candidates: int = 100, candidate_batches: int = 1,
                 reward_train_mode: bool = False):
        super().__init__(training_module)
        self.reward_function = reward_function or accuracy
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
        self.controller: ReinforceController | None = None
        self.reward_dataloader = None
        self.register_buffer('baseline', torch.zeros(()))
        self.register_buffer('baseline_ready', torch.zeros((), dtype=torch.bool))
        self.epoch_stats: dict[str, float] = {}
        self._child_images = 0
        self._epoch_start = 0.0

    # -- set-up -----------------------------------------------------------------------------

    def set_model(self, model) -> None:
        super().set_model(model)
        # NNI calls set_model again before exporting: keep the trained controller.
        if self.controller is None:
            self.controller = ReinforceController(model, **self.ctrl_kwargs)

    def configure_architecture_optimizers(self):
        return torch.optim.Adam(self.controller.parameters(), lr=self.ctrl_lr, betas=(0.0, 0.999), eps=1e-3)

    def apply(self, arch: dict[str, Any]) -> None:
        """Route the supernet along ``arch``: every supernet module takes its label's value."""
        for module in self.supernet_modules():
            module.resample(memo=arch)

    # -- child phase --------------------------------------------------------------------------

    def on_train_epoch_start(self):
        self._child_images = 0
        self._epoch_start = time.perf_counter()
        return super().on_train_epoch_start()

    def training_step(self, batch, batch_idx):
        with torch.no_grad():
            arch = self.controller.sample()[0]
        self.apply(arch)
        out = self.training_module.training_step(batch, batch_idx)
        loss = out['loss'] if isinstance(out, dict) else out
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f'the child loss is {loss.item()} at epoch {self.current_epoch}, step {batch_idx}')
        self.advance_optimization(loss, batch_idx, gradient_clip_val=self.grad_clip,
                                  gradient_clip_algorithm='norm' if self.grad_clip else None)
        self._child_images += len(batch[1]) if isinstance(batch, (tuple, list)) else 0
        if batch_idx + 1 == self.trainer.num_training_batches:
            child_seconds = time.perf_counter() - self._epoch_start
            self.epoch_stats = self.train_controller()
            self.epoch_stats.update(child_seconds=child_seconds,
                                    images_per_s=self._child_images / max(child_seconds, 1e-9))
            self.log_dict({f'ctrl_{k}': v for k, v in self.epoch_stats.items()})
        self.advance_lr_schedulers(batch_idx)
        return loss

    # -- controller phase ---------------------------------------------------------------------

    def _batch_to_device(self, batch):
        return [t.to(self.device, non_blocking=True) for t in batch]

    def _set_reward_mode(self) -> None:
        self.training_module.train(self.reward_train_mode)

    @torch.no_grad()
    def _score(self, batches) -> float:
        """Reward of the currently applied architecture on the given batches (mean accuracy)."""
        values = []
        for x, y in batches:
            out = self.training_module(x)
            values.append(float(self.reward_function(out[0] if isinstance(out, tuple) else out, y)))
        return sum(values) / len(values)

    def train_controller(self) -> dict[str, float]:
        """The controller phase: ``ctrl_steps`` REINFORCE updates. Returns the phase's statistics."""
        if self.reward_dataloader is None:
            raise RuntimeError('ENAS needs a validation (reward) dataloader')
        optimizer = self.architecture_optimizers()
        optimizer = getattr(optimizer, 'optimizer', optimizer)   # the raw torch optimizer
        steps = self.ctrl_steps or max(1, math.ceil(len(self.reward_dataloader) / self.ctrl_steps_aggregate))
        batches = _cycle(self.reward_dataloader)
        start = time.perf_counter()
        self._set_reward_mode()
        self.controller.train()
        rewards, entropies, losses, skip_on, skip_total = [], [], [], 0, 0
        for _ in range(steps):
            optimizer.zero_grad()
            update_loss = 0.0
            for _ in range(self.ctrl_steps_aggregate):
                arch, log_prob, entropy, skip_penalty = self.controller.sample()
                self.apply(arch)
                reward = self._score([self._batch_to_device(next(batches))])
                reward += self.entropy_weight * entropy.item()
                if not self.baseline_ready:    # start the baseline at the first reward
                    self.baseline.fill_(reward)
                    self.baseline_ready.fill_(True)
                # TF updates the baseline before using it.
                self.baseline.sub_((1 - self.baseline_decay) * (self.baseline - reward))
                loss = -log_prob * (reward - self.baseline) + self.skip_weight * skip_penalty
                update_loss = update_loss + loss / self.ctrl_steps_aggregate
                rewards.append(reward)
                entropies.append(entropy.item())
                losses.append(loss.item())
                for label, value in arch.items():
                    if self.controller.is_skip(label):
                        skip_on += len(value)
                        skip_total += self.controller.num_candidates(label)
            update_loss.backward()   # the average gradient of the aggregated samples, in one pass
            optimizer.step()
        self.training_module.train()
        seconds = time.perf_counter() - start
        return {
            'reward': sum(rewards) / len(rewards),
            'baseline': float(self.baseline),
            'entropy': sum(entropies) / len(entropies),
            'loss': sum(losses) / len(losses),
            'skip_rate': skip_on / skip_total if skip_total else 0.0,
            'samples': len(rewards),
            'seconds': seconds,
        }

    # -- export ---------------------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """The paper's choice: the best of ``num_candidates`` sampled architectures (spec Part 1).

        Every candidate is scored on the same ``candidate_batches`` validation minibatches.
        """
        return self.export_candidates()[0]

    @torch.no_grad()
    def export_candidates(self) -> tuple[dict[str, Any], float, dict[str, Any]]:
        """``(best_arch, its_score, greedy_arch)``."""
        batches = []
        for batch in self.reward_dataloader:
            batches.append(self._batch_to_device(batch))
            if len(batches) >= self.candidate_batches:
                break
        self._set_reward_mode()
        best, best_score = None, -math.inf
        for _ in range(max(1, self.num_candidates)):
            arch = self.controller.sample()[0]
            self.apply(arch)
            score = self._score(batches)
            if score > best_score:
                best, best_score = arch, score
        self.training_module.train()
        return best, best_score, self.controller.greedy()

    def export_probs(self) -> dict[str, Any]:
        return self.controller.choice_probabilities()


class Enas(RandomOneShot):
    """ENAS (Pham et al., 2018) as an NNI 3.0 one-shot strategy.

    Use it like NNI's own strategies::

        experiment = NasExperiment(MacroSpace(), Classification(...), Enas())
        experiment.run()
        experiment.export_top_models(formatter='dict')   # the trained controller's best architecture

    The evaluator's train dataloader trains the shared weights and its validation dataloader
    gives the controller's rewards. Keyword arguments are those of :class:`EnasModule`; the
    space may use ``InputChoice(n_chosen=None)``.
    """

    def __init__(self, **enas_kwargs):
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
