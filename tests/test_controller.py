"""The ENAS controller: log-probabilities, entropies and skip penalties replayed by hand, batched
sampling, attention by declaration, inactive decisions, and learning.

The hand replays follow the walk documented in nni_enas/search/controller.py and ENAS_SPEC C.1-C.2,
written out step by step with torch ops on the controller's own parameters.

Runtime: about 25 s on the (busy) 2-core dev machine (plus the one-off nni import); the REINFORCE
test dominates.
"""

import itertools
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nni_enas  # noqa: E402,F401
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace, Repeat  # noqa: E402

from nni_enas import Enas, MacroSpace, MicroSpace, ReinforceController  # noqa: E402
from nni_enas.search.enas import EnasModule  # noqa: E402
from nni_enas.spaces.ops import MACRO_OPS, MICRO_OPS  # noqa: E402
from nni_enas.training.classification import ChildTraining  # noqa: E402

torch.set_num_threads(1)


class Toy(ModelSpace):
    """1 LayerChoice (3 candidates), 1 InputChoice(n_chosen=None) and 1 InputChoice(n_chosen=1), 2 candidates each."""

    def __init__(self):
        super().__init__()
        self.op = LayerChoice([nn.Identity(), nn.ReLU(), nn.Tanh()], label='op')
        self.skip = InputChoice(2, n_chosen=None, label='skip')
        self.pick = InputChoice(2, n_chosen=1, label='pick')

    def forward(self, x):
        x = self.op(x)
        s = self.skip([x, -x])
        return self.pick([x if s is None else x + s, x])


def all_archs(controller):
    """Every architecture of a small space, enumerated from the controller's decisions."""
    per_label = []
    for d in controller.decisions:
        if d.kind == 'op':
            per_label.append([(d.label, v) for v in d.values])
        elif d.kind == 'input':
            per_label.append([(d.label, [v]) for v in d.values])
        else:
            subsets = [list(c) for r in range(d.n + 1) for c in itertools.combinations(d.values, r)]
            per_label.append([(d.label, s) for s in subsets])
    for combo in itertools.product(*per_label):
        yield dict(combo)


def bernoulli_terms(logits, bits, rho):
    """(log p of the bits, entropy, KL(Bern(p) || Bern(rho))) for a skip decision; p = sigmoid(2 * logits)."""
    p = torch.sigmoid(2 * logits)
    log_prob = torch.where(bits, torch.log(p), torch.log(1 - p)).sum()
    entropy = -(p * torch.log(p) + (1 - p) * torch.log(1 - p)).sum()
    kl = (p * torch.log(p / rho) + (1 - p) * torch.log((1 - p) / (1 - rho))).sum()
    return log_prob, entropy, kl


def categorical_terms(logits, index):
    p = torch.softmax(logits, -1)
    return torch.log(p[index]), -(p * torch.log(p)).sum()


# --------------------------------------------------------------------------- hand replays

def test_toy_space_decisions_and_linear_heads():
    ctrl = ReinforceController(Toy())
    assert [(d.label, d.kind, d.values) for d in ctrl.decisions] == [
        ('op', 'op', [0, 1, 2]), ('skip', 'skip', [0, 1]), ('pick', 'input', [0, 1])]
    # the labels give no anchor pattern here: input decisions get a plain linear head, one per kind and size
    assert ctrl.group_inputs[''] is None
    assert set(ctrl.input_soft) == {'skip2', 'input2'}


@pytest.mark.parametrize('arch', [
    {'op': 2, 'skip': [0, 1], 'pick': [1]},
    {'op': 0, 'skip': [], 'pick': [0]},
    {'op': 1, 'skip': [1], 'pick': [1]},
])
def test_toy_evaluate_matches_hand_replay(arch):
    torch.manual_seed(3)
    ctrl = ReinforceController(Toy(), lstm_size=8, tanh_constant=1.5, skip_target=0.4)
    c = 1.5
    lstm, g = ctrl.lstm, ctrl.g_emb
    soft, emb = ctrl.op_soft['op0'], ctrl.op_emb['op0']
    skip_soft, skip_emb = ctrl.input_soft['skip2'], ctrl.input_emb['skip2']
    pick_soft = ctrl.input_soft['input2']
    with torch.no_grad():
        # op: one step on g_emb
        h, cell = lstm(g)
        lp_op, ent_op = categorical_terms(c * torch.tanh(soft(h)[0]), arch['op'])
        # the op unit ends: an exit step on the op's embedding (no anchor: linear heads)
        h, cell = lstm(emb.weight[arch['op']].view(1, -1), (h, cell))
        # skip: a step on g_emb, one sigmoid per candidate
        h, cell = lstm(g, (h, cell))
        bits = torch.tensor([v in arch['skip'] for v in (0, 1)])
        lp_skip, ent_skip, kl = bernoulli_terms(c * torch.tanh(skip_soft(h)[0]), bits, 0.4)
        chosen = [v for v in (0, 1) if v in arch['skip']]
        nxt = skip_emb.weight[chosen].sum(0, keepdim=True) / (1 + len(chosen)) if chosen else torch.zeros_like(h)
        # pick: a step on the skip average, softmax
        h, cell = lstm(nxt, (h, cell))
        lp_pick, ent_pick = categorical_terms(c * torch.tanh(pick_soft(h)[0]), arch['pick'][0])
        log_prob, entropy, penalty = ctrl.evaluate(arch)
    assert log_prob.item() == pytest.approx((lp_op + lp_skip + lp_pick).item(), abs=1e-5)
    assert entropy.item() == pytest.approx((ent_op + ent_skip + ent_pick).item(), abs=1e-5)
    assert penalty.item() == pytest.approx(kl.item(), abs=1e-6)     # the mean over one skip decision


