"""The ENAS controller: an LSTM that samples architectures decision by decision (spec C).

It is built from any NNI model space's ``simplify()``: each ``Categorical`` is an op decision,
each ``CategoricalMultiple`` with ``n_chosen=1`` an input decision (softmax) and with
``n_chosen=None`` a skip decision (one sigmoid per candidate). Decisions are taken in
``simplify()`` order, which for our spaces is the network's order. :meth:`ReinforceController.sample_batch`
walks n architectures at once (one LSTM walk with a batch dimension); :meth:`~ReinforceController.sample`
is that walk with n = 1.

Units and groups come from the labels ``[group/]unit/name``: the decisions of one unit
(``layer_3``, ``normal/node_4``) are consecutive, and a group (``''``, ``normal``) is a run of units.
One LSTM step per decision; a unit that does not end with an input decision takes one more
"exit" step on its last embedding (TF: macro layer 0's skip step, micro's node exit step); each
group starts again from the input ``g_emb``.

Anchor attention (spec C.1) is opt-in: it is used only for the groups a space *declares* in its
``anchor_groups`` attribute (a dict ``group -> g``, or a method returning one), as
:class:`~nni_enas.spaces.base.EnasSpace` does for our macro (``{'': 0}``) and micro
(``{'normal': 2, 'reduce': 2}``) spaces. In a declared group, every unit leaves an anchor (the
hidden state of its last step) when it ends, and an input or skip decision with n candidates,
taken when the group's units so far left k anchors, attends over the group's ``g = n - k``
leading inputs followed by those k anchors; the group starts with g steps on ``g_emb`` whose
hidden states key the leading inputs (their value anchors are zero, as in TF). A declaration the
labels do not fit raises ``ValueError``. Every other input or skip decision (any undeclared
space, e.g. NNI's own) gets a plain linear head and embedding, shared by decisions of the same
kind and size: the controller never guesses which earlier decision an input candidate is.
The declaration is read from the space's class, so it survives NNI's one-shot mutation
(``Enas().mutate_model(space)`` keeps the top-level ``ModelSpace``).

A space may also declare ``index_choices``: names (the label's last part, e.g. ``prev``) of
``Categorical`` choices whose values 0..n-1 are the indices of the group's leading inputs and earlier
units, as the recurrent cell's ``node_{j}/prev`` picks one of nodes 0..j-1. The controller takes
such a choice as an input decision (attention in a declared group) whose value is the index itself,
not a one-element list.

Inactive decisions: where NNI's modules say that a decision only matters in some architectures,
a decision inactive in a sampled architecture is still sampled (the architecture dict stays
complete for ``freeze``) but leaves no trace: its LSTM step is skipped for that architecture
(state and next input stay as they were), and it adds nothing to the log-probability, the
entropy or the skip penalty (the mean KL over the *active* skip decisions). The rules read from
the space's module tree (a supernet works too): the choices inside block i of a
``Repeat`` whose depth is a choice are active when the depth is > i, and the choices inside
candidate c of a ``LayerChoice`` when c is chosen (the branch taken). A label used in several
places is active when any of its uses is. A rule is only applied when the deciding choice comes
earlier in the walk (NNI's ``simplify()`` lists it first); otherwise the decision counts as active.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from nni.mutable import Categorical, CategoricalMultiple, Mutable
from nni.nas.nn.pytorch import LayerChoice, MutableModule, Repeat

__all__ = ['ReinforceController', 'Decision', 'decisions_of', 'activity_rules']


@dataclass
class Decision:
    label: str
    kind: str            # 'op' | 'input' | 'skip'
    values: list         # candidate values, as NNI freezes them
    unit: str
    group: str
    scalar: bool = False  # an input decision whose value is the index itself (a declared index choice)
    # When the decision is active: any of these occurrences, each a tuple of (mutable, test, value)
    # conditions that must all hold; empty: always active (see the module docstring).
    rules: list = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    def index(self, value) -> int:
        return self.values.index(value)


def decisions_of(space) -> list[Decision]:
    """The decisions of an NNI model space, in ``simplify()`` order, with their activity rules."""
    rules = activity_rules(space)
    index_names = set(getattr(space, 'index_choices', ()) or ())
    result = []
    for label, mutable in space.simplify().items():
        scalar = isinstance(mutable, Categorical) and label.rsplit('/', 1)[-1] in index_names
        if scalar:
            if list(mutable.values) != list(range(len(mutable.values))):
                raise ValueError(f'{type(space).__name__} declares {label!r} an index choice, but its values '
                                 f'{list(mutable.values)} are not 0..n-1')
            kind = 'input'
        elif isinstance(mutable, Categorical):
            kind = 'op'
        elif isinstance(mutable, CategoricalMultiple) and mutable.n_chosen in (1, None):
            kind = 'input' if mutable.n_chosen == 1 else 'skip'
        else:
            raise TypeError(f'ENAS controller: {label!r} is a {type(mutable).__name__}; only categorical choices '
                            'and input choices with n_chosen 1 or None are supported')
        unit = label.rsplit('/', 1)[0] if '/' in label else label
        group = unit.rsplit('/', 1)[0] if '/' in unit else ''
        result.append(Decision(label, kind, list(mutable.values), unit, group, scalar=scalar))
    # Keep only the rules whose deciding labels come earlier in the walk (the module docstring).
    seen: set[str] = set()
    for d in result:
        occurrences = rules.get(d.label, [()])
        if all(occurrences) and all(set(m.simplify()) <= seen for occ in occurrences for m, _, _ in occ):
            d.rules = occurrences
        seen.add(d.label)
    return result


def activity_rules(space) -> dict[str, list[tuple]]:
    """Per label, its occurrences in the space's module tree, each the tuple of conditions under which it is used.

    A condition is ``(mutable, 'depth', k)`` (a ``Repeat`` depth >= k) or ``(mutable, 'is', name)``
    (a ``LayerChoice`` picks candidate ``name``). A label with an empty tuple among its
    occurrences is always active.
    """
    found: dict[str, list[tuple]] = {}
    if not isinstance(space, nn.Module):
        return found

    def visit(module: nn.Module, conditions: tuple) -> None:
        if isinstance(module, MutableModule):
            for mutable in module.mutables:
                for label in mutable.simplify():
                    found.setdefault(label, []).append(conditions)
        if isinstance(module, Repeat) and isinstance(module.depth_choice, Mutable):
            for i, block in enumerate(module.blocks):
                visit(block, conditions if i < module.min_depth else conditions + ((module.depth_choice, 'depth', i + 1),))
        elif isinstance(module, LayerChoice):
            for name in module.names:
                visit(module[name], conditions + ((module.choice, 'is', name),))
        else:
            for child in module.children():
                visit(child, conditions)

    visit(space, ())
    return found


def _holds(condition: tuple, sample: dict[str, Any]) -> bool:
    mutable, test, value = condition
    picked = mutable.freeze(sample)
    return picked >= value if test == 'depth' else picked == value


def _declared_groups(space) -> dict[str, int]:
    declared = getattr(space, 'anchor_groups', None)
    if callable(declared):
        declared = declared()
    return dict(declared or {})


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
        Any NNI model space (or supernet); its ``simplify()``, its module tree (for inactive
        decisions) and its ``anchor_groups`` declaration (for attention) are read.
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
    >>> space = MacroSpace(num_layers=4, channels=8)
    >>> controller = ReinforceController(space)
    >>> arch, log_prob, entropy, skip_penalty = controller.sample()
    >>> net = space.freeze(arch)   # a fixed network
    >>> archs, log_probs, entropies, skip_penalties = controller.sample_batch(20)   # tensors of shape [20]
    """

    def __init__(self, space, lstm_size: int = 64, tanh_constant: float | None = 1.5, op_tanh_reduce: float = 1.0,
                 temperature: float | None = None, skip_target: float = 0.4, op_bias: Sequence[float] | None = None,
                 group_logit_offset: dict[str, Sequence[float]] | None = None):
        super().__init__()
        self.decisions = decisions_of(space)
        if not self.decisions:
            raise ValueError('the model space has no choices to search')
        self._by_label = {d.label: d for d in self.decisions}
        inferred = _group_inputs(self.decisions)
        declared = _declared_groups(space)
        for group, g in declared.items():
            if group in inferred and inferred[group] != g:
                raise ValueError(f'{type(space).__name__} declares anchor group {group!r} with {g} leading inputs, '
                                 'but its input choices do not fit that pattern')
        self.group_inputs: dict[str, int | None] = {group: declared.get(group) for group in inferred}
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
            elif d.kind != 'op' and not self._anchored(d) and self._head(d) not in self.input_soft:
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
        # labels whose sampled values decide whether later decisions are active
        self._deciding = {label for d in self.decisions for occ in d.rules for m, _, _ in occ for label in m.simplify()}

    @staticmethod
    def _head(d: Decision) -> str:
        return f'{d.kind}{d.n}'

    def _anchored(self, d: Decision) -> bool:
        return d.kind != 'op' and self.group_inputs.get(d.group) is not None

    # -- public API ---------------------------------------------------------------------------

    def is_skip(self, label: str) -> bool:
        """Whether ``label`` is a skip decision (any subset of its candidates)."""
        return self._by_label[label].kind == 'skip'

    def num_candidates(self, label: str) -> int:
        return self._by_label[label].n

    def sample(self) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample an architecture: ``(arch, log_prob, entropy, skip_penalty)``.

        ``arch`` maps label -> value in NNI's format (what ``space.freeze`` takes); the three
        0-dim tensors carry gradients to the controller: the summed log probability of the
        (active) decisions, the summed entropy of their distributions, and the mean KL skip
        penalty (0 without skips). The same as ``sample_batch(1)``.
        """
        archs, log_prob, entropy, penalty = self.sample_batch(1)
        return archs[0], log_prob[0], entropy[0], penalty[0]

    def sample_batch(self, n: int) -> tuple[list[dict[str, Any]], torch.Tensor, torch.Tensor, torch.Tensor]:
        """n architectures in one batched LSTM walk: ``(archs, log_prob[n], entropy[n], skip_penalty[n])``.

        Same distribution as n calls of :meth:`sample`; the tensors carry gradients to the
        controller (one backward of any function of them trains it).
        """
        if n < 1:
            raise ValueError(f'sample_batch needs n >= 1, got {n}')
        archs, log_prob, entropy, penalty, _ = self._walk(n, 'sample')
        return archs, log_prob, entropy, penalty

    def greedy(self) -> dict[str, Any]:
        """The most likely architecture (argmax decisions, skips with probability > 0.5)."""
        return self._walk(1, 'greedy')[0][0]

    def evaluate(self, arch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log_prob, entropy, skip_penalty)`` of a given architecture (0-dim tensors)."""
        log_prob, entropy, penalty = self.evaluate_batch([arch])
        return log_prob[0], entropy[0], penalty[0]

    def evaluate_batch(self, archs: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log_prob[n], entropy[n], skip_penalty[n])`` of n given architectures, in one batched walk."""
        if not archs:
            raise ValueError('evaluate_batch needs at least one architecture')
        return self._walk(len(archs), list(archs))[1:4]

    @torch.no_grad()
    def choice_probabilities(self) -> dict[str, list[float]]:
        """Per label, the probability of each candidate along the greedy path (per candidate for skips)."""
        return self._walk(1, 'greedy', probabilities=True)[4]

    # -- the walk -------------------------------------------------------------------------------

    def _squash(self, logits: torch.Tensor, op: bool) -> torch.Tensor:
        if self.temperature is not None:
            logits = logits / self.temperature
        if self.tanh_constant is not None:
            c = self.tanh_constant / self.op_tanh_reduce if op else self.tanh_constant
            logits = c * torch.tanh(logits)
        return logits

    def _given(self, d: Decision, archs: list[dict[str, Any]]) -> torch.Tensor:
        """The given architectures' picks for ``d``: indices [n], or skip bits [n, d.n] (float)."""
        try:
            if d.kind == 'skip':
                return torch.tensor([[v in arch[d.label] for v in d.values] for arch in archs], dtype=torch.float)
            if d.kind == 'input':
                return torch.tensor([d.index(arch[d.label] if d.scalar else arch[d.label][0]) for arch in archs])
            return torch.tensor([d.index(arch[d.label]) for arch in archs])
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            raise ValueError(f'the architecture has no valid value for {d.label!r}') from exc

    def _active(self, d: Decision, columns: dict[str, list]) -> torch.Tensor | None:
        """Per row, whether ``d`` is active ([n] bool), or None when it always is."""
        if not d.rules:
            return None
        n = len(next(iter(columns.values())))
        needed = self._deciding
        mask = []
        for r in range(n):
            sample = {label: columns[label][r] for label in needed if label in columns}
            mask.append(any(all(_holds(c, sample) for c in occ) for occ in d.rules))
        return torch.tensor(mask, device=self.g_emb.device)

    def _walk(self, n: int, policy, probabilities: bool = False):
        """One batched walk. ``policy``: ``'sample'``, ``'greedy'`` or a list of n architectures."""
        walk = _Walk(self, n, policy, probabilities)
        for d in self.decisions:
            walk.decide(d)
        return walk.finish()


