"""The ENAS controller: an LSTM that samples an architecture decision by decision (spec C).

It is built from any NNI model space's ``simplify()``: each ``Categorical`` is an op decision,
each ``CategoricalMultiple`` with ``n_chosen=1`` an input decision (softmax) and with
``n_chosen=None`` a skip decision (one sigmoid per candidate). Decisions are taken in
``simplify()`` order, which for our spaces is the network's order.

Attention over anchors (spec C.1) needs to know which earlier unit each input candidate is. The
controller reads it from the labels ``[group/]unit/name``: a unit (``layer_3``, ``normal/node_4``)
leaves an anchor when it ends; an input decision with n candidates in a group whose units so far
left k anchors attends over the group's ``n - k`` leading inputs followed by those k anchors. If a
group's input decisions do not fit that pattern (any other space), they get a plain linear head.

One LSTM step per decision; a unit that does not end with an input decision takes one more
"exit" step on its last embedding, whose hidden state is the unit's anchor (TF: macro layer 0's
skip step, micro's node exit step). A group with g leading inputs starts with g steps on
``g_emb`` whose hidden states key the inputs (their value anchors are zero, as in TF).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from nni.mutable import Categorical, CategoricalMultiple

__all__ = ['ReinforceController', 'Decision', 'decisions_of']


@dataclass
class Decision:
    label: str
    kind: str            # 'op' | 'input' | 'skip'
    values: list         # candidate values, as NNI freezes them
    unit: str
    group: str

    @property
    def n(self) -> int:
        return len(self.values)


def decisions_of(space) -> list[Decision]:
    """The decisions of an NNI model space, in ``simplify()`` order."""
    result = []
    for label, mutable in space.simplify().items():
        if isinstance(mutable, Categorical):
            kind = 'op'
        elif isinstance(mutable, CategoricalMultiple) and mutable.n_chosen in (1, None):
            kind = 'input' if mutable.n_chosen == 1 else 'skip'
        else:
            raise TypeError(f'ENAS controller: {label!r} is a {type(mutable).__name__}; only categorical choices '
                            'and input choices with n_chosen 1 or None are supported')
        unit = label.rsplit('/', 1)[0] if '/' in label else label
        group = unit.rsplit('/', 1)[0] if '/' in unit else ''
        result.append(Decision(label, kind, list(mutable.values), unit, group))
    return result


def _group_inputs(decisions: list[Decision]) -> dict[str, int | None]:
    """Per group, the number g of leading inputs if every input decision fits the anchor pattern, else None."""
    found: dict[str, int | None] = {}
    units_done: dict[str, set] = {}
    for d in decisions:
        done = units_done.setdefault(d.group, set())
        if d.kind != 'op':
            g = d.n - len(done - {d.unit})
            if found.get(d.group, g) != g or g < 0:
                found[d.group] = None
            elif d.group not in found:
                found[d.group] = g
        done.add(d.unit)
    return found


class ReinforceController(nn.Module):
    """The paper's LSTM controller, trained with REINFORCE.

    Parameters
    ----------
    space
        Any NNI model space (or supernet); only its ``simplify()`` is read.
    lstm_size
        Hidden units of the one-layer LSTM (64 in the TF code).
    tanh_constant
        Logits become ``tanh_constant * tanh(logits)`` (1.5 macro, 1.1 micro); ``None`` disables it.
    op_tanh_reduce
        Op decisions use ``tanh_constant / op_tanh_reduce`` (2.5 in micro: 0.44).
    temperature
        Logits are divided by it before the tanh; ``None`` (the TF scripts) disables it.
    skip_target
        Target probability rho of a skip connection; the skip penalty is the KL divergence of each
        skip's Bernoulli from Bernoulli(rho).
    op_bias
        Initial value of a learned bias added to op logits with that many candidates (TF micro's
        ``b_soft`` = [10, 10, 0, 0, 0]); ``None`` for none.
    group_logit_offset
        Constant added to op logits after the tanh, per group (TF micro adds
        [0.25, 0.25, -0.25, -0.25, -0.25] in the normal cell).

    Examples
    --------
    >>> controller = ReinforceController(MacroSpace(num_layers=4, channels=8))
    >>> arch, log_prob, entropy, skip_penalty = controller.sample()
    >>> space.freeze(arch)   # a fixed network
    """

    def __init__(self, space, lstm_size: int = 64, tanh_constant: float | None = 1.5, op_tanh_reduce: float = 1.0,
                 temperature: float | None = None, skip_target: float = 0.4, op_bias: Sequence[float] | None = None,
                 group_logit_offset: dict[str, Sequence[float]] | None = None):
        super().__init__()
        self.decisions = decisions_of(space)
        if not self.decisions:
            raise ValueError('the model space has no choices to search')
        self._by_label = {d.label: d for d in self.decisions}
        self.group_inputs = _group_inputs(self.decisions)
        self.tanh_constant = tanh_constant
        self.op_tanh_reduce = op_tanh_reduce
        self.temperature = temperature
        self.skip_target = skip_target
        self.lstm = nn.LSTMCell(lstm_size, lstm_size, bias=False)
        self.g_emb = nn.Parameter(torch.empty(1, lstm_size))
        # Op decisions with the same candidates share their softmax and embedding (TF's W_soft, W_emb).
        self._op_keys: dict[tuple, str] = {}
        self.op_soft, self.op_emb = nn.ModuleDict(), nn.ModuleDict()
        self.input_soft, self.input_emb = nn.ModuleDict(), nn.ModuleDict()
        for d in self.decisions:
            if d.kind == 'op' and tuple(d.values) not in self._op_keys:
                key = self._op_keys[tuple(d.values)] = f'op{len(self._op_keys)}'
                self.op_soft[key] = nn.Linear(lstm_size, d.n, bias=False)
                self.op_emb[key] = nn.Embedding(d.n, lstm_size)
            elif d.kind != 'op' and self.group_inputs[d.group] is None and self._head(d) not in self.input_soft:
                # without attention, input decisions of one kind and size share a head
                self.input_soft[self._head(d)] = nn.Linear(lstm_size, d.n, bias=False)
                self.input_emb[self._head(d)] = nn.Embedding(d.n, lstm_size)
        self.attn_anchor = nn.Linear(lstm_size, lstm_size, bias=False)   # W1
        self.attn_query = nn.Linear(lstm_size, lstm_size, bias=False)    # W2
        self.attn_v = nn.Linear(lstm_size, 1, bias=False)
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)
        self.op_bias = nn.ParameterDict()
        if op_bias is not None:
            for values, key in self._op_keys.items():
                if len(values) == len(op_bias):
                    self.op_bias[key] = nn.Parameter(torch.tensor(op_bias, dtype=torch.float))
        self.group_logit_offset = {g: torch.tensor(v, dtype=torch.float) for g, v in (group_logit_offset or {}).items()}

    @staticmethod
    def _head(d: Decision) -> str:
        return f'{d.kind}{d.n}'

    # -- public API ---------------------------------------------------------------------------

    def is_skip(self, label: str) -> bool:
        """Whether ``label`` is a skip decision (any subset of its candidates)."""
        return self._by_label[label].kind == 'skip'

    def num_candidates(self, label: str) -> int:
        return self._by_label[label].n

    def sample(self) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample an architecture: ``(arch, log_prob, entropy, skip_penalty)``.

        ``arch`` maps label -> value in NNI's format (what ``space.freeze`` takes); the three
        tensors carry gradients to the controller: the summed log probability of the decisions,
        the summed entropy of their distributions, and the mean KL skip penalty (0 without skips).
        """
        arch, log_prob, entropy, penalty, _ = self._walk('sample')
        return arch, log_prob, entropy, penalty

    def sample_batch(self, n: int) -> tuple[list[dict[str, Any]], torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` architectures: ``(archs, log_prob[n], entropy[n], skip_penalty[n])``."""
        # TEMP until the ctrl branch lands: a loop over sample(); ctrl's version walks the LSTM once, batched.
        samples = [self.sample() for _ in range(n)]
        return ([s[0] for s in samples], torch.stack([s[1] for s in samples]),
                torch.stack([s[2] for s in samples]), torch.stack([s[3] for s in samples]))

    def greedy(self) -> dict[str, Any]:
        """The most likely architecture (argmax decisions, skips with probability > 0.5)."""
        return self._walk('greedy')[0]

    def evaluate(self, arch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log_prob, entropy, skip_penalty)`` of a given architecture."""
        return self._walk(arch)[1:4]

    @torch.no_grad()
    def choice_probabilities(self) -> dict[str, list[float]]:
        """Per label, the probability of each candidate along the greedy path (per candidate for skips)."""
        return self._walk('greedy')[4]

    # -- the walk -------------------------------------------------------------------------------

    def _squash(self, logits: torch.Tensor, op: bool) -> torch.Tensor:
        if self.temperature is not None:
            logits = logits / self.temperature
        if self.tanh_constant is not None:
            c = self.tanh_constant / self.op_tanh_reduce if op else self.tanh_constant
            logits = c * torch.tanh(logits)
        return logits

    def _walk(self, policy):
        device = self.g_emb.device
        zero = torch.zeros((), device=device)
        state = None
        inp = self.g_emb
        arch: dict[str, Any] = {}
        probs: dict[str, list[float]] = {}
        log_prob, entropy, kl_terms = zero, zero, []
        anchors: list[torch.Tensor] = []
        keys: list[torch.Tensor] = []
        unit = group = None
        last_kind = None

        def step(x):
            nonlocal state
            state = self.lstm(x, state)
            return state[0]

        def close_unit(h):
            nonlocal inp
            if last_kind == 'op':           # exit step on the last embedding
                h = step(inp)
                inp = self.g_emb
            if self.group_inputs.get(group) is not None:
                anchors.append(h)
                keys.append(self.attn_anchor(h))

        h = None
        for d in self.decisions:
            if d.unit != unit:
                if unit is not None:
                    close_unit(h)
                if d.group != group:
                    group = d.group
                    anchors, keys = [], []
                    inp = self.g_emb
                    for _ in range(self.group_inputs.get(group) or 0):
                        h = step(self.g_emb)
                        anchors.append(torch.zeros_like(h))
                        keys.append(self.attn_anchor(h))
                unit = d.unit
            h = step(inp)
            anchored = d.kind != 'op' and self.group_inputs[d.group] is not None
            if d.kind == 'op':
                key = self._op_keys[tuple(d.values)]
                logits = self.op_soft[key](h)[0]
                if key in self.op_bias:
                    logits = logits + self.op_bias[key]
                logits = self._squash(logits, op=True)
                if d.group in self.group_logit_offset:
                    logits = logits + self.group_logit_offset[d.group].to(device)
            elif anchored:
                scores = self.attn_v(torch.tanh(torch.cat(keys[:d.n]) + self.attn_query(h)))[:, 0]
                logits = self._squash(scores, op=False)
            else:
                logits = self._squash(self.input_soft[self._head(d)](h)[0], op=False)

            if d.kind == 'skip':
                p_on = torch.sigmoid(2 * logits)   # softmax over [-l, l]: the TF two-class form
                # log(sigmoid(x)) = -softplus(-x); F.logsigmoid is ~1000x slower on small CPU tensors in torch 2.14
                log_on, log_off = -F.softplus(-2 * logits), -F.softplus(2 * logits)
                if policy == 'sample':
                    bits = torch.bernoulli(p_on.detach()).bool()
                elif policy == 'greedy':
                    bits = p_on.detach() > 0.5
                else:
                    bits = torch.zeros(d.n, dtype=torch.bool, device=device)
                    bits[[d.values.index(v) for v in policy[d.label]]] = True
                log_prob = log_prob + torch.where(bits, log_on, log_off).sum()
                entropy = entropy - (p_on * log_on + (1 - p_on) * log_off).sum()
                rho = self.skip_target
                kl_terms.append((p_on * (log_on - math.log(rho)) + (1 - p_on) * (log_off - math.log(1 - rho))).sum())
                chosen = torch.nonzero(bits).flatten().tolist()
                arch[d.label] = [d.values[j] for j in chosen]
                probs[d.label] = p_on.detach().tolist()
                picked = (torch.stack([anchors[j] for j in chosen]) if anchored
                          else self.input_emb[self._head(d)](bits.nonzero().flatten())) if chosen else None
                inp = (picked.sum(0).view(1, -1) / (1 + len(chosen))) if chosen else torch.zeros_like(h)
            else:
                log_p = F.log_softmax(logits, dim=-1)
                if policy == 'sample':
                    index = int(torch.multinomial(log_p.detach().exp(), 1))
                elif policy == 'greedy':
                    index = int(log_p.argmax())
                else:
                    value = policy[d.label]
                    index = d.values.index(value[0] if d.kind == 'input' else value)
                log_prob = log_prob + log_p[index]
                entropy = entropy - (log_p.exp() * log_p).sum()
                arch[d.label] = [d.values[index]] if d.kind == 'input' else d.values[index]
                probs[d.label] = log_p.detach().exp().tolist()
                if d.kind == 'op':
                    inp = self.op_emb[self._op_keys[tuple(d.values)]].weight[index].view(1, -1)
                elif anchored:
                    inp = anchors[index]
                else:
                    inp = self.input_emb[self._head(d)].weight[index].view(1, -1)
            last_kind = 'op' if d.kind == 'op' else 'input'
        close_unit(h)
        penalty = torch.stack(kl_terms).mean() if kl_terms else zero
        return arch, log_prob, entropy, penalty, probs