@pytest.mark.parametrize('arch', [
    {'layer_0/op': 'sep_conv_5x5', 'layer_1/op': 'avg_pool_3x3', 'layer_1/skip': [0],
     'layer_2/op': 'conv_3x3', 'layer_2/skip': [0, 1]},
    {'layer_0/op': 'conv_3x3', 'layer_1/op': 'max_pool_3x3', 'layer_1/skip': [],
     'layer_2/op': 'sep_conv_3x3', 'layer_2/skip': [1]},
])
def test_macro_evaluate_matches_hand_replay_with_attention(arch):
    """The TF macro walk (spec C.2): op step, skip step (attention over earlier anchors), per layer."""
    torch.manual_seed(5)
    ctrl = ReinforceController(MacroSpace(num_layers=3, channels=4), lstm_size=16, skip_target=0.4)
    assert ctrl.group_inputs[''] == 0           # anchored, no leading inputs
    c = 1.5
    lstm, g = ctrl.lstm, ctrl.g_emb
    soft, emb = ctrl.op_soft['op0'], ctrl.op_emb['op0']
    W1, W2, v = ctrl.attn_anchor, ctrl.attn_query, ctrl.attn_v
    log_prob = entropy = 0.0
    kls = []
    anchors = []
    with torch.no_grad():
        state = None
        inp = g
        for i in range(3):
            # op step
            h, cell = lstm(inp, state)
            state = (h, cell)
            index = MACRO_OPS.index(arch[f'layer_{i}/op'])
            lp, ent = categorical_terms(c * torch.tanh(soft(h)[0]), index)
            log_prob, entropy = log_prob + lp, entropy + ent
            # skip step (layer 0: no skips, just the step whose h is the anchor)
            h, cell = lstm(emb.weight[index].view(1, -1), state)
            state = (h, cell)
            if i == 0:
                inp = g
            else:
                scores = torch.cat([v(torch.tanh(W1(a) + W2(h))) for a in anchors])[:, 0]
                bits = torch.tensor([j in arch[f'layer_{i}/skip'] for j in range(i)])
                lp, ent, kl = bernoulli_terms(c * torch.tanh(scores), bits, 0.4)
                log_prob, entropy = log_prob + lp, entropy + ent
                kls.append(kl)
                chosen = [anchors[j] for j in range(i) if bits[j]]
                inp = torch.stack(chosen).sum(0) / (1 + len(chosen)) if chosen else torch.zeros_like(h)
            anchors.append(h)
        got = ctrl.evaluate(arch)
    assert got[0].item() == pytest.approx(float(log_prob), abs=1e-5)
    assert got[1].item() == pytest.approx(float(entropy), abs=1e-5)
    assert got[2].item() == pytest.approx(float(sum(kls) / len(kls)), abs=1e-6)


def micro_arch(cells):
    arch = {}
    for cell, nodes in cells.items():
        for n, (ia, ib, oa, ob) in enumerate(nodes, start=2):
            arch.update({f'{cell}/node_{n}/input_a': [ia], f'{cell}/node_{n}/input_b': [ib],
                         f'{cell}/node_{n}/op_a': oa, f'{cell}/node_{n}/op_b': ob})
    return arch


