"""The candidate operations: one table for the macro space, the micro space, the recurrent cell and retraining.

Every op name used anywhere (search, export files, retraining) comes from ``MACRO_OPS``,
``MICRO_OPS`` or ``RNN_ACTIVATIONS``; :func:`build_op` turns a CNN op name into a module,
:func:`rnn_activation` a recurrent node's activation name into its function. The CNN op bodies
follow the official TensorFlow code (ENAS_SPEC A.2 and B.1):

* macro, search layout: 1x1 conv-BN-ReLU, then the k x k conv or separable conv with BN-ReLU, or
  a 3x3 pool (stride 1, no BN after it);
* macro, final layout: the same blocks with the ReLU moved in front (ReLU-1x1-BN-ReLU-kxk-BN).
  Unlike TF's final mode, separable convs are real separable convs and pools are implemented;
* micro: a separable conv is two stacked ReLU-depthwise-pointwise-BN units (the first one
  strided), pools are 3x3 with the cell's stride, identity becomes a factorized reduction when
  strided.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['MACRO_OPS', 'MICRO_OPS', 'RNN_ACTIVATIONS', 'build_op', 'rnn_activation', 'FactorizedReduce', 'ReLUConvBN',
           'init_weights']

# Index order is the TF code's, so that the published integer arcs convert by indexing.
MACRO_OPS = ('conv_3x3', 'sep_conv_3x3', 'conv_5x5', 'sep_conv_5x5', 'avg_pool_3x3', 'max_pool_3x3')
MICRO_OPS = ('sep_conv_3x3', 'sep_conv_5x5', 'avg_pool_3x3', 'max_pool_3x3', 'identity')
# A recurrent node's activation, in TF0's order (0 tanh, 1 ReLU, 2 identity, 3 sigmoid: the shipped
# arc's codes; enas_lm swaps identity and sigmoid, ENAS_RNN_SPEC 1.3).
RNN_ACTIVATIONS = ('tanh', 'relu', 'identity', 'sigmoid')
_RNN_FUNCTIONS = {'tanh': torch.tanh, 'relu': torch.relu, 'identity': lambda x: x, 'sigmoid': torch.sigmoid}


def _kernel(name: str) -> int:
    return int(name.rsplit('_', 1)[1].split('x')[0])


def _bn(channels: int) -> nn.BatchNorm2d:
    # TF: decay 0.9 (PyTorch momentum 0.1), eps 1e-5, learnable scale and offset.
    return nn.BatchNorm2d(channels, momentum=0.1, eps=1e-5)


class ReLUConvBN(nn.Sequential):
    """ReLU, k x k conv (no bias), BN: the calibration / merge block of both spaces."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1):
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), _bn(c_out))


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 convs, concatenated, then BN (spec A.4).

    Path 1 subsamples at even pixels, path 2 at odd pixels (the TF "shift by one" path).
    ``relu`` puts a ReLU in front (micro cells, spec B.3); the macro network has none.
    """

    def __init__(self, c_in: int, c_out: int, relu: bool = False):
        super().__init__()
        self.relu = nn.ReLU() if relu else nn.Identity()
        self.path1 = nn.Conv2d(c_in, c_out // 2, 1, bias=False)
        self.path2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, bias=False)
        self.bn = _bn(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        even = x[:, :, ::2, ::2]
        odd = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))[:, :, ::2, ::2]
        return self.bn(torch.cat([self.path1(even), self.path2(odd)], dim=1))


def _sep_conv(c_in: int, c_out: int, kernel: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_in, kernel, stride, kernel // 2, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False)]


def _pool(name: str, stride: int) -> nn.Module:
    if name.startswith('avg'):
        # TF's SAME average pool leaves the padding out of the count.
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    return nn.MaxPool2d(3, stride, 1)


def _macro_op(name: str, c_in: int, c_out: int, final: bool) -> nn.Module:
    layers: list[nn.Module] = [nn.ReLU()] if final else []
    layers += [nn.Conv2d(c_in, c_out, 1, bias=False), _bn(c_out), nn.ReLU()]
    if 'pool' in name:
        layers.append(_pool(name, 1))
        return nn.Sequential(*layers)
    k = _kernel(name)
    if name.startswith('sep'):
        layers += _sep_conv(c_out, c_out, k, 1)
    else:
        layers.append(nn.Conv2d(c_out, c_out, k, 1, k // 2, bias=False))
    layers.append(_bn(c_out))
    if not final:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _micro_op(name: str, channels: int, stride: int) -> nn.Module:
    if name == 'identity':
        return FactorizedReduce(channels, channels, relu=True) if stride > 1 else nn.Identity()
    if 'pool' in name:
        return _pool(name, stride)
    k = _kernel(name)
    return nn.Sequential(
        nn.ReLU(), *_sep_conv(channels, channels, k, stride), _bn(channels),
        nn.ReLU(), *_sep_conv(channels, channels, k, 1), _bn(channels),
    )


def build_op(name: str, c_in: int, c_out: int, *, space: str, stride: int = 1, final: bool = False) -> nn.Module:
    """Build the candidate op ``name`` of ``space`` ('macro' or 'micro').

    Macro ops map ``c_in`` to ``c_out`` channels at stride 1 (``final`` picks the ReLU-first
    layout of the final network); micro ops keep ``c_in == c_out`` channels and take the
    cell's ``stride``.
    """
    if space == 'macro':
        if name not in MACRO_OPS:
            raise KeyError(f'unknown macro op {name!r}; expected one of {MACRO_OPS}')
        return _macro_op(name, c_in, c_out, final)
    if space == 'micro':
        if name not in MICRO_OPS:
            raise KeyError(f'unknown micro op {name!r}; expected one of {MICRO_OPS}')
        if c_in != c_out:
            raise ValueError('micro ops keep the channel count')
        return _micro_op(name, c_in, stride)
    raise KeyError(f'unknown space {space!r}')


def rnn_activation(name: str):
    """The function of a recurrent node's activation ``name`` (one of :data:`RNN_ACTIVATIONS`)."""
    if name not in _RNN_FUNCTIONS:
        raise KeyError(f'unknown recurrent activation {name!r}; expected one of {RNN_ACTIVATIONS}')
    return _RNN_FUNCTIONS[name]


def init_weights(module: nn.Module) -> None:
    """He-normal conv and linear weights, BN scale 1 and offset 0 (the TF code's initialisation)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode='fan_in', nonlinearity='relu')
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
