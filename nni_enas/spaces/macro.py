"""ENAS macro search space (spec A): a chain of layers, each with one op and skips to earlier layers.

Labels: ``layer_{i}/op`` (one of :data:`~nni_enas.spaces.ops.MACRO_OPS`) and ``layer_{i}/skip`` (for
i >= 1: the subset of [stem, layer_0, ..., layer_{i-2}] summed into layer i; the immediate
predecessor is always the op's input).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from nni.mutable import label_scope
from nni.nas.nn.pytorch import InputChoice, LayerChoice

from nni_enas.spaces.base import EnasSpace
from nni_enas.spaces.ops import MACRO_OPS, FactorizedReduce, ReLUConvBN, build_op, init_weights
from nni_enas.spaces.supernet import chosen_indices

__all__ = ['MacroSpace']


def reduction_layers(num_layers: int) -> tuple[int, ...]:
    """Layer indices after which the resolution halves: L//3 - 1 and 2*(L//3) - 1 (TF)."""
    p = num_layers // 3
    return tuple(sorted({i for i in (p - 1, 2 * p - 1) if 0 <= i < num_layers - 1}))


class MacroLayer(nn.Module):
    """One macro layer: op on the previous output, plus the chosen skips.

    Search layout: ``BN(op(prev) + sum(skips))``. Final layout: ``BN(conv1x1(ReLU(concat(skips +
    [op(prev)]))))``; its width depends on the number of skips, so the final layout only exists as
    a fixed network (``freeze``), never as a supernet.
    """

    def __init__(self, index: int, channels: int, final: bool):
        super().__init__()
        self.final = final
        with label_scope(f'layer_{index}'):
            self.op = LayerChoice({name: build_op(name, channels, channels, space='macro', final=final)
                                   for name in MACRO_OPS}, label='op')
            self.skip = InputChoice(index, n_chosen=None, reduction='concat' if final else 'sum',
                                    label='skip') if index > 0 else None
        if final:
            self.num_skips = len(chosen_indices(self.skip)) if self.skip is not None else 0
            self.merge = ReLUConvBN(channels * (self.num_skips + 1), channels)
        else:
            self.merge = nn.BatchNorm2d(channels)

    def forward(self, prev: torch.Tensor, earlier: list[torch.Tensor]) -> torch.Tensor:
        out = self.op(prev)
        skip = self.skip(earlier) if self.skip is not None else None
        if self.final:
            if skip is not None and skip.shape[1] != out.shape[1] * self.num_skips:
                raise RuntimeError('a final-layout MacroSpace is a fixed network: build it with freeze(), '
                                   'search with final=False')
            return self.merge(out if skip is None else torch.cat([skip, out], dim=1))
        return self.merge(out if skip is None else out + skip)


class MacroSpace(EnasSpace):
    """The ENAS macro space as an NNI 3.0 model space.

    Parameters
    ----------
    num_layers
        Number of layers L (12 in the paper's search, 24 in the published final network).
        Resolution halves after layers ``L//3 - 1`` and ``2*(L//3) - 1``.
    channels
        Base width C (36 in search, 96 in the final network).
    num_classes
        Classifier outputs (10 for CIFAR-10).
    dropout
        Dropout before the classifier (0.1 in search, 0.5 in the final network).
    final
        ``False``: the search layout (width stays C, skips summed, conv-BN-ReLU ops).
        ``True``: the final layout (width doubles at reductions, skips concatenated then
        ReLU-1x1-BN, ReLU-conv-BN ops); only meaningful for fixed networks (``freeze``).

    Examples
    --------
    >>> space = MacroSpace(num_layers=4, channels=8)
    >>> net = space.freeze({**{f'layer_{i}/op': 'conv_3x3' for i in range(4)},
    ...                     **{f'layer_{i}/skip': [] for i in range(1, 4)}})
    """

    name = 'macro'
    # one group, no leading inputs: layer i's i skip candidates are keyed by the anchors of layers 0..i-1 (TF)
    anchor_groups = {'': 0}

    def __init__(self, num_layers: int = 12, channels: int = 36, num_classes: int = 10,
                 dropout: float = 0.1, final: bool = False):
        super().__init__()
        if num_layers < 1 or channels < 2:
            raise ValueError('MacroSpace needs num_layers >= 1 and channels >= 2')
        self.reduce_after = reduction_layers(num_layers)
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))
        self.layers = nn.ModuleList()
        self.reductions = nn.ModuleDict()
        width = channels
        for i in range(num_layers):
            self.layers.append(MacroLayer(i, width, final))
            if i in self.reduce_after:
                new_width = width * 2 if final else width
                # Every stored output (stem, layers 0..i) gets its own factorized reduction (spec A.4).
                self.reductions[str(i)] = nn.ModuleList(FactorizedReduce(width, new_width) for _ in range(i + 2))
                width = new_width
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(width, num_classes, bias=False)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [self.stem(x)]
        for i, layer in enumerate(self.layers):
            # candidates of layer i's skip: everything before its immediate predecessor
            outputs.append(layer(outputs[-1], outputs[:-1]))
            if str(i) in self.reductions:
                outputs = [reduce(t) for reduce, t in zip(self.reductions[str(i)], outputs)]
        out = torch.flatten(nn.functional.adaptive_avg_pool2d(outputs[-1], 1), 1)
        return self.classifier(self.dropout(out))
