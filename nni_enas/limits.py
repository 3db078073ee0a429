"""What sizes and values the commands accept: one table, read by the flags and the architecture format.

* :data:`SPACE_ARG_RANGES`: what an architecture file's ``space_args`` may ask for
  (:mod:`nni_enas.architecture` checks files against it); the flags that set the same sizes
  (``--layers``, ``--channels``, ``--nodes``, ``--dropout``, ``--drop-path-prob``) take their
  range from it, so a search can only export what retraining accepts;
* :data:`FLAG_RANGES`: the range of every numeric flag of ``search.py`` and ``retrain.py``
  (``cli.ranged`` turns an entry into the flag's argparse check);
* :data:`MAX_PARAMETERS`: the parameter ceiling of any network, search space or controller a
  command builds; larger ones are refused before any work with the estimate in the line
  (:mod:`nni_enas.sizes`).

Ranges are wide: far beyond the paper's settings, and only low enough that a typo (``1e9``
layers) is refused instead of hanging or eating memory. Sizes whose limit depends on the
machine (the synthetic data set, the candidate pool, the controller) have no fixed upper bound
here: :mod:`nni_enas.sizes` estimates their memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ['SPACE_ARG_RANGES', 'RNN_ARG_RANGES', 'MAX_PARAMETERS', 'IMAGE_SIDE', 'Range', 'FLAG_RANGES']

# What a file may ask for: (type, lowest, highest), both included. Far beyond the paper's
# (24 layers, 5 nodes, 96 channels), and low enough that a typo (1e9 layers) is refused.
SPACE_ARG_RANGES = {
    'num_layers': (int, 1, 100), 'num_nodes': (int, 1, 16), 'channels': (int, 2, 1024),
    'num_classes': (int, 1, 100_000), 'dropout': (float, 0.0, 0.999), 'drop_path_prob': (float, 0.0, 0.999),
}
# The recurrent cell's (the paper: 12 nodes, hidden 200 in search, 800 final, 10k words; WikiText-2
# has 33k). The parameter ceiling (MAX_PARAMETERS) refuses the sizes these allow but memory does not.
RNN_ARG_RANGES = {
    'vocab_size': (int, 1, 10_000_000), 'num_nodes': (int, 1, 64), 'hidden_size': (int, 1, 65_536),
    **{f'dropout_{k}': (float, 0.0, 0.999) for k in 'eixho'},
}
MAX_PARAMETERS = 10**9     # 4 GB of float32 weights: a typo, not a network to train
IMAGE_SIDE = 32            # every dataset's images (image folders are resized to it)


@dataclass(frozen=True)
class Range:
    """A flag's values: ``kind`` (int or float) from ``low`` to ``high`` (``None``: no bound).

    ``open_low`` / ``open_high`` leave the bound itself out (a learning rate > 0, a skip target
    in (0, 1): the KL to Bernoulli(0) or Bernoulli(1) is infinite).
    """

    kind: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def contains(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.open_high and value == self.high))

    def describe(self) -> str:
        """``'an integer from 1 to 100'``, ``'a positive number'``, ``'a number in (0, 1)'``..."""
        noun = 'an integer' if self.kind is int else 'a number'
        low, high = self.low, self.high
        if high is None:
            if low == 0 and self.open_low or (low == 1 and self.kind is int):
                return 'a positive integer' if self.kind is int else 'a positive number'
            return noun if low is None else f'{noun} {">" if self.open_low else ">="} {_number(low)}'
        if not (self.open_low or self.open_high):
            return f'{noun} from {_number(low)} to {_number(high)}'
        return (f'{noun} in {"(" if self.open_low else "["}{_number(low)}, {_number(high)}'
                f'{")" if self.open_high else "]"}')


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f'{x:g}'


def _space(key: str) -> Range:
    kind, low, high = SPACE_ARG_RANGES[key]
    return Range(kind, low, high)


_COUNT = Range(int, 1)
_RATE = Range(float, 0, open_low=True)
_WEIGHT = Range(float, 0)

# Every numeric flag of search.py and retrain.py, by its argparse dest.
FLAG_RANGES: dict[str, Range] = {
    # the network's sizes: the architecture format's own limits
    'layers': _space('num_layers'), 'channels': _space('channels'), 'nodes': _space('num_nodes'),
    'dropout': _space('dropout'), 'drop_path_prob': _space('drop_path_prob'),
    # how long and how much at once (the paper: at most 630 epochs, batches of 160)
    'epochs': Range(int, 1, 100_000), 'batch_size': Range(int, 1, 100_000),
    'ctrl_steps': Range(int, 1, 1_000_000), 'candidate_batches': Range(int, 1, 1_000_000),
    'valid_size': Range(int, 1, 100_000_000), 'cutout': Range(int, 0, IMAGE_SIDE),
    'devices': Range(int, 1, 1024), 'workers': Range(int, 0, 1024), 'seed': Range(int, 0, 2**32 - 1),
    # bounded by memory (nni_enas.sizes)
    'ctrl_steps_aggregate': _COUNT, 'num_candidates': _COUNT, 'lstm_size': _COUNT,
    'synthetic_size': Range(int, 2),
    # rates and weights: any finite value; one that makes a loss NaN stops the run (exit 1)
    'lr_max': _RATE, 'ctrl_lr': _RATE, 'tanh_constant': _RATE, 'op_tanh_reduce': _RATE,
    'lr_min': _WEIGHT, 'weight_decay': _WEIGHT, 'grad_clip': _WEIGHT, 'entropy_weight': _WEIGHT,
    'skip_weight': _WEIGHT, 'aux_weight': _WEIGHT,
    # probabilities
    'skip_target': Range(float, 0, 1, open_low=True, open_high=True),
    'baseline_decay': Range(float, 0, 1, open_high=True),
    # the recurrent cell (search.py --search-for rnn, retrain.py on an rnn architecture)
    'hidden_size': Range(int, *RNN_ARG_RANGES['hidden_size'][1:]),
    **{f'dropout_{k}': Range(float, *RNN_ARG_RANGES[f'dropout_{k}'][1:]) for k in 'eixho'},
    'lr': _RATE, 'bptt': Range(int, 1, 10_000), 'temperature': _RATE, 'reward_constant': _RATE,
    'init_range': Range(float, 0, 10, open_low=True),
    'activation_l2': _WEIGHT, 'slowness': _WEIGHT, 'averaging_patience': Range(int, 1, 100_000),
    'valid_batch_size': Range(int, 1, 100_000), 'test_batch_size': Range(int, 1, 100_000),
    # python3 -m nni_enas.draw: pixels per drawing unit (under 0.1 the text would be under 2 pixels, or no font)
    'scale': Range(float, 0.1, 10),
}
