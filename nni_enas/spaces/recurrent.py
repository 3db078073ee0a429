"""ENAS recurrent-cell search space (ENAS_RNN_SPEC Part 1): a language model around one searched cell.

The cell has N nodes. Node 0 reads ``[x_t, h_{t-1}]``; node j >= 1 reads one earlier node. Every
node has the highway form of the official codes (spec 1.4-1.5), with no biases::

    h~, t = split(input @ W)            # W: 2H x 2H for node 0, H x 2H for node j
    s     = h_in + sigmoid(t) * (f(h~) - h_in)

where ``h_in`` is ``h_{t-1}`` for node 0 and the chosen node's output for node j, and ``f`` is the
node's activation (:data:`~nni_enas.spaces.ops.RNN_ACTIVATIONS`). The cell's output and next state
are the mean of the loose ends (nodes no later node reads). Around the cell: a tied
embedding/decoder (embedding = hidden, no output bias) and the locked dropouts of enas_lm (spec 3.2).

Labels: ``node_0/act`` and, for j >= 1, ``node_{j}/prev`` (an int in 0..j-1) and ``node_{j}/act``
(an activation name). NNI's ``LayerChoice`` / ``InputChoice`` cannot pick one weight by two
choices at once, so each node is a small mutable module, :class:`NodeChoice`, holding its two
``nni.choice`` mutables and the shared weights, one matrix per (previous node, activation) as both
official codes; its path-sampling twin (:class:`~nni_enas.spaces.supernet.PathSamplingNode`) is
plugged in by the supernet's mutation hooks, and under ``freeze`` it is a :class:`FixedNode` with
one matrix.

The time loop reads the architecture once per forward call (which node reads which, in which
order) and then runs the same tensor operations at every step: a fixed cell over a fixed window
is one fixed-shape computation, with no host sync, which is what a CUDA graph can capture.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import nni
import torch
import torch.nn as nn
import torch.nn.functional as F
from nni.mutable import ensure_frozen, label_scope
from nni.nas.nn.pytorch import MutableModule

from nni_enas.spaces.base import EnasSpace
from nni_enas.spaces.ops import RNN_ACTIVATIONS, rnn_activation

__all__ = ['RecurrentSpace', 'RecurrentOutput', 'NodeChoice', 'FixedNode', 'fixed_parameter_count', 'loose_ends']


class RecurrentOutput(NamedTuple):
    """What :meth:`RecurrentSpace.forward` returns."""

    logits: torch.Tensor   # [B, T, V]
    hidden: torch.Tensor   # [B, H]: the state after the last step (not detached)
    states: torch.Tensor   # [B, T, H]: the cell's outputs, before the output dropout


def _input_size(index: int, hidden_size: int) -> int:
    return 2 * hidden_size if index == 0 else hidden_size


def _prev_choice(index: int):
    return nni.choice('prev', list(range(index))) if index > 0 else None


def _act_choice():
    return nni.choice('act', list(RNN_ACTIVATIONS))


def weight_key(prev: int | None, act: str) -> str:
    """The key of a shared matrix in :attr:`NodeChoice.weights` (``'2_relu'``; node 0: ``'relu'``)."""
    return act if prev is None else f'{prev}_{act}'


class NodeChoice(MutableModule):
    """Node j of the searched cell: its decisions and its shared weights.

    Mutables ``prev`` (j >= 1) and ``act``, labelled inside the space's ``node_{j}`` scope.
    ``weights`` holds one matrix per (previous node, activation) (node 0: one 2H x 2H per
    activation), so a child step touches only the matrices it uses. Built under NNI's
    ``model_context`` (``freeze``), it is a :class:`FixedNode` instead. Un-mutated (a plain space),
    it runs NNI's dry-run pick.
    """

    def __init__(self, index: int, hidden_size: int):
        super().__init__()
        self.index, self.hidden_size = index, hidden_size
        self.prev_choice = _prev_choice(index)
        self.act_choice = _act_choice()
        if self.prev_choice is not None:
            self.add_mutable(self.prev_choice)
        self.add_mutable(self.act_choice)
        self._dry_run = (ensure_frozen(self.prev_choice) if index else None, ensure_frozen(self.act_choice))
        rows = _input_size(index, hidden_size)
        self.weights = nn.ParameterDict({
            weight_key(prev, act): nn.Parameter(torch.empty(rows, 2 * hidden_size))
            for prev in (range(index) if index else [None]) for act in RNN_ACTIVATIONS})

    @classmethod
    def create_fixed_module(cls, sample: dict, index: int, hidden_size: int) -> 'FixedNode':
        prev_choice = _prev_choice(index)
        prev = prev_choice.freeze(sample) if prev_choice is not None else None
        return FixedNode(index, hidden_size, prev, _act_choice().freeze(sample))

    @property
    def labels(self) -> tuple[str | None, str]:
        return (self.prev_choice.label if self.prev_choice is not None else None), self.act_choice.label

    def pick(self) -> tuple[int | None, str]:
        return self._dry_run

    def matrix(self) -> torch.Tensor:
        return self.weights[weight_key(*self.pick())]

    def freeze(self, sample: dict[str, Any]) -> 'FixedNode':
        self.validate(sample)
        prev = self.prev_choice.freeze(sample) if self.prev_choice is not None else None
        node = FixedNode(self.index, self.hidden_size, prev, self.act_choice.freeze(sample))
        with torch.no_grad():
            node.weight.copy_(self.weights[weight_key(prev, node.act)])
        return node


class FixedNode(nn.Module):
    """A node of a fixed cell: its previous node, its activation and its one matrix ``weight``."""

    def __init__(self, index: int, hidden_size: int, prev: int | None, act: str):
        super().__init__()
        if act not in RNN_ACTIVATIONS or (index > 0) != (prev is not None) or (index and not 0 <= prev < index):
            raise ValueError(f'node {index}: previous node {prev!r} / activation {act!r} out of range')
        self.index, self.hidden_size, self.prev, self.act = index, hidden_size, prev, act
        self.weight = nn.Parameter(torch.empty(_input_size(index, hidden_size), 2 * hidden_size))

    def pick(self) -> tuple[int | None, str]:
        return self.prev, self.act

    def matrix(self) -> torch.Tensor:
        return self.weight

    def extra_repr(self) -> str:
        return f'node {self.index}: {self.act} <- ' + ('[x, h]' if self.prev is None else f'node {self.prev}')


def loose_ends(prevs: list[int | None]) -> list[int]:
    """The nodes no later node reads, given each node's previous node (node 0's is ``None``)."""
    used = {p for p in prevs if p is not None}
    return [j for j in range(len(prevs)) if j not in used]


def fixed_parameter_count(vocab_size: int = 10000, num_nodes: int = 12, hidden_size: int = 200, **_) -> int:
    """Parameters of a fixed network: the tied embedding, node 0's 2H x 2H and one H x 2H per later node."""
    h = hidden_size
    return vocab_size * h + (2 * h) * (2 * h) + (num_nodes - 1) * h * (2 * h)


