"""The macro and micro spaces: labels, frozen networks, final layouts, and supernet == frozen network.

The key test: a supernet routed along an architecture computes exactly what ``space.freeze(arch)``
computes once it holds the supernet's weights (``shared_to_fixed_state_dict``), so the network
retrained is the network searched.

Runtime: about 10 s on the 2-core dev machine (plus the one-off nni import).
"""

import random
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nni_enas  # noqa: E402,F401  (filters NNI's harmless warning)
from nni.mutable import Categorical, CategoricalMultiple, SampleValidationError  # noqa: E402
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule  # noqa: E402

from nni_enas import Enas, MacroSpace, MicroSpace  # noqa: E402
from nni_enas.spaces.macro import reduction_layers  # noqa: E402
from nni_enas.spaces.micro import reduction_cells  # noqa: E402
from nni_enas.spaces.ops import MACRO_OPS, MICRO_OPS  # noqa: E402
from nni_enas.spaces.supernet import shared_to_fixed_state_dict  # noqa: E402

torch.set_num_threads(1)   # 2 threads on 2 busy cores make tiny convs ~50x slower

MACRO_ARGS = dict(num_layers=4, channels=4)
MICRO_ARGS = dict(num_layers=2, channels=4, num_nodes=3)   # cells: R R N N (reductions first)


# --------------------------------------------------------------------------- helpers

def random_arch(space, rng):
    arch = {}
    for label, mutable in space.simplify().items():
        if isinstance(mutable, Categorical):
            arch[label] = rng.choice(mutable.values)
        elif mutable.n_chosen is None:
            arch[label] = [v for v in mutable.values if rng.random() < 0.5]
        else:
            arch[label] = sorted(rng.sample(list(mutable.values), mutable.n_chosen))
    return arch


def macro_arch(num_layers, skip):
    """skip: 'none' | 'all' | callable(i) -> list."""
    arch = {}
    for i in range(num_layers):
        arch[f'layer_{i}/op'] = MACRO_OPS[i % len(MACRO_OPS)]
        if i > 0:
            arch[f'layer_{i}/skip'] = [] if skip == 'none' else list(range(i)) if skip == 'all' else skip(i)
    return arch


def micro_arch(normal, reduce):
    """normal/reduce: per node n = 2.. a tuple (input_a, op_a, input_b, op_b)."""
    arch = {}
    for cell, nodes in (('normal', normal), ('reduce', reduce)):
        for n, (ia, oa, ib, ob) in enumerate(nodes, start=2):
            arch.update({f'{cell}/node_{n}/input_a': [ia], f'{cell}/node_{n}/op_a': oa,
                         f'{cell}/node_{n}/input_b': [ib], f'{cell}/node_{n}/op_b': ob})
    return arch


# 3 nodes (2, 3, 4); every op appears
CHAIN = [(1, 'sep_conv_3x3', 0, 'identity'), (2, 'avg_pool_3x3', 1, 'max_pool_3x3'),
         (3, 'sep_conv_5x5', 2, 'identity')]                                   # loose ends: {4}
LOOSE_0 = [(1, 'sep_conv_3x3', 1, 'identity'), (2, 'avg_pool_3x3', 1, 'max_pool_3x3'),
           (3, 'identity', 2, 'sep_conv_5x5')]                                 # loose ends: {0, 4}
LOOSE_1 = [(0, 'identity', 0, 'sep_conv_5x5'), (0, 'max_pool_3x3', 2, 'identity'),
           (2, 'avg_pool_3x3', 0, 'sep_conv_3x3')]                             # loose ends: {1, 3, 4}
WIDE = [(0, 'identity', 1, 'max_pool_3x3'), (0, 'sep_conv_3x3', 1, 'avg_pool_3x3'),
        (1, 'identity', 0, 'sep_conv_5x5')]                                    # loose ends: {2, 3, 4}