def test_micro_evaluate_matches_hand_replay():
    """The TF micro walk (spec C.3): per cell 2 steps on g_emb keying inputs 0 and 1 (zero anchors),
    per node 2 index steps (attention), 2 op steps (b_soft, tanh 1.1 / 2.5, normal-cell offset after
    the tanh) and an exit step whose h is the node's anchor; the second cell carries the state on."""
    torch.manual_seed(7)
    bias, offset = [1.0, 0.5, 0.0, 0.0, 0.0], [0.25, 0.25, -0.25, -0.25, -0.25]
    ctrl = ReinforceController(MicroSpace(num_layers=1, channels=4, num_nodes=2), lstm_size=16, tanh_constant=1.1,
                               op_tanh_reduce=2.5, skip_target=0.4, op_bias=bias, group_logit_offset={'normal': offset})
    # one reduction cell before the normal ones at num_layers=1: the decisions follow the network
    cells = {'reduce': [(1, 1, 'identity', 'max_pool_3x3'), (2, 0, 'sep_conv_5x5', 'avg_pool_3x3')],
             'normal': [(0, 1, 'sep_conv_3x3', 'identity'), (1, 2, 'max_pool_3x3', 'sep_conv_3x3')]}
    assert [d.label for d in ctrl.decisions][:4] == ['reduce/node_2/input_a', 'reduce/node_2/input_b',
                                                     'reduce/node_2/op_a', 'reduce/node_2/op_b']
    assert ctrl.group_inputs == {'reduce': 2, 'normal': 2}
    arch = micro_arch(cells)
    lstm, g = ctrl.lstm, ctrl.g_emb
    soft, emb, b_soft = ctrl.op_soft['op0'], ctrl.op_emb['op0'], ctrl.op_bias['op0']
    W1, W2, v = ctrl.attn_anchor, ctrl.attn_query, ctrl.attn_v
    state = None
    log_prob = entropy = 0.0
    with torch.no_grad():
        for cell, nodes in cells.items():
            anchors, keys = [], []
            for _ in range(2):
                state = lstm(g, state)
                anchors.append(torch.zeros_like(state[0]))
                keys.append(W1(state[0]))
            inp = g
            for n, (ia, ib, oa, ob) in enumerate(nodes, start=2):
                for index in (ia, ib):
                    state = lstm(inp, state)
                    scores = torch.cat([v(torch.tanh(k + W2(state[0]))) for k in keys[:n]])[:, 0]
                    lp, ent = categorical_terms(1.1 * torch.tanh(scores), index)
                    log_prob, entropy = log_prob + lp, entropy + ent
                    inp = anchors[index]
                for op in (oa, ob):
                    state = lstm(inp, state)
                    logits = 0.44 * torch.tanh(soft(state[0])[0] + b_soft)
                    if cell == 'normal':
                        logits = logits + torch.tensor(offset)
                    lp, ent = categorical_terms(logits, MICRO_OPS.index(op))
                    log_prob, entropy = log_prob + lp, entropy + ent
                    inp = emb.weight[MICRO_OPS.index(op)].view(1, -1)
                state = lstm(inp, state)            # exit step: the node's anchor
                anchors.append(state[0])
                keys.append(W1(state[0]))
                inp = g
        got = ctrl.evaluate(arch)
    assert got[0].item() == pytest.approx(float(log_prob), abs=1e-5)
    assert got[1].item() == pytest.approx(float(entropy), abs=1e-5)
    assert got[2].item() == 0.0                          # no skip decisions, no penalty


# --------------------------------------------------------------------------- invariants

@pytest.mark.parametrize('make', [
    lambda: Toy(),
    lambda: MacroSpace(num_layers=4, channels=4),
    lambda: MicroSpace(num_layers=1, channels=4, num_nodes=3),
    lambda: Enas().mutate_model(MacroSpace(num_layers=3, channels=4)),   # a supernet works too
])
def test_sample_log_prob_equals_evaluate(make):
    torch.manual_seed(0)
    ctrl = ReinforceController(make(), op_bias=[10, 10, 0, 0, 0], group_logit_offset={'normal': [0.25] * 2 + [-0.25] * 3})
    for _ in range(4):
        arch, log_prob, entropy, penalty = ctrl.sample()
        e_log_prob, e_entropy, e_penalty = ctrl.evaluate(arch)
        assert log_prob.item() == pytest.approx(e_log_prob.item(), abs=1e-5)
        assert entropy.item() == pytest.approx(e_entropy.item(), abs=1e-5)
        assert penalty.item() == pytest.approx(e_penalty.item(), abs=1e-6)
        assert log_prob.requires_grad and log_prob.item() < 0
    greedy = ctrl.greedy()
    assert set(greedy) == {d.label for d in ctrl.decisions}


