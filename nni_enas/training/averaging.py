"""Weight averaging for the final language model: NT-ASGD's trigger and the averaged weights.

The corrected ENAS language-model code (``enas_lm``, ENAS_RNN_SPEC Part 2 5.3) evaluates the final
network with averaged weights once training stalls, as AWD-LSTM's non-monotonically triggered
averaged SGD (NT-ASGD) does:

* :class:`NonMonotoneTrigger`: after each epoch's validation perplexity, averaging starts when
  more than ``patience`` epochs are recorded and the current perplexity is worse than the best of
  all but the last ``patience`` ones (enas_lm's ``best_valid_ppl_threshold`` = 10);
* :class:`WeightAverage`: from then on, after every optimizer step, the uniform running mean of
  every parameter (``avg += (w - avg) / k``); :meth:`WeightAverage.swapped_in` evaluates with it.

Both are plain state (tensors and numbers) saved in the checkpoint, so a resumed run averages
exactly as one that never stopped.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn as nn

__all__ = ['NonMonotoneTrigger', 'WeightAverage']


class NonMonotoneTrigger:
    """Says when averaging starts: the validation perplexity stopped improving (enas_lm's rule).

    ``update(ppl)`` is called once per epoch with that epoch's validation perplexity and returns
    whether averaging should be on from now on. It fires at the first epoch where more than
    ``patience`` perplexities were recorded before it and ``ppl`` is above the minimum of all of
    them except the last ``patience``; once fired it stays on.
    """

    def __init__(self, patience: int = 10):
        if patience < 1:
            raise ValueError(f'patience must be at least 1, got {patience}')
        self.patience = patience
        self.history: list[float] = []
        self.fired_at: int | None = None       # the epoch (counted from 1) whose perplexity fired it

    @property
    def fired(self) -> bool:
        return self.fired_at is not None

    def update(self, ppl: float) -> bool:
        history = self.history
        if not self.fired and len(history) > self.patience and ppl > min(history[:-self.patience]):
            self.fired_at = len(history) + 1
        history.append(float(ppl))
        return self.fired

    def state_dict(self) -> dict[str, Any]:
        return {'patience': self.patience, 'history': list(self.history), 'fired_at': self.fired_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.patience, self.history, self.fired_at = state['patience'], list(state['history']), state['fired_at']


class WeightAverage:
    """The uniform running mean of a network's parameters over the steps since averaging started.

    Buffers (none in the recurrent networks) are not averaged.
    """

    def __init__(self):
        self.count = 0
        self.average: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """Add the current parameters (call after an optimizer step)."""
        params = [p.detach() for p in net.parameters()]
        self.count += 1
        if self.count == 1:
            self.average = [p.clone() for p in params]
            return
        self._follow(params)
        for average, p in zip(self.average, params):
            average.lerp_(p, 1.0 / self.count)      # avg + (w - avg) / k

    @contextlib.contextmanager
    def swapped_in(self, net: nn.Module) -> Iterator[bool]:
        """Within the block the network holds the averaged weights (if any); yields whether it does."""
        if not self.count:
            yield False
            return
        params = list(net.parameters())
        if len(params) != len(self.average):
            raise RuntimeError(f'the averaged weights are of another network ({len(self.average)} tensors, '
                               f'this one has {len(params)})')
        self._follow(params)
        with torch.no_grad():
            saved = [p.detach().clone() for p in params]
            for p, a in zip(params, self.average):
                p.copy_(a)
        try:
            yield True
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)

    def _follow(self, params: list[torch.Tensor]) -> None:
        # a checkpoint is restored before Lightning moves the network to its device
        if self.average and self.average[0].device != params[0].device:
            self.average = [a.to(params[0].device) for a in self.average]

    def state_dict(self) -> dict[str, Any]:
        return {'count': self.count, 'average': [a.detach().cpu() for a in self.average]}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str | None = None) -> None:
        self.count = int(state['count'])
        self.average = [a.to(device) if device is not None else a for a in state['average']]