MACRO_SAMPLES = [macro_arch(4, 'none'), macro_arch(4, 'all'), macro_arch(4, lambda i: [0] if i == 3 else [])]
MICRO_SAMPLES = [micro_arch(CHAIN, LOOSE_0), micro_arch(WIDE, LOOSE_1), micro_arch(LOOSE_1, WIDE)]


def route(supernet, arch):
    """What EnasModule.apply does: every supernet module takes its label's value."""
    modules = [m for m in supernet.modules() if isinstance(m, BaseSuperNetModule)]
    assert modules
    for module in modules:
        module.resample(memo=arch)


def scramble_bn(net, seed):
    """Non-trivial BN statistics and affine parameters, so that a wrong weight mapping shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))


# --------------------------------------------------------------------------- labels

def test_macro_labels():
    space = MacroSpace(num_layers=5, channels=4)
    spec = space.simplify()
    expected = [f'layer_{i}/op' for i in range(5)] + [f'layer_{i}/skip' for i in range(1, 5)]
    assert sorted(spec) == sorted(expected)
    assert len(spec) == 9
    for i in range(5):
        assert isinstance(spec[f'layer_{i}/op'], Categorical)
        assert list(spec[f'layer_{i}/op'].values) == list(MACRO_OPS)
    for i in range(1, 5):
        skip = spec[f'layer_{i}/skip']
        assert isinstance(skip, CategoricalMultiple)
        assert skip.n_chosen is None
        assert list(skip.values) == list(range(i))       # layer i has i skip candidates
    assert space.name == 'macro'
    assert space.args == dict(num_layers=5, channels=4, num_classes=10, dropout=0.1, final=False)


def test_micro_labels():
    space = MicroSpace(num_layers=2, channels=4, num_nodes=5)
    spec = space.simplify()
    assert len(spec) == 40
    for cell in ('normal', 'reduce'):
        for n in range(2, 7):
            for slot in 'ab':
                inputs = spec[f'{cell}/node_{n}/input_{slot}']
                assert isinstance(inputs, CategoricalMultiple) and inputs.n_chosen == 1
                assert list(inputs.values) == list(range(n))
                assert list(spec[f'{cell}/node_{n}/op_{slot}'].values) == list(MICRO_OPS)
    assert list(spec['normal/node_2/input_a'].values) == [0, 1]
    assert 'reduce/node_6/op_b' in spec
    assert 'normal/node_7/op_a' not in spec
    assert len(MicroSpace(num_layers=1, channels=4, num_nodes=2).simplify()) == 16
    assert space.name == 'micro'
    assert space.args['num_nodes'] == 5 and space.args['auxiliary'] is False


def test_reduction_positions_follow_tf():
    assert reduction_layers(12) == (3, 7)
    assert reduction_layers(24) == (7, 15)
    assert reduction_cells(6) == (2, 5)
    assert reduction_cells(15) == (5, 11)


def test_freeze_validates_the_sample():
    space = MacroSpace(num_layers=2, channels=4)
    good = macro_arch(2, 'none')
    with pytest.raises(SampleValidationError):
        space.freeze({**good, 'layer_0/op': 'identity'})
    with pytest.raises(SampleValidationError):
        space.freeze({k: v for k, v in good.items() if k != 'layer_1/skip'})


# --------------------------------------------------------------------------- frozen networks

@pytest.mark.parametrize('cls,args', [(MacroSpace, MACRO_ARGS), (MicroSpace, MICRO_ARGS)])
def test_random_frozen_networks_run_forward_and_backward(cls, args):
    rng = random.Random(0)
    torch.manual_seed(0)
    space = cls(**args)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    seen = set()
    for _ in range(3):
        arch = random_arch(space, rng)
        assert space.check_contains(arch) is None
        net = space.freeze(arch)
        assert isinstance(net, cls)
        out = net(x)
        assert out.shape == (2, 10)
        nn.functional.cross_entropy(out, y).backward()
        assert net.stem[0].weight.grad is not None and net.stem[0].weight.grad.abs().sum() > 0
        seen.add(tuple(sorted((k, str(v)) for k, v in arch.items())))
    assert len(seen) == 3


def test_frozen_macro_holds_only_the_chosen_ops():
    arch = macro_arch(4, 'none')
    net = MacroSpace(**MACRO_ARGS).freeze(arch)
    sep = net.layers[1].op          # sep_conv_3x3: 1x1, BN, ReLU, depthwise, pointwise, BN, ReLU
    assert isinstance(sep, nn.Sequential) and sep[3].groups == 4 and sep[3].kernel_size == (3, 3)
    assert not any(isinstance(m, BaseSuperNetModule) for m in net.modules())
    assert net.layers[0].skip is None


# --------------------------------------------------------------------------- supernet == frozen network

@pytest.mark.parametrize('cls,args,samples', [
    (MacroSpace, MACRO_ARGS, MACRO_SAMPLES),
    (MicroSpace, MICRO_ARGS, MICRO_SAMPLES),
])
def test_supernet_equals_frozen_network_with_its_weights(cls, args, samples):
    torch.manual_seed(0)
    supernet = Enas().mutate_model(cls(**args))
    assert any(isinstance(m, BaseSuperNetModule) for m in supernet.modules())
    scramble_bn(supernet, 1)
    supernet.eval()
    rng = random.Random(1)
    archs = samples + [random_arch(cls(**args), rng) for _ in range(2)]
    x = torch.randn(2, 3, 32, 32)
    outputs = []
    for arch in archs:
        route(supernet, arch)
        fixed = cls(**args).freeze(arch)
        fixed.load_state_dict(shared_to_fixed_state_dict(supernet, fixed, arch), strict=True)
        fixed.eval()
        with torch.no_grad():
            expected, got = supernet(x), fixed(x)
        assert torch.allclose(expected, got, rtol=1e-5, atol=1e-6), (arch, (expected - got).abs().max())
        outputs.append(got)
    # the archs really compute different functions (the test would be vacuous otherwise)
    assert not torch.allclose(outputs[0], outputs[1])


def test_micro_reduction_cell_loose_inputs_are_reduced():
    """A reduction cell's unused cell input is a loose end, factorized-reduced before the merge."""
    arch = micro_arch(CHAIN, LOOSE_0)
    net = MicroSpace(**MICRO_ARGS).freeze(arch)
    assert net.cells[0].reduction and net.cells[0].loose == [0, 4]
    assert MicroSpace(**MICRO_ARGS).freeze(micro_arch(CHAIN, LOOSE_1)).cells[1].loose == [1, 3, 4]
    assert net.cells[2].loose == [4]
    x = torch.randn(2, 3, 32, 32)
    assert net(x).shape == (2, 10)