def test_probabilities_sum_to_one():
    torch.manual_seed(1)
    ctrl = ReinforceController(Toy())
    with torch.no_grad():
        total = sum(ctrl.evaluate(arch)[0].exp().item() for arch in all_archs(ctrl))
    assert total == pytest.approx(1.0, abs=1e-5)          # 3 ops x 4 subsets x 2 picks
    ctrl = ReinforceController(MacroSpace(num_layers=2, channels=4))
    with torch.no_grad():
        archs = list(all_archs(ctrl))
        assert len(archs) == 6 ** 2 * 2
        total = sum(ctrl.evaluate(arch)[0].exp().item() for arch in archs)
    assert total == pytest.approx(1.0, abs=1e-4)
    probs = ReinforceController(MicroSpace(num_layers=1, channels=4, num_nodes=2)).choice_probabilities()
    for label, p in probs.items():
        assert sum(p) == pytest.approx(1.0, abs=1e-6), label
    skip_probs = ReinforceController(MacroSpace(num_layers=3, channels=4)).choice_probabilities()['layer_2/skip']
    assert len(skip_probs) == 2 and all(0 < p < 1 for p in skip_probs)


def test_greedy_takes_the_most_likely_choices():
    torch.manual_seed(2)
    ctrl = ReinforceController(MacroSpace(num_layers=3, channels=4))
    probs = ctrl.choice_probabilities()
    greedy = ctrl.greedy()
    for label, p in probs.items():
        if ctrl.is_skip(label):
            assert greedy[label] == [j for j, q in enumerate(p) if q > 0.5]
        else:
            assert greedy[label] == MACRO_OPS[max(range(len(p)), key=p.__getitem__)]
    log_prob = ctrl.evaluate(greedy)[0]
    # the last decision has nothing downstream: no other skip subset is more likely
    others = [[], [0], [1], [0, 1]]
    assert all(ctrl.evaluate({**greedy, 'layer_2/skip': s})[0] <= log_prob + 1e-6 for s in others)


def test_skip_penalty_is_zero_at_the_target_and_the_true_kl_elsewhere():
    ctrl = ReinforceController(MacroSpace(num_layers=3, channels=4), skip_target=0.5)
    with torch.no_grad():
        ctrl.attn_v.weight.zero_()             # every skip score 0: p = sigmoid(0) = 0.5
    assert ctrl.choice_probabilities()['layer_2/skip'] == [0.5, 0.5]
    arch = ctrl.greedy()
    penalty = ctrl.evaluate(arch)[2]
    assert penalty.item() == pytest.approx(0.0, abs=1e-7)
    penalty.backward()                          # the KL's minimum: no gradient either
    assert ctrl.attn_v.weight.grad.abs().max().item() < 1e-7
    # target 0.4: per layer, the sum over its bits of KL(Bern(0.5) || Bern(0.4)); mean over layers 1, 2
    ctrl.skip_target = 0.4
    kl_bit = 0.5 * math.log(0.5 / 0.4) + 0.5 * math.log(0.5 / 0.6)
    assert ctrl.evaluate(arch)[2].item() == pytest.approx((1 * kl_bit + 2 * kl_bit) / 2, rel=1e-5)
    # the skip entropy is the full Bernoulli entropy: ln 2 per bit
    op_entropy = ctrl.evaluate(arch)[1].item() - 3 * math.log(2)
    with torch.no_grad():
        ctrl.op_soft['op0'].weight.zero_()      # uniform ops: ln 6 each
    assert ctrl.evaluate(arch)[1].item() == pytest.approx(3 * math.log(6) + 3 * math.log(2), rel=1e-5)
    assert op_entropy < 3 * math.log(6)


def test_unsupported_choices_are_rejected():
    class Multi(ModelSpace):
        def __init__(self):
            super().__init__()
            self.pick = InputChoice(3, n_chosen=2, label='pick')

    with pytest.raises(TypeError, match='pick'):
        ReinforceController(Multi())


# --------------------------------------------------------------------------- batched sampling

BATCH_SPACES = {
    'toy': lambda: Toy(),
    'macro': lambda: MacroSpace(num_layers=4, channels=4),
    'micro': lambda: MicroSpace(num_layers=1, channels=4, num_nodes=3),
}
MICRO_KWARGS = dict(tanh_constant=1.1, op_tanh_reduce=2.5, op_bias=[10, 10, 0, 0, 0],
                    group_logit_offset={'normal': [0.25] * 2 + [-0.25] * 3})


def make_controller(name, seed=0, **kwargs):
    torch.manual_seed(seed)
    return ReinforceController(BATCH_SPACES[name](), **(MICRO_KWARGS if name == 'micro' else {}), **kwargs)


