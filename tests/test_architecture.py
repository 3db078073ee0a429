"""The exported-architecture format: round trips, validation messages, atomic saves, shipped files.

Runtime: about 5 s on the 2-core dev machine (plus the one-off nni import).
"""

import json
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nni_enas  # noqa: E402
from nni_enas import MacroSpace, MicroSpace  # noqa: E402
from nni.nas.nn.pytorch import LayerChoice  # noqa: E402
from nni_enas.architecture import (FORMAT, ArchitectureError, architecture_record, build_network,  # noqa: E402
                                   build_space, check_arch, check_record, load_architecture, save_architecture, write_json_atomic)
from nni_enas.spaces.ops import MACRO_OPS, MICRO_OPS  # noqa: E402

torch.set_num_threads(1)

MACRO_ARGS = dict(num_layers=3, channels=4)
MICRO_ARGS = dict(num_layers=1, channels=4, num_nodes=2)


def macro_arch():
    return {'layer_0/op': 'conv_3x3', 'layer_1/op': 'sep_conv_5x5', 'layer_1/skip': [0],
            'layer_2/op': 'max_pool_3x3', 'layer_2/skip': []}


def micro_arch():
    arch = {}
    for cell in ('normal', 'reduce'):
        for n in (2, 3):
            arch.update({f'{cell}/node_{n}/input_a': [0], f'{cell}/node_{n}/op_a': 'identity',
                         f'{cell}/node_{n}/input_b': [n - 1], f'{cell}/node_{n}/op_b': 'sep_conv_3x3'})
    return arch


def write(path, data):
    path.write_text(json.dumps(data))
    return path


def macro_record(**changes):
    record = architecture_record(MacroSpace(**MACRO_ARGS), macro_arch(), epoch=3)
    record.update(changes)
    return record


def load_error(tmp_path, data, **overrides):
    path = tmp_path / 'bad.json'
    if isinstance(data, str):
        path.write_text(data)
    else:
        write(path, data)
    with pytest.raises(ArchitectureError) as info:
        load_architecture(path, **overrides)
    message = str(info.value)
    assert '\n' not in message and str(path) in message      # one line, naming the file
    return message


# --------------------------------------------------------------------------- round trips

@pytest.mark.parametrize('cls,args,arch', [(MacroSpace, MACRO_ARGS, macro_arch()),
                                           (MicroSpace, MICRO_ARGS, micro_arch())])
def test_round_trip(tmp_path, cls, args, arch):
    space = cls(**args)
    record = architecture_record(space, arch, epoch=7, reward=0.625, greedy=arch)
    assert record['format'] == FORMAT == 'nni-enas/1'
    assert record['space'] == space.name and record['space_args'] == space.args
    assert record['provenance']['nni_enas'] == nni_enas.__version__
    assert record['provenance']['nni'].startswith('3.')
    path = tmp_path / 'sub' / 'arch.json'           # the folder is created
    save_architecture(path, record)
    assert sorted(p.name for p in path.parent.iterdir()) == ['arch.json']   # no temp files left
    loaded = load_architecture(path)
    assert loaded['arch'] == arch
    assert loaded['space_args'] == space.args
    assert loaded['provenance']['epoch'] == 7 and loaded['provenance']['reward'] == 0.625
    assert loaded == json.loads(json.dumps(record))
    rebuilt = build_space(loaded)
    assert type(rebuilt) is cls and rebuilt.args == space.args
    assert rebuilt.freeze(loaded['arch'])(torch.randn(1, 3, 16, 16)).shape == (1, 10)
    # overrides change the space arguments
    assert build_space(loaded, num_classes=4).args['num_classes'] == 4


def test_overrides_are_validated(tmp_path):
    path = tmp_path / 'arch.json'
    save_architecture(path, macro_record())
    assert load_architecture(path, channels=8)['arch'] == macro_arch()       # widths do not change labels
    with pytest.raises(ArchitectureError, match="missing label 'layer_3/op'.*missing label 'layer_3/skip'"):
        load_architecture(path, num_layers=4)


