"""The candidate-op table (nni_enas/spaces/ops.py): shapes, layouts, pooling and factorized reduction.

Runtime: about 1 s on the 2-core dev machine (plus the one-off nni import).
"""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nni_enas.spaces.ops import MACRO_OPS, MICRO_OPS, FactorizedReduce, ReLUConvBN, build_op, init_weights  # noqa: E402

torch.set_num_threads(1)   # 2 threads on 2 busy cores make tiny convs ~50x slower

BN_SCALE = 1 / math.sqrt(1 + 1e-5)   # an eval-mode BN with fresh running stats multiplies by this


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_op_tables_are_the_tf_index_order():
    assert MACRO_OPS == ('conv_3x3', 'sep_conv_3x3', 'conv_5x5', 'sep_conv_5x5', 'avg_pool_3x3', 'max_pool_3x3')
    assert MICRO_OPS == ('sep_conv_3x3', 'sep_conv_5x5', 'avg_pool_3x3', 'max_pool_3x3', 'identity')


@pytest.mark.parametrize('final', [False, True])
@pytest.mark.parametrize('name', MACRO_OPS)
def test_macro_op_maps_c_in_to_c_out(name, final):
    torch.manual_seed(0)
    op = build_op(name, 3, 5, space='macro', final=final)
    x = torch.randn(2, 3, 8, 8)
    y = op(x)
    assert y.shape == (2, 5, 8, 8)
    y.sum().backward()
    assert all(p.grad is not None for p in op.parameters())


@pytest.mark.parametrize('name', MACRO_OPS)
def test_macro_layouts_search_ends_with_relu_final_starts_with_relu(name):
    torch.manual_seed(1)
    search = build_op(name, 4, 4, space='macro', final=False).eval()
    final = build_op(name, 4, 4, space='macro', final=True).eval()
    x = torch.randn(2, 4, 6, 6)
    # search layout: conv-BN-ReLU blocks (a pool follows a ReLU): never negative
    assert (search(x) >= 0).all()
    # final layout: ReLU first, so the negative part of the input is ignored
    assert torch.allclose(final(x), final(torch.relu(x)))
    if 'pool' not in name:
        # ... and it ends with BN, not ReLU
        assert (final(x) < 0).any()


def test_macro_param_counts_and_real_separable_convs():
    # search: 1x1 (3*5) + BN(10) + kxk + BN(10)
    assert n_params(build_op('conv_3x3', 3, 5, space='macro')) == 15 + 10 + 5 * 5 * 9 + 10
    assert n_params(build_op('sep_conv_3x3', 3, 5, space='macro')) == 15 + 10 + 5 * 9 + 5 * 5 + 10
    assert n_params(build_op('conv_5x5', 3, 5, space='macro')) == 15 + 10 + 5 * 5 * 25 + 10
    assert n_params(build_op('sep_conv_5x5', 3, 5, space='macro')) == 15 + 10 + 5 * 25 + 5 * 5 + 10
    assert n_params(build_op('max_pool_3x3', 3, 5, space='macro')) == 15 + 10
    # the final layout also has real separable convs (TF's fixed mode did not)
    for name in MACRO_OPS:
        assert n_params(build_op(name, 3, 5, space='macro', final=True)) == n_params(build_op(name, 3, 5, space='macro'))


@pytest.mark.parametrize('name', MICRO_OPS)
def test_micro_op_keeps_shape_at_stride_1_and_halves_at_stride_2(name):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    assert build_op(name, 4, 4, space='micro', stride=1)(x).shape == (2, 4, 8, 8)
    op = build_op(name, 4, 4, space='micro', stride=2)
    y = op(x)
    assert y.shape == (2, 4, 4, 4)
    if name == 'identity':
        assert isinstance(op, FactorizedReduce)


def test_micro_identity_is_identity_at_stride_1_and_sep_conv_has_two_units():
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(build_op('identity', 4, 4, space='micro')(x), x)
    # two ReLU-dw-pw-BN units: 2 * (dw 4*k*k + pw 16 + BN 8)
    assert n_params(build_op('sep_conv_3x3', 4, 4, space='micro')) == 2 * (36 + 16 + 8)
    assert n_params(build_op('sep_conv_5x5', 4, 4, space='micro', stride=2)) == 2 * (100 + 16 + 8)


def test_micro_max_pool_value():
    x = torch.arange(16.).view(1, 1, 4, 4)
    y = build_op('max_pool_3x3', 1, 1, space='micro', stride=2)(x)
    assert y.flatten().tolist() == [5., 7., 13., 15.]