@pytest.mark.parametrize('name', list(BATCH_SPACES))
def test_sample_batch_rows_match_evaluate(name):
    """Every row of a batched walk is the architecture it reports: evaluate() gives its terms."""
    ctrl = make_controller(name)
    archs, log_prob, entropy, penalty = ctrl.sample_batch(12)
    assert len(archs) == 12 and log_prob.shape == entropy.shape == penalty.shape == (12,)
    assert log_prob.requires_grad and (log_prob < 0).all()
    assert all(set(arch) == {d.label for d in ctrl.decisions} for arch in archs)
    assert len({str(sorted(a.items())) for a in archs}) > 1        # rows are sampled independently
    with torch.no_grad():
        one_by_one = [torch.stack(ctrl.evaluate(arch)) for arch in archs]
        batched = torch.stack(ctrl.evaluate_batch(archs))
    assert torch.allclose(torch.stack(one_by_one, 1), torch.stack([log_prob, entropy, penalty]).detach(), atol=1e-5)
    assert torch.allclose(batched, torch.stack([log_prob, entropy, penalty]).detach(), atol=1e-5)
    if name == 'macro':
        assert (penalty > 0).all()


def test_sample_batch_draws_from_the_controllers_distribution():
    """The empirical distribution of a batch matches evaluate()'s probabilities, decision by decision.

    Macro with 3 layers has 6^3 x 2 x 4 = 1728 architectures: their exact probabilities (one
    evaluate_batch) give the exact marginals of the first op, of the second op (which depends on
    the path) and of every skip bit of the last layer. The controller's weights are scaled up so
    that the decisions are far from uniform and depend on each other.
    """
    torch.manual_seed(0)
    ctrl = ReinforceController(MacroSpace(num_layers=3, channels=4))
    with torch.no_grad():
        for p in ctrl.parameters():
            p.mul_(12)
        archs = list(all_archs(ctrl))
        exact = ctrl.evaluate_batch(archs)[0].exp()
    assert exact.sum().item() == pytest.approx(1.0, abs=1e-4)

    def marginal(archs, weights, key):
        out = {}
        for arch, w in zip(archs, weights):
            out[key(arch)] = out.get(key(arch), 0.0) + float(w)
        return out

    torch.manual_seed(11)
    n = 4000
    with torch.no_grad():
        sampled = ctrl.sample_batch(n)[0]
    ones = [1.0 / n] * n
    keys = {'layer_0/op': lambda a: a['layer_0/op'], 'layer_1/op': lambda a: a['layer_1/op'],
            'layer_1/skip': lambda a: tuple(a['layer_1/skip'])}
    keys.update({f'layer_2/skip/{j}': (lambda a, j=j: j in a['layer_2/skip']) for j in range(2)})
    # joints: a row that took another row's path would break them even where the marginals hold
    keys.update({'ops 0, 1': lambda a: (a['layer_0/op'], a['layer_1/op']),
                 'op 1, skips 1': lambda a: (a['layer_1/op'], tuple(a['layer_1/skip'])),
                 'skips 1, 2': lambda a: (tuple(a['layer_1/skip']), tuple(a['layer_2/skip']))})
    for name, key in keys.items():
        want, got = marginal(archs, exact, key), marginal(sampled, ones, key)
        for value, p in want.items():
            tolerance = 4 * math.sqrt(p * (1 - p) / n) + 1e-3
            assert abs(got.get(value, 0.0) - p) < tolerance, (name, value, got.get(value, 0.0), p)
    assert max(marginal(archs, exact, keys['layer_1/op']).values()) > 0.3    # far from uniform (1/6)
    # the first decision's probabilities are choice_probabilities()' (the greedy path starts there)
    first = marginal(archs, exact, keys['layer_0/op'])
    assert [first[op] for op in MACRO_OPS] == pytest.approx(ctrl.choice_probabilities()['layer_0/op'], abs=1e-5)


def test_micro_first_decisions_frequency():
    ctrl = make_controller('micro')
    probs = ctrl.choice_probabilities()
    torch.manual_seed(4)
    n = 3000
    with torch.no_grad():
        archs = ctrl.sample_batch(n)[0]
    label = ctrl.decisions[0].label
    assert label == 'reduce/node_2/input_a'
    for j, p in enumerate(probs[label]):
        freq = sum(a[label] == [j] for a in archs) / n
        assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-3