# --------------------------------------------------------------------------- final layouts

def test_macro_final_layout():
    torch.manual_seed(0)
    args = dict(num_layers=4, channels=4, final=True, dropout=0.5)
    none = MacroSpace(**args).freeze(macro_arch(4, 'none'))
    full = MacroSpace(**args).freeze(macro_arch(4, 'all'))
    x = torch.randn(2, 3, 32, 32)
    for net in (none, full):
        out = net(x)
        assert out.shape == (2, 10)
        out.sum().backward()
        assert net.classifier.in_features == 16      # 4 -> 8 -> 16 at the two reductions
        assert net.dropout.p == 0.5
    # each skip adds one C_layer x C_layer block to its layer's 1x1 merge conv:
    # layer 1 (width 8): 1 skip, layers 2 and 3 (width 16): 2 + 3 skips
    n = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert n(full) - n(none) == 1 * 8 * 8 + 2 * 16 * 16 + 3 * 16 * 16
    assert full.layers[3].merge[1].in_channels == 4 * 16


def test_micro_final_layout_aux_head_and_loose_end_widths():
    torch.manual_seed(0)
    args = dict(num_layers=3, channels=4, num_nodes=3, final=True, auxiliary=True, drop_path_prob=0.4)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 3])
    chain = MicroSpace(**args).freeze(micro_arch(CHAIN, CHAIN))
    wide = MicroSpace(**args).freeze(micro_arch(WIDE, LOOSE_1))
    for net in (chain, wide):
        net.train()
        logits, aux = net(x)
        assert logits.shape == (2, 10) and aux.shape == (2, 10)
        (nn.functional.cross_entropy(logits, y) + 0.4 * nn.functional.cross_entropy(aux, y)).backward()
        # the fixed network holds exactly what the architecture uses: every parameter gets a gradient
        unused = [name for name, p in net.named_parameters() if p.grad is None]
        assert unused == []
        net.eval()
        out = net(x)
        assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    # output widths: CHAIN leaves 1 loose end (C), WIDE 3 (3C)
    assert chain.cells[0].out_channels == 4 and wide.cells[0].out_channels == 12
    n = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert n(chain) != n(wide)


