"""The language-model recipe: how a recurrent network (a child of the search, or a fixed cell) is trained.

:class:`LanguageModelTraining` is the third recipe beside the image classifiers'
:class:`~nni_enas.training.classification.ChildTraining`, in the same role: the ENAS module wraps it
during the search (one sampled cell per step, the same :class:`~nni_enas.search.enas.EnasModule`,
:class:`~nni_enas.search.enas.Enas` strategy and :class:`~nni_enas.search.trainer.EnasTrainer` as
the CNN spaces), and ``retrain.py`` uses it alone on the final network. It follows the corrected
ENAS language-model code (enas_lm; ENAS_RNN_SPEC Part 1 and Part 2 3.2, 5.3):

* truncated back-propagation through time over consecutive windows ``(x [B, T], y [B, T])`` of a
  row-contiguous batch (:class:`nni_enas.data.text.TextWindows`): the hidden state after one window
  is the next window's initial state, detached (gradients stop at the window's start), and zero
  at every epoch's start;
* plain SGD whose learning rate is scaled by the window's length (``lr * T / bptt``, enas_lm's
  random-length windows); global-norm gradient clipping is the caller's (``EnasModule(grad_clip=)``,
  ``pl.Trainer(gradient_clip_val=)``);
* the loss is the mean cross entropy plus the regularisers on the cell outputs before output
  dropout (:func:`slowness_penalty` during the search, :func:`activation_l2` in the final
  training) and weight decay ``wd * sum(w ** 2)`` (enas_lm's form: SGD's ``weight_decay = 2 wd``;
  it applies to the parameters the step trained, i.e. the sampled cell's shared weights);
* perplexity is the metric: ``child_loss``/``child_ppl`` (``train_*`` in retraining) per training epoch (with dropout, as
  trained), ``val_loss``/``val_ppl`` and ``test_loss``/``test_ppl`` over a whole split from a zero
  state with the state carried, without dropout and without any loss cap (the official TF code
  capped each test batch's loss, a bug its authors fixed);
* with ``weight_averaging``, the NT-ASGD trigger of enas_lm (:mod:`nni_enas.training.averaging`):
  once the validation perplexity stalls, the running mean of the weights after every step is kept
  and validation and test use it;
* the controller's reward (:class:`PerplexityReward`): ``80 / perplexity`` of the cell on one
  validation window from a zero state without dropout: the ENAS module calls :meth:`forward` in
  eval mode, and :meth:`forward` always starts from a zero state;
* on CUDA a fixed network (retraining) runs each window as a CUDA graph of its padded length
  (:mod:`nni_enas.training.window_graphs`); the search's cells change every step and stay eager.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from nni.nas.evaluator.pytorch.lightning import LightningModule

from nni_enas.training.averaging import NonMonotoneTrigger, WeightAverage
from nni_enas.training.classification import NonFiniteLossError
from nni_enas.training.cuda_graphs import _holds_choice, use_cuda_graphs
from nni_enas.training.window_graphs import WindowGraphs

__all__ = ['LanguageModelTraining', 'PerplexityReward', 'cross_entropy', 'perplexity', 'slowness_penalty',
           'activation_l2', 'evaluate_perplexity']

# Perplexities above this print as inf instead of overflowing (exp(700) is near float64's top).
_MAX_LOSS = 700.0


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy of next-word ``logits [B, T, V]`` against ``target [B, T]`` (in float32)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1))


def perplexity(loss: float) -> float:
    """``exp(loss)`` of a mean cross entropy in nats; ``inf`` where it would overflow."""
    return math.exp(loss) if loss < _MAX_LOSS else math.inf


def slowness_penalty(states: torch.Tensor) -> torch.Tensor:
    """Mean squared change of the cell outputs ``[B, T, H]`` from one step to the next (enas_lm's ``beta`` term).

    Within the window only: the first step's change from the carried state is not penalised.
    """
    if states.shape[1] < 2:
        return states.new_zeros(())
    return (states[:, 1:] - states[:, :-1]).pow(2).mean()


def activation_l2(states: torch.Tensor) -> torch.Tensor:
    """Mean square of the cell outputs ``[B, T, H]`` (enas_lm's ``alpha`` term, AWD-LSTM's AR)."""
    return states.pow(2).mean()


class PerplexityReward:
    """The controller's reward on a validation window: ``c / perplexity`` (c = 80 in all three ENAS codes).

    A ``reward_function(logits, target)`` for :class:`~nni_enas.search.enas.EnasModule`, whose
    ``logits`` come from :meth:`LanguageModelTraining.forward` (zero state, eval mode: no dropout).
    """

    def __init__(self, c: float = 80.0):
        self.c = c

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.c * torch.exp(-cross_entropy(logits, target))

    def __repr__(self) -> str:
        return f'PerplexityReward(c={self.c})'


@torch.no_grad()
def evaluate_perplexity(model: nn.Module, windows: Iterable) -> float:
    """Perplexity of ``model`` over consecutive ``windows`` from a zero state, the state carried, no dropout.

    The same arithmetic as the recipe's validation and test, outside Lightning (benchmarks, tests).
    """
    was_training = model.training
    model.eval()
    hidden, total, tokens = None, 0.0, 0
    try:
        for x, y in windows:
            out = model(x, hidden)
            hidden = out.hidden
            total += float(cross_entropy(out.logits, y)) * y.numel()
            tokens += y.numel()
    finally:
        model.train(was_training)
    return perplexity(total / max(tokens, 1))


class LanguageModelTraining(LightningModule):
    """Truncated-BPTT training of a recurrent language model; see the module docstring.

    The network is any module with ``forward(tokens [B, T], hidden [B, H] | None)`` returning an
    object with ``logits [B, T, V]``, ``hidden [B, H]`` (the state after the last step) and
    ``states [B, T, H]`` (cell outputs before output dropout), as
    :class:`~nni_enas.spaces.recurrent.RecurrentSpace` and its frozen networks do.

    Parameters
    ----------
    lr
        SGD learning rate of a window of ``bptt`` steps (20); a window of T steps uses ``lr * T / bptt``.
    bptt
        The nominal window length.
    weight_decay
        ``wd`` of the penalty ``wd * sum(w ** 2)`` (enas_lm: 8e-7).
    slowness
        Weight of :func:`slowness_penalty` (search: 1.0).
    activation_l2
        Weight of :func:`activation_l2` (final training: 0.7).
    weight_averaging
        Evaluate with NT-ASGD's averaged weights once the validation perplexity stalls (final training).
    averaging_patience
        Epochs of the trigger (:class:`~nni_enas.training.averaging.NonMonotoneTrigger`; enas_lm: 10).
    cuda_graphs
        ``'auto'``: on a CUDA device, a fixed network's windows run as CUDA graphs
        (:class:`~nni_enas.training.window_graphs.WindowGraphs`); ``'off'``: plain eager PyTorch.

    Attributes
    ----------
    trigger, average
        The averaging state (saved in checkpoints).
    """

    nonfinite_check_every: int | None = 25

    def __init__(self, *, lr: float = 20.0, bptt: int = 35, weight_decay: float = 0.0, slowness: float = 0.0,
                 activation_l2: float = 0.0, weight_averaging: bool = False, averaging_patience: int = 10,
                 cuda_graphs: str = 'auto', log_prefix: str = 'child_'):
        super().__init__()
        if lr <= 0 or bptt < 1:
            raise ValueError(f'lr must be positive and bptt at least 1, got lr={lr}, bptt={bptt}')
        use_cuda_graphs(cuda_graphs, None)        # ValueError now on a bad mode, not at fit time
        self.cuda_graphs = cuda_graphs
        self.log_prefix = log_prefix        # 'child_' in a search, 'train_' in retraining (as ChildTraining)
        self.window_graphs: WindowGraphs | None = None
        self.lr, self.bptt = lr, bptt
        self.weight_decay, self.slowness, self.activation_l2 = weight_decay, slowness, activation_l2
        self.weight_averaging = weight_averaging
        self.trigger = NonMonotoneTrigger(averaging_patience)
        self.average = WeightAverage()
        self._sgd: torch.optim.Optimizer | None = None
        self._hidden: torch.Tensor | None = None       # the training state carried to the next window
        self._eval_hidden: torch.Tensor | None = None
        self._sums: torch.Tensor | None = None         # this epoch's [loss x tokens, tokens], on the device
        self._eval_sums: torch.Tensor | None = None
        self._last_clean_step = -1
        self._step_in_epoch = 0
        self._swap = None                               # the averaged weights' context while evaluating

    # -- the network's forward -------------------------------------------------------------------

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of ``tokens`` from a zero state: what the reward and the export score."""
        return self.model(tokens, None).logits

    def on_fit_start(self):
        self.enable_cuda_graphs()

    def enable_cuda_graphs(self, device=None, wrapper=None) -> bool:
        """Run a fixed network's windows as CUDA graphs when ``cuda_graphs`` and the device allow it.

        ``device`` defaults to the module's; ``wrapper`` is for CPU stand-in tests. A supernet (the
        search) is left eager: its cell changes at every step.
        """
        device = self.device if device is None else device
        if self.window_graphs is None and use_cuda_graphs(self.cuda_graphs, device) and not _holds_choice(self.model):
            self.window_graphs = WindowGraphs(self.model, exact=(self.bptt,), wrapper=wrapper)
        return self.window_graphs is not None

    def _run(self, x: torch.Tensor, hidden: torch.Tensor | None):
        return self.model(x, hidden) if self.window_graphs is None else self.window_graphs(x, hidden)

    def _carried(self, state: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        """The state to start ``x`` from: the carried one if it fits the batch, else zero (None)."""
        return state if state is not None and state.shape[0] == x.shape[0] else None

    # -- training ------------------------------------------------------------------------------

    def on_train_epoch_start(self):
        self._hidden = None          # each epoch starts from a zero state (and the first window)
        self._sums = None
        self._last_clean_step = -1

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self._run(x, self._carried(self._hidden, x))
        self._hidden = out.hidden.detach()
        loss = cross_entropy(out.logits, y)
        total = loss + self.regularisation(out.states)
        self._scale_lr(x.shape[1])
        with torch.no_grad():
            row = torch.stack([loss.detach().float() * y.numel(), loss.new_tensor(float(y.numel()))])
            self._sums = row if self._sums is None else self._sums + row
        self._step_in_epoch = batch_idx
        last = self._last_step(batch_idx)
        self._check_finite(batch_idx, force=last)
        if last:
            self._log_epoch_means()
        return total

    def regularisation(self, states: torch.Tensor) -> torch.Tensor:
        """The weighted regularisers of the cell outputs (weight decay is the optimizer's)."""
        terms = states.new_zeros(())
        if self.slowness:
            terms = terms + self.slowness * slowness_penalty(states)
        if self.activation_l2:
            terms = terms + self.activation_l2 * activation_l2(states)
        return terms

    def _scale_lr(self, length: int) -> None:
        """This window's learning rate, ``lr * length / bptt`` (set before the optimizer steps)."""
        if self._sgd is not None:
            for group in self._sgd.param_groups:
                group['lr'] = self.lr * length / self.bptt

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.trigger.fired:
            self.average.update(self.model)

    def _last_step(self, step: int) -> bool:
        """Whether this is the epoch's last window (also for training windows without a length)."""
        if self._trainer is None:
            return False
        trainer = self.trainer
        return step + 1 >= trainer.num_training_batches or bool(getattr(trainer, 'is_last_batch', False))

    def _check_finite(self, step: int, force: bool = False) -> None:
        """Raise :class:`NonFiniteLossError` if a loss since the last check was NaN/inf (a read every few steps)."""
        if self.nonfinite_check_every is None or self._sums is None:
            return
        if not (force or (step + 1) % self.nonfinite_check_every == 0):
            return
        if not bool(torch.isfinite(self._sums[0])):
            raise NonFiniteLossError(f'the training loss became nan/inf at epoch {self.current_epoch}, '
                                     f'steps {self._last_clean_step + 1}-{step}; stopping (lower the learning rate?)')
        self._last_clean_step = step

    def _log_epoch_means(self) -> None:
        """The epoch's mean loss and its perplexity, handed to Lightning once (weighted by tokens)."""
        if self._sums is None:
            return
        tokens = int(self._sums[1])
        loss = self._sums[0] / self._sums[1]
        kwargs = dict(on_step=False, on_epoch=True, batch_size=max(tokens, 1))
        self.log(f'{self.log_prefix}loss', loss, prog_bar=True, **kwargs)
        self.log(f'{self.log_prefix}ppl', torch.exp(loss.clamp(max=_MAX_LOSS)), prog_bar=True, **kwargs)
        self._sums = None

    def on_train_epoch_end(self):
        self._check_finite(self._step_in_epoch, force=True)
        self._log_epoch_means()        # an epoch that stopped before its last step

    def configure_optimizers(self):
        self._sgd = torch.optim.SGD(self.model.parameters(), lr=self.lr, weight_decay=2 * self.weight_decay)
        return self._sgd

    # -- evaluation: validation and test -------------------------------------------------------

    def _eval_start(self) -> None:
        self._eval_hidden, self._eval_sums = None, None     # a zero state at the split's start
        if self.weight_averaging and self.average.count:
            self._swap = self.average.swapped_in(self.model)
            self._swap.__enter__()

    def _eval_step(self, batch) -> None:
        x, y = batch
        out = self._run(x, self._carried(self._eval_hidden, x))
        self._eval_hidden = out.hidden
        row = torch.stack([cross_entropy(out.logits, y) * y.numel(), out.logits.new_tensor(float(y.numel()))])
        self._eval_sums = row if self._eval_sums is None else self._eval_sums + row

    def _eval_end(self, prefix: str) -> float:
        if self._swap is not None:
            swap, self._swap = self._swap, None
            swap.__exit__(None, None, None)
        if self._eval_sums is None:
            return math.nan
        loss = float(self._eval_sums[0] / self._eval_sums[1])
        ppl = perplexity(loss)
        self.log(f'{prefix}_loss', loss, on_step=False, on_epoch=True, prog_bar=False)
        self.log(f'{prefix}_ppl', ppl, on_step=False, on_epoch=True, prog_bar=True)
        return ppl

    def on_validation_epoch_start(self):
        self._eval_start()

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_validation_epoch_end(self):
        ppl = self._eval_end('val')
        if self.weight_averaging and not self.trainer.sanity_checking and math.isfinite(ppl):
            self.trigger.update(ppl)

    def on_test_epoch_start(self):
        self._eval_start()

    def test_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_test_epoch_end(self):
        self._eval_end('test')

    # -- checkpoints ---------------------------------------------------------------------------

    _CHECKPOINT_KEY = 'language_model'

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[self._CHECKPOINT_KEY] = {'trigger': self.trigger.state_dict(),
                                            'average': self.average.state_dict()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(self._CHECKPOINT_KEY)
        if state:
            self.trigger.load_state_dict(state['trigger'])
            first = next(self.model.parameters(), None)
            self.average.load_state_dict(state['average'], device=first.device if first is not None else None)