def _highway(pre: torch.Tensor, h_in: torch.Tensor, f) -> torch.Tensor:
    h_tilde, t = pre.chunk(2, dim=-1)
    return h_in + torch.sigmoid(t) * (f(h_tilde) - h_in)


def _locked_mask(p: float, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A dropout mask with drop rate ``p``, scaled by 1 / (1 - p), drawn once and reused over the window."""
    return (torch.rand(shape, device=like.device, dtype=like.dtype) >= p).to(like.dtype) / (1 - p)


class _Plan(NamedTuple):
    """One forward call's reading of the architecture: the same at every time step."""

    w_x: torch.Tensor            # [H, 2H]: node 0's rows for x_t
    w_h: torch.Tensor            # [H, 2H]: node 0's rows for h_{t-1}
    act0: Any
    groups: list                 # (prev, [H, 2H * k] weights, [(node, f), ...]): the nodes reading one node
    loose: list[int]


class RecurrentSpace(EnasSpace):
    """The ENAS recurrent-cell space as an NNI 3.0 model space: a word-level language model.

    Parameters
    ----------
    vocab_size
        Words V (10000 for Penn Treebank).
    num_nodes
        Nodes N of the cell (12 in the paper): node 0 and N - 1 searched nodes.
    hidden_size
        Hidden size H, also the embedding size (tied decoder): 200 in search, 800 in the final network.
    dropout_e, dropout_i, dropout_x, dropout_h, dropout_o
        Drop rates of enas_lm's locked dropouts (one mask per forward call, training mode only):
        whole embedding rows (e), the embedded input ([B, 1, H], i), x into node 0 ([B, H], x), the
        recurrent state and every node's input ([B, H], h: one mask for h_{t-1} and all nodes) and
        the cell's output before the decoder ([B, 1, H], o). Defaults: enas_lm's search values.

    Examples
    --------
    >>> space = RecurrentSpace(vocab_size=50, num_nodes=3, hidden_size=8)
    >>> net = space.freeze({'node_0/act': 'tanh', 'node_1/prev': 0, 'node_1/act': 'relu',
    ...                     'node_2/prev': 0, 'node_2/act': 'identity'})
    >>> out = net(torch.randint(50, (4, 35)))        # out.logits [4, 35, 50], out.hidden [4, 8]
    >>> out = net(next_window, out.hidden.detach())   # the state carried to the next window
    """

    name = 'rnn'
    # one group, no leading inputs: node j's prev candidates are the anchors of nodes 0..j-1 (TF0, enas_lm)
    anchor_groups = {'': 0}
    index_choices = ('prev',)

    def __init__(self, vocab_size: int = 10000, num_nodes: int = 12, hidden_size: int = 200,
                 dropout_e: float = 0.10, dropout_i: float = 0.20, dropout_x: float = 0.75,
                 dropout_h: float = 0.25, dropout_o: float = 0.75):
        super().__init__()
        rates = dict(dropout_e=dropout_e, dropout_i=dropout_i, dropout_x=dropout_x, dropout_h=dropout_h,
                     dropout_o=dropout_o)
        if vocab_size < 1 or num_nodes < 1 or hidden_size < 1 or not all(0 <= p < 1 for p in rates.values()):
            raise ValueError('RecurrentSpace needs vocab_size, num_nodes and hidden_size >= 1 and drop rates in [0, 1)')
        self.vocab_size, self.num_nodes, self.hidden_size = vocab_size, num_nodes, hidden_size
        self.dropout = rates
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.nodes = nn.ModuleList()
        for j in range(num_nodes):
            with label_scope(f'node_{j}'):
                self.nodes.append(NodeChoice(j, hidden_size))
        self.reset_parameters()

    def reset_parameters(self, init_range: float = 0.04) -> None:
        """Every weight uniform in [-init_range, init_range] (enas_lm: 0.04 in search, 0.05 in the final training)."""
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-init_range, init_range)

    # -- the architecture, read once per forward call ------------------------------------------

    def _plan(self) -> _Plan:
        picks = [node.pick() for node in self.nodes]
        h = self.hidden_size
        w0 = self.nodes[0].matrix()
        groups, members = [], {}
        for j in range(1, self.num_nodes):
            prev, act = picks[j]
            if prev not in members:
                members[prev] = []
                groups.append(prev)
            members[prev].append(j)
        # Nodes reading the same node share one matmul; a group runs at its first node, after its input.
        planned = []
        for prev in groups:
            nodes = members[prev]
            weight = torch.cat([self.nodes[j].matrix() for j in nodes], dim=1) if len(nodes) > 1 \
                else self.nodes[nodes[0]].matrix()
            planned.append((prev, weight, [(j, rnn_activation(picks[j][1])) for j in nodes]))
        return _Plan(w0[:h], w0[h:], rnn_activation(picks[0][1]), planned, loose_ends([p for p, _ in picks]))

    def architecture(self) -> dict[str, Any]:
        """The architecture the network runs now (a fixed cell's, or the supernet's sampled one)."""
        arch: dict[str, Any] = {}
        for j, node in enumerate(self.nodes):
            prev, act = node.pick()
            if j:
                arch[f'node_{j}/prev'] = prev
            arch[f'node_{j}/act'] = act
        return arch

    # -- forward ----------------------------------------------------------------------------------

    def _masks(self, batch: int, like: torch.Tensor) -> dict[str, torch.Tensor | None]:
        shapes = {'e': (self.vocab_size,), 'i': (batch, 1, self.hidden_size), 'x': (batch, 1, self.hidden_size),
                  'h': (batch, self.hidden_size), 'o': (batch, 1, self.hidden_size)}
        return {k: _locked_mask(self.dropout[f'dropout_{k}'], shape, like)
                if self.training and self.dropout[f'dropout_{k}'] > 0 else None for k, shape in shapes.items()}

    def _embed(self, tokens: torch.Tensor, masks: dict) -> torch.Tensor:
        x = F.embedding(tokens, self.embedding.weight)
        if masks['e'] is not None:          # dropping a word's row drops it everywhere in the window
            x = x * masks['e'][tokens].unsqueeze(-1)
        for k in ('i', 'x'):
            if masks[k] is not None:
                x = x * masks[k]
        return x

    def _step(self, xw_t: torch.Tensor, h: torch.Tensor, plan: _Plan, mask_h: torch.Tensor | None) -> torch.Tensor:
        """One time step of the cell: ``h_t`` from node 0's x-part ``x_t @ W_x`` and ``h_{t-1}``."""
        h_read = h if mask_h is None else h * mask_h
        states: list[torch.Tensor | None] = [_highway(xw_t + h_read @ plan.w_h, h, plan.act0)]
        states += [None] * (self.num_nodes - 1)
        for prev, weight, members in plan.groups:
            h_in = states[prev]
            pre = (h_in if mask_h is None else h_in * mask_h) @ weight
            chunks = pre.split(2 * self.hidden_size, dim=-1)
            for (j, f), chunk in zip(members, chunks):
                states[j] = _highway(chunk, h_in, f)
        loose = [states[j] for j in plan.loose]
        out = loose[0]
        for s in loose[1:]:
            out = out + s
        return out if len(loose) == 1 else out * (1.0 / len(loose))

    def forward(self, tokens: torch.Tensor, hidden: torch.Tensor | None = None) -> RecurrentOutput:
        """Run the cell over a window ``tokens`` [B, T] from ``hidden`` [B, H] (``None``: a zero state)."""
        batch, steps = tokens.shape
        weight = self.embedding.weight
        if hidden is None:
            hidden = weight.new_zeros(batch, self.hidden_size)
        masks = self._masks(batch, weight)
        plan = self._plan()
        # x_t's half of node 0's matmul for the whole window at once: it does not depend on h.
        xw = self._embed(tokens, masks) @ plan.w_x
        h, outputs = hidden, []
        for t in range(steps):
            h = self._step(xw[:, t], h, plan, masks['h'])
            outputs.append(h)
        states = torch.stack(outputs, dim=1)
        top = states if masks['o'] is None else states * masks['o']
        return RecurrentOutput(F.linear(top, weight), h, states)
