"""CUDA graphs for a fixed recurrent network: a window of T steps is one fixed-shape graph.

A recurrent cell walked step by step is launch-bound on a GPU: the paper's cell is 12 nodes x 35
steps per window, a few small kernels each, some 2,000 launches forward and as many backward per
training step, each far shorter than the CPU time it takes to launch. But a *fixed* cell over a
window of a given length is always the same sequence of kernels on tensors of the same shapes:
one CUDA graph, replayed with one launch (:class:`~nni_enas.training.cuda_graphs.CudaGraphModule`
captures and replays it, with its checks and fallbacks).

enas_lm's random-length BPTT gives windows of every length from 1 to bptt + 20, and a graph
serves one shape. :class:`WindowGraphs` therefore pads a window of T steps to the next multiple
of ``bucket`` steps (8: at most 7 graphs at bptt 35; a window of exactly ``bptt`` steps, the
evaluation's, has its own graph) and cuts the outputs back to T steps. The
padded steps come after every real one, so nothing real reads them: the logits and cell outputs
of the first T steps, the loss, its gradients (the padded steps add zero) and the state after
step T (the cell's output at step T, which is also its next state) are those of the unpadded
window. The cost is the padded steps' arithmetic: about 10% at bptt 35.

Used by :class:`~nni_enas.training.language_model.LanguageModelTraining` for a fixed network on
CUDA (``cuda_graphs='auto'``: retraining); the search's cells change every step and stay eager.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from nni_enas.training.cuda_graphs import CudaGraphModule

__all__ = ['WindowGraphs', 'padded_length']


def padded_length(steps: int, bucket: int) -> int:
    """The graph length that serves a window of ``steps``: the next multiple of ``bucket``."""
    return -(-steps // bucket) * bucket


class WindowGraphs:
    """``net(tokens, hidden)`` for a fixed recurrent network, each window run by the graph of its padded length.

    Parameters
    ----------
    net
        A fixed network with ``forward(tokens [B, T], hidden [B, H] | None)`` returning a NamedTuple
        with ``logits``, ``hidden`` and ``states`` (cell outputs, ``states[:, t]`` the state after
        step t), and a ``hidden_size`` attribute.
    bucket
        Windows are padded to a multiple of this many steps.
    exact
        Window lengths that get a graph of their own, unpadded (the nominal ``bptt``).
    wrapper
        The graph wrapper class (default :class:`CudaGraphModule`; CPU stand-ins in tests).

    Attributes
    ----------
    graphs
        ``{padded length: wrapper}``, one per length seen.
    """

    def __init__(self, net: nn.Module, *, bucket: int = 8, exact: tuple[int, ...] = (), wrapper=None):
        if bucket < 1:
            raise ValueError(f'bucket must be at least 1, got {bucket}')
        self.net = net
        self.bucket = bucket
        self.exact = set(exact)
        self.wrapper = wrapper or CudaGraphModule
        self.graphs: dict[int, Any] = {}

    def __call__(self, tokens: torch.Tensor, hidden: torch.Tensor | None = None):
        batch, steps = tokens.shape
        if hidden is None:          # a graph takes tensors only: the zero state, written out
            hidden = torch.zeros(batch, self.net.hidden_size, device=tokens.device,
                                 dtype=next(self.net.parameters()).dtype)
        length = steps if steps in self.exact else padded_length(steps, self.bucket)
        if length > steps:          # repeat the last token: any id would do, nothing real reads them
            tokens = torch.cat([tokens, tokens[:, -1:].expand(batch, length - steps)], dim=1)
        graph = self.graphs.get(length)
        if graph is None:
            graph = self.graphs[length] = self._wrap(length)
        out = graph(tokens, hidden)
        if length == steps:
            return out
        return out._replace(logits=out.logits[:, :steps], hidden=out.states[:, steps - 1],
                            states=out.states[:, :steps])

    def _wrap(self, length: int):
        if isinstance(self.wrapper, type) and issubclass(self.wrapper, CudaGraphModule):
            return self.wrapper(self.net, name=f'window of {length} steps')
        return self.wrapper(self.net)