class _Walk:
    """The state of one batched walk of :class:`ReinforceController` over its decisions.

    One LSTM step per decision: the decision's logits (attention over the group's anchors, or a
    softmax head), a pick per row (sampled, greedy or given), and the next input (the pick's
    embedding or anchor). Rows whose decision is inactive keep their state and add nothing.
    """

    def __init__(self, ctrl: ReinforceController, n: int, policy, probabilities: bool):
        self.ctrl, self.n, self.policy, self.probabilities = ctrl, n, policy, probabilities
        self.given = policy if isinstance(policy, list) else None
        self.device = ctrl.g_emb.device
        size = ctrl.g_emb.shape[1]
        self.g = ctrl.g_emb.expand(n, size)
        self.rows = torch.arange(n, device=self.device)
        self.h = self.c = torch.zeros(n, size, device=self.device)
        self.inp = self.g
        self.columns: dict[str, list] = {}      # label -> the n picked values
        self.probs: dict[str, list[float]] = {}
        self.log_probs, self.entropies, self.kls, self.kl_counts = [], [], [], []
        self.anchors: list[torch.Tensor] = []   # [n, size] each; the stacked forms are rebuilt when they grow
        self.keys: list[torch.Tensor] = []
        self.stacked = None
        self.unit = self.group = self.last_kind = self.unit_active = None

    def step(self, x, active):
        h_new, c_new = self.ctrl.lstm(x, (self.h, self.c))
        if active is not None:         # inactive rows keep their state (module docstring)
            h_new = torch.where(active[:, None], h_new, self.h)
            c_new = torch.where(active[:, None], c_new, self.c)
        self.h, self.c = h_new, c_new
        return self.h

    def add_anchor(self, value, key):
        self.anchors.append(value)
        self.keys.append(key)
        self.stacked = None

    def close_unit(self):
        if self.last_kind == 'op':           # exit step on the last embedding
            self.step(self.inp, self.unit_active)
            self.inp = self.g
        if self.ctrl.group_inputs.get(self.group) is not None:
            self.add_anchor(self.h, self.ctrl.attn_anchor(self.h))

    def enter(self, d):
        """Close the previous unit when ``d`` starts a new one; a new group starts with its input anchors."""
        if d.unit == self.unit:
            return
        if self.unit is not None:
            self.close_unit()
        if d.group != self.group:
            self.group = d.group
            self.anchors, self.keys, self.stacked = [], [], None
            self.inp = self.g
            for _ in range(self.ctrl.group_inputs.get(self.group) or 0):
                self.step(self.g, None)
                self.add_anchor(torch.zeros_like(self.h), self.ctrl.attn_anchor(self.h))
        self.unit = d.unit

    def logits(self, d, anchored: bool):
        """The decision's logits, and the anchors it attends over (None for a softmax head)."""
        ctrl, h = self.ctrl, self.h
        if anchored:
            if self.stacked is None:
                self.stacked = torch.stack(self.anchors, 1), torch.stack(self.keys, 1)    # [n, k, size]
            values, k = self.stacked[0][:, :d.n], self.stacked[1][:, :d.n]
            scores = ctrl.attn_v(torch.tanh(k + ctrl.attn_query(h).unsqueeze(1))).squeeze(-1)
            return ctrl._squash(scores, op=False), values
        if d.kind == 'op':
            key = ctrl._op_keys[tuple(d.values)]
            logits = ctrl.op_soft[key](h)
            if key in ctrl.op_bias:
                logits = logits + ctrl.op_bias[key]
            logits = ctrl._squash(logits, op=True)
            if d.group in ctrl.group_logit_offset:
                logits = logits + ctrl.group_logit_offset[d.group].to(self.device)
            return logits, None
        return ctrl._squash(ctrl.input_soft[ctrl._head(d)](h), op=False), None

    def pick_skips(self, d, logits, values, active):
        """Independent on/off picks (a skip decision): log-prob, entropy, next input, column, p(on)."""
        ctrl = self.ctrl
        p_on = torch.sigmoid(2 * logits)   # softmax over [-l, l]: the TF two-class form
        # log(sigmoid(x)) = -softplus(-x); F.logsigmoid is ~1000x slower on small CPU tensors in torch 2.14;
        # log sigmoid(-x) = log sigmoid(x) - x
        log_on = -F.softplus(-2 * logits)
        log_off = log_on - 2 * logits
        if self.given is not None:
            bits = ctrl._given(d, self.given).to(self.device)
        elif self.policy == 'sample':
            bits = torch.bernoulli(p_on.detach())
        else:
            bits = (p_on.detach() > 0.5).float()
        lp = torch.where(bits.bool(), log_on, log_off).sum(-1)
        ent = -(p_on * log_on + (1 - p_on) * log_off).sum(-1)
        rho = ctrl.skip_target
        kl = (p_on * (log_on - math.log(rho)) + (1 - p_on) * (log_off - math.log(1 - rho))).sum(-1)
        anchored = values is not None
        picked = bits.unsqueeze(-1) * values if anchored else bits @ ctrl.input_emb[ctrl._head(d)].weight
        # the mean of the chosen anchors with a 1 in the denominator: zero when none is chosen
        nxt = (picked.sum(1) if anchored else picked) / (1 + bits.sum(-1, keepdim=True))
        column = [[v for v, b in zip(d.values, row) if b] for row in bits.tolist()]
        self.kls.append(kl if active is None else kl * active)
        self.kl_counts.append(None if active is None else active)
        return lp, ent, nxt, column, p_on

    def pick_one(self, d, logits, values):
        """One pick among the values (an op or an input): log-prob, entropy, next input, column, p."""
        ctrl = self.ctrl
        log_p = F.log_softmax(logits, dim=-1)
        p = log_p.exp()
        if self.given is not None:
            index = ctrl._given(d, self.given).to(self.device)
        elif self.policy == 'sample':
            index = torch.multinomial(p.detach(), 1).squeeze(1)
        else:
            index = log_p.detach().argmax(-1)
        lp = log_p.gather(1, index.unsqueeze(1)).squeeze(1)
        ent = -(p * log_p).sum(-1)
        if d.kind == 'op':
            nxt = ctrl.op_emb[ctrl._op_keys[tuple(d.values)]].weight[index]
            column = [d.values[i] for i in index.tolist()]
        else:
            nxt = values[self.rows, index] if values is not None else ctrl.input_emb[ctrl._head(d)].weight[index]
            column = [d.values[i] if d.scalar else [d.values[i]] for i in index.tolist()]
        return lp, ent, nxt, column, p

    def decide(self, d):
        """One decision for all n rows: step the LSTM, pick, and feed the pick to the next step."""
        self.enter(d)
        active = self.ctrl._active(d, self.columns) if d.rules else None
        self.step(self.inp, active)
        logits, values = self.logits(d, self.ctrl._anchored(d))
        if d.kind == 'skip':
            lp, ent, nxt, column, p = self.pick_skips(d, logits, values, active)
        else:
            lp, ent, nxt, column, p = self.pick_one(d, logits, values)
        if active is not None:
            lp, ent = lp * active, ent * active
            nxt = torch.where(active[:, None], nxt, self.inp)
        self.log_probs.append(lp)
        self.entropies.append(ent)
        self.columns[d.label] = column
        if self.probabilities:
            self.probs[d.label] = p.detach()[0].tolist()
        self.inp = nxt
        self.unit_active = active
        self.last_kind = 'op' if d.kind == 'op' else 'input'

    def finish(self):
        """The architectures, and per row: log-probability, entropy and skip penalty (KL to the target)."""
        self.close_unit()
        n, device = self.n, self.device
        log_prob = torch.stack(self.log_probs).sum(0)
        entropy = torch.stack(self.entropies).sum(0)
        if not self.kls:
            penalty = torch.zeros(n, device=device)
        elif all(m is None for m in self.kl_counts):
            penalty = torch.stack(self.kls).mean(0)
        else:   # the mean over each architecture's active skip decisions
            count = sum(torch.ones(n, device=device) if m is None else m.float() for m in self.kl_counts)
            penalty = torch.stack(self.kls).sum(0) / count.clamp(min=1)
        labels = list(self.columns)
        archs = [dict(zip(labels, row)) for row in zip(*self.columns.values())]
        return archs, log_prob, entropy, penalty, self.probs