def test_micro_aux_head_trains_through_a_batch_of_one_image():
    """A batch of one (a last batch of N mod batch = 1, or --batch-size 1) trains as TF would.

    Before: the aux head's BatchNorm on 1x1 maps raised "Expected more than 1 value per channel".
    TF's BN normalises one value per channel to its bias, with no gradient to the input.
    """
    torch.manual_seed(0)
    net = MicroSpace(num_layers=3, channels=4, num_nodes=3, final=True, auxiliary=True).freeze(micro_arch(CHAIN, CHAIN))
    net.train()
    head = net.auxiliary
    last_bn = head.features[6]
    with torch.no_grad():
        last_bn.bias.normal_()
    x, y = torch.randn(1, 3, 32, 32), torch.tensor([3])
    logits, aux = net(x)
    assert logits.shape == (1, 10) and aux.shape == (1, 10)
    (nn.functional.cross_entropy(logits, y) + 0.4 * nn.functional.cross_entropy(aux, y)).backward()
    assert [name for name, p in net.named_parameters() if p.grad is None] == []   # data parallelism needs every one
    # TF's result: the last BN outputs its bias (up to the rounding of x - mean), so the aux logits do
    # not depend on the image ...
    expected = head.classifier(torch.relu(last_bn.bias))
    torch.testing.assert_close(aux[0], expected, rtol=0, atol=1e-4)
    # ... and no gradient reaches the layers below it through the aux loss
    features = torch.randn(1, head.features[2].in_channels, 8, 8, requires_grad=True)
    head(features).sum().backward()
    assert features.grad.abs().max().item() < 1e-6


def test_micro_drop_path_schedule():
    net = MicroSpace(num_layers=3, channels=4, num_nodes=2, final=True, drop_path_prob=0.4)
    num_cells = len(net.cells)
    net.set_drop_path_progress(0.5)
    for i, cell in enumerate(net.cells):
        assert cell.drop_prob == pytest.approx(0.5 * (i + 1) / num_cells * 0.4)
    net.set_drop_path_progress(3.0)          # capped at full progress
    assert net.cells[-1].drop_prob == pytest.approx(0.4)


def test_final_layout_supernet_refuses_other_widths():
    macro = Enas().mutate_model(MacroSpace(num_layers=3, channels=4, final=True))
    x = torch.randn(1, 3, 32, 32)
    # built for the dry-run sample (every skip on); a sample with fewer skips has another width
    route(macro, {**macro_arch(3, 'all'), 'layer_2/skip': [1]})
    with pytest.raises(RuntimeError):
        macro(x)
    micro = Enas().mutate_model(MicroSpace(num_layers=1, channels=4, num_nodes=2, final=True))
    arch = micro_arch([(0, 'identity', 0, 'identity'), (0, 'identity', 1, 'identity')],
                      [(1, 'identity', 1, 'identity'), (2, 'identity', 2, 'identity')])
    route(micro, arch)
    with pytest.raises(RuntimeError, match='fixed network'):
        micro(x)