@pytest.mark.parametrize('name', ['macro', 'micro'])
def test_one_backward_of_a_batch_is_the_mean_of_per_sample_gradients(name):
    ctrl = make_controller(name)
    archs, log_prob, entropy, penalty = ctrl.sample_batch(6)
    advantage = torch.linspace(-1.0, 1.5, 6)
    (-log_prob * advantage + 0.8 * penalty - 0.01 * entropy).mean().backward()
    batched = {k: p.grad.clone() for k, p in ctrl.named_parameters() if p.grad is not None}
    ctrl.zero_grad(set_to_none=True)
    loss = 0.0
    for arch, a in zip(archs, advantage):
        lp, ent, pen = ctrl.evaluate(arch)
        loss = loss + (-lp * a + 0.8 * pen - 0.01 * ent) / 6
    loss.backward()
    single = {k: p.grad for k, p in ctrl.named_parameters() if p.grad is not None}
    assert set(batched) == set(single) and 'lstm.weight_ih' in batched
    for k in single:
        assert torch.allclose(batched[k], single[k], atol=1e-6), k


def test_sample_is_a_batch_of_one():
    ctrl = make_controller('macro')
    torch.manual_seed(9)
    arch, log_prob, entropy, penalty = ctrl.sample()
    torch.manual_seed(9)
    archs, log_probs, entropies, penalties = ctrl.sample_batch(1)
    assert archs == [arch] and log_prob.dim() == 0
    assert torch.equal(torch.stack([log_prob, entropy, penalty]), torch.stack([log_probs[0], entropies[0], penalties[0]]))
    with pytest.raises(ValueError):
        ctrl.sample_batch(0)
    with pytest.raises(ValueError, match='layer_1/op'):
        ctrl.evaluate({**arch, 'layer_1/op': 'no_such_op'})


# --------------------------------------------------------------------------- attention by declaration

class SimpleNetLike(ModelSpace):
    """NNI SimpleNet's choices: a conv op, a dropout op, then an input choice between two tensors."""

    def __init__(self):
        super().__init__()
        self.conv = LayerChoice([nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 2, 5, padding=2)], label='conv')
        self.dropout = LayerChoice([nn.Dropout(0.25), nn.Dropout(0.5)], label='dropout')
        self.input = InputChoice(2, n_chosen=1, label='input')

    def forward(self, x):
        a = self.conv(x)
        return self.input([self.dropout(a), a])


def test_an_undeclared_space_gets_plain_heads():
    ctrl = ReinforceController(SimpleNetLike())
    assert [d.kind for d in ctrl.decisions] == ['op', 'op', 'input']
    # the labels fit the anchor pattern (two units, then 2 candidates), but nothing declares it
    assert ctrl.group_inputs == {'': None}
    assert set(ctrl.input_soft) == {'input2'}
    log_prob = ctrl.evaluate({'conv': 0, 'dropout': 1, 'input': [1]})[0]
    log_prob.backward()
    assert ctrl.input_soft['input2'].weight.grad.abs().sum() > 0
    for attn in (ctrl.attn_anchor, ctrl.attn_query, ctrl.attn_v):
        assert attn.weight.grad is None


def test_declared_spaces_keep_attention_also_as_supernets():
    for space, groups in [(MacroSpace(num_layers=3, channels=4), {'': 0}),
                          (MicroSpace(num_layers=1, channels=4, num_nodes=2), {'reduce': 2, 'normal': 2})]:
        supernet = Enas().mutate_model(space)
        assert type(supernet) is type(space)      # NNI's mutation keeps the top-level space
        for model in (space, supernet):
            ctrl = ReinforceController(model)
            assert ctrl.group_inputs == groups
            assert len(ctrl.input_soft) == 0      # every input decision attends
            shapes = {k: tuple(p.shape) for k, p in ctrl.named_parameters()}
            assert shapes['attn_anchor.weight'] == shapes['attn_query.weight'] == (64, 64)
            assert shapes['attn_v.weight'] == (1, 64)

    class Declared(SimpleNetLike):
        anchor_groups = {'': 0}                  # any space may declare it (duck-typed)

    ctrl = ReinforceController(Declared())
    assert ctrl.group_inputs == {'': 0} and len(ctrl.input_soft) == 0

    class Wrong(SimpleNetLike):
        anchor_groups = {'': 1}

    with pytest.raises(ValueError, match='anchor group'):
        ReinforceController(Wrong())


# --------------------------------------------------------------------------- inactive decisions

class Block(nn.Module):
    def __init__(self, index, skip=False):
        super().__init__()
        self.op = LayerChoice([nn.Identity(), nn.ReLU(), nn.Tanh()], label=f'blk{index}')
        self.skip = InputChoice(2, n_chosen=None, label=f'skip{index}') if skip else None

    def forward(self, x):
        x = self.op(x)
        return x if self.skip is None else x + (self.skip([x, -x]) or 0)