def test_shipped_architectures_load_by_name():
    # validated at a tiny width (labels do not depend on it): the full-size networks take seconds to build
    macro = load_architecture('paper-macro', channels=4)
    assert macro['space'] == 'macro' and macro['space_args']['num_layers'] == 24
    ops = [macro['arch'][f'layer_{i}/op'] for i in range(24)]
    assert ops == [MACRO_OPS[i] for i in [0, 3, 0, 2, 2, 3, 2, 2, 1, 0, 2, 0, 2, 1, 0, 2, 2, 2, 3, 3, 0, 3, 0, 0]]
    micro = load_architecture('paper-micro', channels=4)
    assert micro['space'] == 'micro'
    # the TF final script's arcs (spec B.5): per node "index_a op_a index_b op_b"
    tf = {'normal': '0 2 0 0  0 4 0 1  0 4 1 1  1 0 0 1  0 2 1 1',
          'reduce': '1 0 1 0  0 3 0 2  1 1 3 1  1 0 0 4  0 3 1 1'}
    for cell, arc in tf.items():
        numbers = [int(t) for t in arc.split()]
        for n in range(5):
            ia, oa, ib, ob = numbers[4 * n:4 * n + 4]
            node = f'{cell}/node_{n + 2}'
            assert micro['arch'][f'{node}/input_a'] == [ia] and micro['arch'][f'{node}/op_a'] == MICRO_OPS[oa]
            assert micro['arch'][f'{node}/input_b'] == [ib] and micro['arch'][f'{node}/op_b'] == MICRO_OPS[ob]
    for record in (macro, micro):
        assert check_arch(build_space(record, channels=4), record['arch']) == []


# --------------------------------------------------------------------------- bad files

def test_not_json(tmp_path):
    assert 'not valid JSON' in load_error(tmp_path, '{"format": "nni-enas/1", ')


def test_not_an_object(tmp_path):
    assert 'not a JSON object' in load_error(tmp_path, [1, 2, 3])


def test_missing_file_lists_shipped_names(tmp_path):
    with pytest.raises(ArchitectureError, match='no such file.*paper-macro.*paper-micro'):
        load_architecture(tmp_path / 'nope.json')


@pytest.mark.parametrize('space, args, message', [
    ('macro', {'num_classes': 1e12}, 'num_classes must be an integer from 1 to 100000, got 1000000000000.0'),
    ('macro', {'num_classes': 10**12}, 'num_classes must be an integer from 1 to 100000'),
    ('macro', {'num_layers': 10**9}, 'num_layers must be an integer from 1 to 100, got 1000000000'),
    ('micro', {'num_nodes': 10**6}, 'num_nodes must be an integer from 1 to 16'),
    ('micro', {'channels': True}, 'channels must be an integer from 2 to 1024, got True'),
    ('macro', {'dropout': 1.5}, 'dropout must be a number from 0.0 to 0.999'),
])
def test_absurd_space_args_are_refused_before_building_anything(tmp_path, space, args, message):
    record = macro_record() if space == 'macro' else architecture_record(MicroSpace(**MICRO_ARGS), micro_arch())
    record['space_args'] = {**record['space_args'], **args}
    start = time.perf_counter()
    assert message in load_error(tmp_path, record)
    assert time.perf_counter() - start < 5                  # refused, not built (that would hang)


def test_the_files_own_space_args_are_checked_even_where_overridden(tmp_path):
    record = macro_record()
    record['space_args'] = {**record['space_args'], 'channels': 0}
    with pytest.raises(ArchitectureError, match='channels must be an integer from 2 to 1024, got 0'):
        check_record(record, channels=8)
    check_record(macro_record(), channels=8)                # a valid file at another width is fine


def test_build_network_is_the_frozen_space_without_building_the_search_space():
    record = architecture_record(MicroSpace(**MICRO_ARGS), micro_arch())
    net = build_network(record, channels=6)
    frozen = MicroSpace(**{**MICRO_ARGS, 'channels': 6}).freeze(record['arch'])
    assert type(net) is type(frozen) and dict(net.args) == dict(frozen.args)
    assert [(k, v.shape) for k, v in net.state_dict().items()] == [(k, v.shape) for k, v in frozen.state_dict().items()]
    assert not any(isinstance(m, LayerChoice) for m in net.modules())


def test_unknown_space_and_format(tmp_path):
    message = load_error(tmp_path, macro_record(space='nasnet', format='nni-enas/9'))
    assert "unknown space 'nasnet'" in message
    assert "format 'nni-enas/9'" in message


def test_missing_arch_and_bad_space_args(tmp_path):
    record = macro_record()
    del record['arch']
    assert 'no "arch"' in load_error(tmp_path, record)
    assert 'bad space_args' in load_error(tmp_path, macro_record(space_args={'layers': 3}))
    assert 'bad space_args' in load_error(tmp_path, macro_record(space_args={'num_layers': 0}))
    assert 'space_args' in load_error(tmp_path, macro_record(space_args=[3]))