def test_factorized_reduce_shape_and_even_odd_paths():
    fr = FactorizedReduce(3, 5)
    assert fr(torch.randn(2, 3, 8, 8)).shape == (2, 5, 4, 4)
    # one input channel, unit weights: channel 0 sees the even pixels, channel 1 the odd ones
    fr = FactorizedReduce(1, 2).eval()
    with torch.no_grad():
        fr.path1.weight.fill_(1.0)
        fr.path2.weight.fill_(1.0)
    x = torch.randn(1, 1, 6, 6)
    y = fr(x) / BN_SCALE
    assert torch.allclose(y[0, 0], x[0, 0, ::2, ::2], atol=1e-6)
    assert torch.allclose(y[0, 1], x[0, 0, 1::2, 1::2], atol=1e-6)
    # odd size: the shifted path is zero-padded at the right/bottom
    x = torch.randn(1, 1, 5, 5)
    y = fr(x) / BN_SCALE
    assert y.shape == (1, 2, 3, 3)
    assert torch.allclose(y[0, 1, :2, :2], x[0, 0, 1::2, 1::2], atol=1e-6)
    assert torch.all(y[0, 1, 2, :] == 0) and torch.all(y[0, 1, :, 2] == 0)
    # relu=True ignores negative inputs; relu=False does not
    fr_relu = FactorizedReduce(1, 2, relu=True).eval()
    neg = -torch.rand(1, 1, 4, 4)
    assert torch.allclose(fr_relu(neg), fr_relu(torch.zeros_like(neg)))
    assert not torch.allclose(fr(neg), fr(torch.zeros_like(neg)))


def test_relu_conv_bn():
    block = ReLUConvBN(3, 6, kernel=3, stride=2).eval()
    x = torch.randn(2, 3, 8, 8)
    assert block(x).shape == (2, 6, 4, 4)
    assert torch.allclose(block(x), block(torch.relu(x)))


def test_unknown_names_raise_key_error():
    with pytest.raises(KeyError, match='conv_7x7'):
        build_op('conv_7x7', 4, 4, space='macro')
    with pytest.raises(KeyError):
        build_op('identity', 4, 4, space='macro')     # a micro-only op
    with pytest.raises(KeyError):
        build_op('conv_3x3', 4, 4, space='micro')     # a macro-only op
    with pytest.raises(KeyError):
        build_op('conv_3x3', 4, 4, space='nasnet')
    with pytest.raises(ValueError):
        build_op('sep_conv_3x3', 4, 8, space='micro')  # micro ops keep the width


def test_avg_pool_excludes_padding_from_the_count():
    x = torch.arange(16.).view(1, 1, 4, 4)
    y = build_op('avg_pool_3x3', 1, 1, space='micro', stride=1)(x)
    # corner: mean of the 4 real pixels (0, 1, 4, 5), not their sum / 9
    assert y[0, 0, 0, 0].item() == pytest.approx((0 + 1 + 4 + 5) / 4)
    assert y[0, 0, 0, 1].item() == pytest.approx((0 + 1 + 2 + 4 + 5 + 6) / 6)
    assert y[0, 0, 1, 1].item() == pytest.approx((0 + 1 + 2 + 4 + 5 + 6 + 8 + 9 + 10) / 9)
    y2 = build_op('avg_pool_3x3', 1, 1, space='micro', stride=2)(x)
    assert y2[0, 0, 0, 0].item() == pytest.approx(2.5)
    # macro: 1x1 conv (unit weight) - BN - ReLU - pool: a constant positive image stays constant at the corners
    op = build_op('avg_pool_3x3', 1, 1, space='macro').eval()
    with torch.no_grad():
        op[0].weight.fill_(1.0)
    out = op(torch.ones(1, 1, 5, 5))
    assert torch.allclose(out, torch.full_like(out, BN_SCALE))


def test_init_weights_he_normal_and_bn():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(64, 64, 3, bias=True), nn.BatchNorm2d(64), nn.Linear(256, 10))
    with torch.no_grad():
        net[1].weight.fill_(3.0)
        net[1].bias.fill_(2.0)
    init_weights(net)
    std = net[0].weight.std().item()
    assert std == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)
    assert torch.all(net[0].bias == 0)
    assert torch.all(net[1].weight == 1) and torch.all(net[1].bias == 0)
    assert net[2].weight.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.1)