class Deep(ModelSpace):
    """first, then 1 to 3 blocks (a Repeat with a depth choice), then last."""

    def __init__(self, skip=False):
        super().__init__()
        self.first = LayerChoice([nn.Identity(), nn.ReLU()], label='first')
        self.blocks = Repeat(lambda i: Block(i, skip), (1, 3), label='depth')
        self.last = LayerChoice([nn.Identity(), nn.ReLU()], label='last')

    def forward(self, x):
        return self.last(self.blocks(self.first(x)))


def test_inactive_repeat_blocks_leave_no_trace_hand_replay():
    """Depth 1: the walk is first, depth, blk0, last (each an op unit: a step and an exit step)."""
    torch.manual_seed(3)
    ctrl = ReinforceController(Deep(), lstm_size=8)
    assert [d.label for d in ctrl.decisions] == ['first', 'depth', 'blk0', 'blk1', 'blk2', 'last']
    assert [bool(d.rules) for d in ctrl.decisions] == [False, False, False, True, True, False]
    arch = {'first': 1, 'depth': 1, 'blk0': 2, 'blk1': 0, 'blk2': 1, 'last': 0}
    c = 1.5
    log_prob = entropy = 0.0
    with torch.no_grad():
        state = None
        for label in ('first', 'depth', 'blk0', 'last'):
            d = ctrl._by_label[label]
            key = ctrl._op_keys[tuple(d.values)]
            state = ctrl.lstm(ctrl.g_emb, state)
            lp, ent = categorical_terms(c * torch.tanh(ctrl.op_soft[key](state[0])[0]), d.values.index(arch[label]))
            log_prob, entropy = log_prob + lp, entropy + ent
            state = ctrl.lstm(ctrl.op_emb[key].weight[d.values.index(arch[label])].view(1, -1), state)
        got = ctrl.evaluate(arch)
        # the inactive blocks' values do not matter; an active block's does
        assert torch.equal(torch.stack(got), torch.stack(ctrl.evaluate({**arch, 'blk1': 2, 'blk2': 2})))
        assert not torch.equal(got[0], ctrl.evaluate({**arch, 'blk0': 0})[0])
        deeper = ctrl.evaluate({**arch, 'depth': 2})[0]
    assert got[0].item() == pytest.approx(float(log_prob), abs=1e-5)
    assert got[1].item() == pytest.approx(float(entropy), abs=1e-5)
    assert deeper.item() != pytest.approx(got[0].item(), abs=1e-4)


def test_inactive_decisions_do_not_move_the_controller():
    torch.manual_seed(0)
    ctrl = ReinforceController(Deep(skip=True), skip_target=0.4)
    arch = {'first': 0, 'depth': 1, 'blk0': 1, 'skip0': [1], 'blk1': 0, 'skip1': [0, 1], 'blk2': 2, 'skip2': [],
            'last': 1}
    other = {**arch, 'blk1': 2, 'skip1': [], 'skip2': [0]}

    def grads(a):
        ctrl.zero_grad(set_to_none=True)
        lp, ent, pen = ctrl.evaluate(a)
        (lp + ent + pen).backward()
        return torch.stack([lp, ent, pen]).detach(), {k: p.grad.clone() for k, p in ctrl.named_parameters()
                                                      if p.grad is not None}

    terms, g = grads(arch)
    terms_other, g_other = grads(other)
    assert torch.equal(terms, terms_other)
    assert set(g) == set(g_other) and all(torch.equal(g[k], g_other[k]) for k in g)
    # the skip penalty is the mean over the active skip decision only: here skip0's KL
    penalty_1 = terms[2]
    penalty_3 = ctrl.evaluate({**arch, 'depth': 3})[2]
    assert penalty_1 > 0 and not torch.isclose(penalty_1, penalty_3)
    # a batch: every row still carries every label (NNI's freeze needs them) and matches evaluate()
    torch.manual_seed(1)
    archs, log_prob, entropy, penalty = ctrl.sample_batch(40)
    assert {a['depth'] for a in archs} == {1, 2, 3}
    assert all(len(a) == len(ctrl.decisions) for a in archs)
    with torch.no_grad():
        again = torch.stack(ctrl.evaluate_batch(archs))
    assert torch.allclose(again, torch.stack([log_prob, entropy, penalty]).detach(), atol=1e-5)
    # the supernet (NNI's PathSamplingRepeat) gives the same rules
    torch.manual_seed(0)
    on_supernet = ReinforceController(Enas().mutate_model(Deep(skip=True)), skip_target=0.4)
    assert [bool(d.rules) for d in on_supernet.decisions] == [bool(d.rules) for d in ctrl.decisions]
    with torch.no_grad():
        assert torch.allclose(torch.stack(on_supernet.evaluate(arch)), terms, atol=1e-6)