def test_every_arch_problem_is_named_in_one_message(tmp_path):
    arch = macro_arch()
    del arch['layer_0/op']                          # missing label
    arch['layer_1/op'] = 'conv_9x9'                 # value out of range (op)
    arch['layer_1/skip'] = [5]                      # value out of range (skip index)
    arch['layer_2/skip'] = 1                        # wrong type: a skip is a list
    arch['layer_7/op'] = 'conv_3x3'                 # unknown label
    arch['extra'] = 1                               # another unknown label
    message = load_error(tmp_path, macro_record(arch=arch))
    assert "missing label 'layer_0/op'" in message
    assert "'layer_1/op': 'conv_9x9' is not one of" in message
    assert "'layer_1/skip': [5]" in message
    assert "'layer_2/skip': 1 must be a list" in message
    assert "unknown labels 'extra', 'layer_7/op'" in message
    assert message.count(';') == 4                  # five problems, one line


def test_arch_not_an_object(tmp_path):
    assert '"arch" must be an object' in load_error(tmp_path, macro_record(arch=['conv_3x3']))


def test_n_chosen_violated_and_duplicates(tmp_path):
    record = architecture_record(MicroSpace(**MICRO_ARGS), micro_arch())
    record['arch']['normal/node_3/input_a'] = [0, 1]       # input choices pick exactly one
    record['arch']['reduce/node_2/input_b'] = []
    message = load_error(tmp_path, record)
    assert "'normal/node_3/input_a': [0, 1] must choose exactly 1" in message
    assert "'reduce/node_2/input_b': [] must choose exactly 1" in message
    dup = macro_record()
    dup['arch']['layer_2/skip'] = [1, 1]
    assert "'layer_2/skip': [1, 1] must be a list of distinct values" in load_error(tmp_path, dup)


def test_wrong_value_types_are_not_taken_for_indices(tmp_path):
    # JSON true == 1 and 1.0 == 1 in Python; neither is an input index
    for bad in ([True], [1.0]):
        record = macro_record()
        record['arch']['layer_2/skip'] = bad
        assert "'layer_2/skip'" in load_error(tmp_path, record)
    record = architecture_record(MicroSpace(**MICRO_ARGS), micro_arch())
    record['arch']['normal/node_2/input_a'] = [False]
    assert "'normal/node_2/input_a'" in load_error(tmp_path, record)
    record = macro_record()
    record['arch']['layer_0/op'] = 0                # an op is named, not numbered
    assert "'layer_0/op': 0 is not one of" in load_error(tmp_path, record)


def test_check_arch_accepts_valid_and_lists_problems():
    space = MacroSpace(**MACRO_ARGS)
    assert check_arch(space, macro_arch()) == []
    assert check_arch(space, {**macro_arch(), 'layer_2/skip': [1, 0]}) == []     # any order
    assert check_arch(space, 'conv_3x3') == ['"arch" must be an object mapping labels to choices']
    assert len(check_arch(space, {})) == 5


# --------------------------------------------------------------------------- atomic saves

def test_save_refuses_an_invalid_record_and_keeps_the_old_file(tmp_path):
    path = tmp_path / 'arch.json'
    save_architecture(path, macro_record())
    before = path.read_bytes()
    bad = macro_record()
    bad['arch']['layer_0/op'] = 'identity'
    with pytest.raises(ArchitectureError, match="'layer_0/op': 'identity'"):
        save_architecture(path, bad)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['arch.json']


def test_failing_write_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / 'arch.json'
    save_architecture(path, macro_record())
    before = path.read_bytes()
    unserialisable = macro_record()
    unserialisable['provenance']['when'] = object()        # json.dump fails half way through
    with pytest.raises(TypeError):
        save_architecture(path, unserialisable)
    assert path.read_bytes() == before
    assert load_architecture(path)['arch'] == macro_arch()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['arch.json']    # the temp file is gone


def test_write_json_atomic_replaces(tmp_path):
    path = tmp_path / 'a' / 'b.json'
    write_json_atomic(path, {'x': 1})
    write_json_atomic(path, {'x': 2})
    assert json.loads(path.read_text()) == {'x': 2}
    assert path.read_text().endswith('\n')
    assert [p.name for p in path.parent.iterdir()] == ['b.json']
