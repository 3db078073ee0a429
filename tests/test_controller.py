"""The ENAS controller: log-probabilities, entropies and skip penalties replayed by hand, and learning.

The hand replays follow the walk documented in nni_enas/controller.py and ENAS_SPEC C.1-C.2,
written out step by step with torch ops on the controller's own parameters.

Runtime: about 16 s on the (busy) 2-core dev machine (plus the one-off nni import); the REINFORCE
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
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace  # noqa: E402

from nni_enas import Enas, MacroSpace, MicroSpace, ReinforceController  # noqa: E402
from nni_enas.enas import EnasModule  # noqa: E402
from nni_enas.ops import MACRO_OPS, MICRO_OPS  # noqa: E402
from nni_enas.recipe import ChildTraining  # noqa: E402

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


# --------------------------------------------------------------------------- the controller learns

class _PlantedReward(EnasModule):
    """EnasModule whose child "accuracy" is a planted function of the architecture (no child training)."""

    def __init__(self, reward, **kwargs):
        super().__init__(ChildTraining(), **kwargs)
        self.planted = reward
        self.last_arch = None
        self._opt = None

    def apply(self, arch):
        self.last_arch = arch

    def _score(self, batches):
        return self.planted(self.last_arch)

    def architecture_optimizers(self):
        if self._opt is None:
            self._opt = self.configure_architecture_optimizers()
        return self._opt


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
    assert rewards[-1] > rewards[0] + 0.5 and rewards[-1] > 3.0
    assert module.baseline_ready and module.baseline.item() > 2.5
    # a choice the reward ignores stays spread out
    assert max(after['layer_0/op']) < 0.7