def test_a_choice_inside_an_untaken_branch_is_inactive():
    class Branchy(ModelSpace):
        def __init__(self):
            super().__init__()
            self.outer = LayerChoice([nn.Identity(), LayerChoice([nn.ReLU(), nn.Tanh()], label='inner')],
                                     label='outer')

        def forward(self, x):
            return self.outer(x)

    ctrl = ReinforceController(Branchy())
    with torch.no_grad():
        assert torch.equal(ctrl.evaluate({'outer': 0, 'inner': 0})[0], ctrl.evaluate({'outer': 0, 'inner': 1})[0])
        assert not torch.equal(ctrl.evaluate({'outer': 1, 'inner': 0})[0], ctrl.evaluate({'outer': 1, 'inner': 1})[0])
        total = sum(ctrl.evaluate(a)[0].exp().item() for a in [{'outer': 0, 'inner': 0}, {'outer': 1, 'inner': 0},
                                                              {'outer': 1, 'inner': 1}])
    assert total == pytest.approx(1.0, abs=1e-5)     # the inactive inner choice is not counted twice


# --------------------------------------------------------------------------- the controller learns

class _PlantedReward(EnasModule):
    """EnasModule whose child "accuracy" is a planted function of the architecture (no child training)."""

    def __init__(self, reward, **kwargs):
        super().__init__(ChildTraining(), **kwargs)
        self.planted = reward
        self.last_arch = None

    def apply(self, arch):
        self.last_arch = arch

    def _score(self, batches):
        return self.planted(self.last_arch)


def planted(arch):
    """1 for the wanted op of layer 2, plus 1 per skip bit of layer 3 that matches [0, 2] (at most 4)."""
    skips = arch['layer_3/skip']
    return float(arch['layer_2/op'] == 'sep_conv_5x5') + sum(float((j in skips) == (j in (0, 2))) for j in range(3))


def test_reinforce_learns_a_planted_reward():
    """EnasModule.train_controller (its loss, baseline and Adam) on a reward planted in the architecture.

    TF's macro settings otherwise (tanh 1.5, skip target 0.4, skip weight 0.8). Skip bits separate
    slowly: at initialisation the attention sees nearly equal anchors, so all bits first move
    together, and at learning rates >= 1e-2 they saturate together (sigmoid(+-3)) and stay there;
    lr 5e-3 with 8 samples per update separates them in ~100 updates.
    """
    torch.manual_seed(0)
    module = _PlantedReward(planted, ctrl_lr=0.005, ctrl_steps=50, ctrl_steps_aggregate=8, baseline_decay=0.9,
                            entropy_weight=1e-4, skip_weight=0.8)
    module.set_model(MacroSpace(num_layers=4, channels=4))
    module.reward_dataloader = [(torch.zeros(1), torch.zeros(1))]
    ctrl = module.controller
    target = MACRO_OPS.index('sep_conv_5x5')
    before = ctrl.choice_probabilities()
    assert before['layer_2/op'][target] < 0.3
    assert all(0.3 < p < 0.7 for p in before['layer_3/skip'])
    greedy = ctrl.greedy()
    assert (greedy['layer_2/op'], greedy['layer_3/skip']) != ('sep_conv_5x5', [0, 2])
    assert module.baseline.item() == 0 and not module.baseline_ready
    rewards = []
    for _ in range(3):
        stats = module.train_controller()
        rewards.append(stats['reward'])
        assert stats['samples'] == 50 * 8
    after = ctrl.choice_probabilities()
    greedy = ctrl.greedy()
    assert greedy['layer_2/op'] == 'sep_conv_5x5'
    assert greedy['layer_3/skip'] == [0, 2]
    # tanh constant 1.5 caps an op's probability at e^1.5 / (e^1.5 + 5 e^-1.5) = 0.80
    assert after['layer_2/op'][target] > 0.7
    p0, p1, p2 = after['layer_3/skip']
    assert p0 > 0.7 and p1 < 0.3 and p2 > 0.7
    # the third phase's mean reward (of at most 4) includes its own early, less trained updates
    assert rewards[-1] > rewards[0] + 0.5 and rewards[-1] > 2.5
    assert module.baseline_ready and module.baseline.item() > 2.5
    # a choice the reward ignores stays spread out
    assert max(after['layer_0/op']) < 0.7
