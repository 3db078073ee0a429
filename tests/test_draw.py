"""Drawings of architectures (nni_enas.draw) and of a search (nni_enas.draw.search.SearchDrawings).

The layouts are checked against the architectures (every op, input, skip, previous node and loose
end) and geometrically (no edge passes through a box it does not connect), the SVG and PNG files
against the layouts, the callback in a tiny 2-epoch search (resumed after its first epoch) against
the files and the TensorBoard events it must leave, and with a recurrent cell's exports; the
probability plot's titles and colours.

The recurrent cell's record is written here from TF0's arc (ENAS_RNN_SPEC.md 5.1) and validated
through a stand-in for the 'rnn' space where the space is not registered (validation is the
space's, not the drawing's); with the real space and paper-rnn.json present, both are used.

Runtime: about 37 s of pytest wall time on the shared 2-core dev machine, most of it imports and the
module entry point's subprocess; the recurrent-cell and routing tests take under 2 s together.
"""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from nni_enas import EnasTrainer, MacroSpace, MicroSpace, architecture  # noqa: E402
from nni_enas.architecture import SHIPPED_DIR, architecture_record, load_architecture  # noqa: E402
from nni_enas.draw import OP_COLORS, draw_architecture, layout, main, render_image, render_svg  # noqa: E402
from nni_enas.draw.search import SearchDrawings  # noqa: E402
from nni_enas.search.export import ArchitectureExport  # noqa: E402
from nni_enas.training.classification import accuracy  # noqa: E402

torch.set_num_threads(1)

SVG = '{http://www.w3.org/2000/svg}'


def macro_record(skips, ops=None):
    num_layers = len(skips) + 1
    ops = ops or ['conv_3x3', 'sep_conv_5x5', 'max_pool_3x3', 'avg_pool_3x3', 'conv_5x5', 'sep_conv_3x3'][:num_layers]
    arch = {f'layer_{i}/op': ops[i] for i in range(num_layers)}
    arch.update({f'layer_{i}/skip': skips[i - 1] for i in range(1, num_layers)})
    return architecture_record(MacroSpace(num_layers=num_layers, channels=2), arch)


# TF0's final PTB arc `0 0 0 1 1 2 1 2 0 2 0 5 1 1 0 6 1 8 1 8 1 8 1` (spec 5.1): node -> (activation, previous node)
PAPER_RNN = {0: ('tanh', None), 1: ('tanh', 0), 2: ('relu', 1), 3: ('relu', 2), 4: ('tanh', 2), 5: ('tanh', 2),
             6: ('relu', 5), 7: ('tanh', 1), 8: ('relu', 6), 9: ('relu', 8), 10: ('relu', 8), 11: ('relu', 8)}
PAPER_RNN_LOOSE = [3, 4, 7, 9, 10, 11]
ACTIVATIONS = ('tanh', 'relu', 'identity', 'sigmoid')


def rnn_record(cell=PAPER_RNN, **provenance):
    arch = {}
    for j, (act, prev) in cell.items():
        if prev is not None:
            arch[f'node_{j}/prev'] = prev
        arch[f'node_{j}/act'] = act
    return {'format': 'nni-enas/1', 'space': 'rnn',
            'space_args': {'vocab_size': 10000, 'num_nodes': len(cell), 'hidden_size': 800},
            'arch': arch, 'provenance': provenance}


class _RnnStandIn:
    """The labels of the 'rnn' space (RNN_PLAN interface 1), for validation where it is not registered."""
    name = 'rnn'

    def __init__(self, vocab_size=10000, num_nodes=12, hidden_size=200, channels=None, **dropouts):
        self.num_nodes = num_nodes

    def simplify(self):
        from nni.mutable import Categorical, label_scope
        spec = {}
        for j in range(self.num_nodes):
            with label_scope(f'node_{j}'):
                if j:
                    spec[f'node_{j}/prev'] = Categorical(list(range(j)), label='prev')
                spec[f'node_{j}/act'] = Categorical(list(ACTIVATIONS), label='act')
        return spec


@pytest.fixture
def rnn_space(monkeypatch):
    if 'rnn' not in architecture.SPACES:
        monkeypatch.setitem(architecture.SPACES, 'rnn', _RnnStandIn)


def _polyline(edge, steps=24):
    """An edge's path as points (a chain of cubic Beziers, 3n + 1 points, when curved)."""
    if not edge.curved:
        return list(edge.points)
    out = [edge.points[0]]
    for k in range(0, len(edge.points) - 1, 3):
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = edge.points[k:k + 4]
        for i in range(1, steps + 1):
            t = i / steps
            a, b, c, e = (1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t ** 3
            out.append((a * x0 + b * x1 + c * x2 + e * x3, a * y0 + b * y1 + c * y2 + e * y3))
    return out


def box_crossings(d):
    """(edge, box) pairs where an edge's path enters a box it does not connect (1 unit inside its border)."""
    found = []
    for e in d.edges:
        pts = _polyline(e)
        samples = [(a[0] + (b[0] - a[0]) * t / 8, a[1] + (b[1] - a[1]) * t / 8)
                   for a, b in zip(pts, pts[1:]) for t in range(9)]
        for n in d.nodes:
            if n.id not in (e.source, e.target) and any(
                    abs(x - n.x) < n.w / 2 - 1 and abs(y - n.y) < n.h / 2 - 1 for x, y in samples):
                found.append((f'{e.source}->{e.target}', n.id))
    return found


def boxes_overlap(d):
    return [(a.id, b.id) for i, a in enumerate(d.nodes) for b in d.nodes[i + 1:]
            if abs(a.x - b.x) < (a.w + b.w) / 2 and abs(a.y - b.y) < (a.h + b.h) / 2]


# --------------------------------------------------------------------------- layouts

def test_macro_layout_has_the_chain_the_ops_and_exactly_the_skips():
    record = macro_record([[], [0], [0, 1], [1, 2, 3], [0, 4]])
    d = layout(record)
    names = ['stem'] + [f'layer_{i}' for i in range(6)]
    assert [n.id for n in d.nodes] == names
    assert [n.label for n in d.nodes] == ['stem'] + [record['arch'][f'layer_{i}/op'] for i in range(6)]
    assert d.edge_pairs('chain') == list(zip(names, names[1:]))
    # skip index j is [stem, layer_0, ...][j]
    expected = {('stem', 'layer_2'), ('stem', 'layer_3'), ('layer_0', 'layer_3'), ('layer_0', 'layer_4'),
                ('layer_1', 'layer_4'), ('layer_2', 'layer_4'), ('stem', 'layer_5'), ('layer_3', 'layer_5')}
    assert set(d.edge_pairs('skip')) == expected and len(d.edge_pairs('skip')) == len(expected)
    # the resolution halves after layers L//3 - 1 = 1 and 2*(L//3) - 1 = 3
    assert [(e.source, e.target) for e in d.edges if e.label == 'reduce'] == [('layer_1', 'layer_2'),
                                                                            ('layer_3', 'layer_4')]
    # boxes inside the drawing, in chain order top to bottom
    assert all(0 <= n.x - n.w / 2 and n.x + n.w / 2 <= d.width and 0 <= n.y - n.h / 2 <= d.height for n in d.nodes)
    assert [n.y for n in d.nodes] == sorted(n.y for n in d.nodes)


def test_paper_macro_layout_draws_every_skip_of_the_file():
    record = load_architecture('paper-macro')
    d = layout(record)
    expected = sorted((['stem'] + [f'layer_{k}' for k in range(24)])[j] + '>' + f'layer_{i}'
                      for i in range(1, 24) for j in record['arch'][f'layer_{i}/skip'])
    assert sorted(f'{s}>{t}' for s, t in d.edge_pairs('skip')) == expected


def _cell(d, cell):
    return {n.id: n for n in d.nodes if n.id.startswith(cell + '/')}


@pytest.mark.parametrize('cell, loose', [('normal', [2, 3, 4, 5, 6]), ('reduce', [2, 4, 5, 6])])
def test_paper_micro_cells_have_their_ops_inputs_and_loose_ends(cell, loose):
    record = load_architecture('paper-micro')
    arch = record['arch']
    d = layout(record)
    nodes = _cell(d, cell)
    state = {0: f'{cell}/c_k-2', 1: f'{cell}/c_k-1', **{n: f'{cell}/node_{n}' for n in range(2, 7)}}
    assert set(nodes) == ({state[j] for j in state} | {f'{cell}/output'}
                          | {f'{cell}/node_{n}/op_{s}' for n in range(2, 7) for s in 'ab'})
    pairs = set(d.edge_pairs())
    for n in range(2, 7):
        for s in 'ab':
            op = f'{cell}/node_{n}/op_{s}'
            assert nodes[op].label == arch[f'{cell}/node_{n}/op_{s}']
            assert nodes[op].fill == OP_COLORS[nodes[op].label]
            # the op reads its chosen input and feeds its node, and nothing else
            assert [src for src, dst in pairs if dst == op] == [state[arch[f'{cell}/node_{n}/input_{s}'][0]]]
            assert [dst for src, dst in pairs if src == op] == [state[n]]
    assert sorted(src for src, dst in d.edge_pairs('loose') if dst == f'{cell}/output') == sorted(state[j] for j in loose)
    assert nodes[f'{cell}/output'].label == 'concat'


def test_micro_loose_ends_follow_the_cell_rule_including_an_unused_cell_input():
    """The drawn loose ends are the ones micro.Cell concatenates (here input 0 is never read)."""
    arch = {}
    for cell in ('normal', 'reduce'):
        arch.update({f'{cell}/node_2/input_a': [1], f'{cell}/node_2/op_a': 'identity',
                     f'{cell}/node_2/input_b': [1], f'{cell}/node_2/op_b': 'sep_conv_3x3',
                     f'{cell}/node_3/input_a': [1], f'{cell}/node_3/op_a': 'max_pool_3x3',
                     f'{cell}/node_3/input_b': [2], f'{cell}/node_3/op_b': 'avg_pool_3x3'})
    space = MicroSpace(num_layers=1, channels=2, num_nodes=2, final=True)
    record = architecture_record(space, arch)
    net = space.freeze(arch)
    d = layout(record)
    for cell in ('normal', 'reduce'):
        module = next(c for c in net.cells if c.reduction == (cell == 'reduce'))
        state = {0: f'{cell}/c_k-2', 1: f'{cell}/c_k-1', 2: f'{cell}/node_2', 3: f'{cell}/node_3'}
        drawn = sorted(src for src, dst in d.edge_pairs('loose') if dst == f'{cell}/output')
        assert drawn == sorted(state[j] for j in module.loose) == [f'{cell}/c_k-2', f'{cell}/node_3']
    # the unused input's way to concat is blocked by the op boxes: it is routed around every box
    for e in d.edges:
        if e.kind == 'loose':
            assert not e.curved
            for n in d.nodes:
                if n.id not in (e.source, e.target):
                    assert not any(_crosses(a, b, n) for a, b in zip(e.points, e.points[1:])), (e, n.id)


def _crosses(a, b, n):
    """Whether the axis-parallel segment a-b enters the box of node n."""
    (x0, x1), (y0, y1) = sorted((a[0], b[0])), sorted((a[1], b[1]))
    return x0 < n.x + n.w / 2 and x1 > n.x - n.w / 2 and y0 < n.y + n.h / 2 and y1 > n.y - n.h / 2


def _micro_arch(cells):
    """A micro arch from {cell: [(input_a, op_a, input_b, op_b) of node 2, 3, ...]}."""
    arch = {}
    for cell, nodes in cells.items():
        for n, (ia, oa, ib, ob) in enumerate(nodes, start=2):
            arch.update({f'{cell}/node_{n}/input_a': [ia], f'{cell}/node_{n}/op_a': oa,
                         f'{cell}/node_{n}/input_b': [ib], f'{cell}/node_{n}/op_b': ob})
    return arch


def test_micro_edges_go_around_every_box_they_do_not_connect():
    """paper-micro's reduction cell: c_{k-1} feeds node 4's first op two columns on, past the ops
    of node 5 (it used to cut through them and seem to come out of one); and a deep cell where
    inputs skip several columns."""
    deep = {cell: [(0, 'identity', 1, 'sep_conv_3x3'), (2, 'max_pool_3x3', 1, 'avg_pool_3x3'),
                   (3, 'sep_conv_5x5', 0, 'identity'), (4, 'avg_pool_3x3', 1, 'sep_conv_3x3'),
                   (5, 'max_pool_3x3', 2, 'sep_conv_5x5')] for cell in ('normal', 'reduce')}
    records = {'paper-micro': load_architecture('paper-micro'),
               'deep': architecture_record(MicroSpace(num_layers=1, channels=2, num_nodes=5), _micro_arch(deep))}
    for name, record in records.items():
        d = layout(record)
        assert box_crossings(d) == [], name
        assert boxes_overlap(d) == [], name
        # every routed edge still starts at its source's right side and ends at its target's left side
        for e in d.edges:
            src, dst = d.node(e.source), d.node(e.target)
            assert e.points[0] == pytest.approx((src.x + src.w / 2, src.y))
            assert e.points[-1][0] == pytest.approx(dst.x - dst.w / 2)
    # long edges from different sources never run along one corridor: their horizontal parts are apart
    d = layout(records['deep'])
    runs = [(e.points[4][1], e.points[3][0], e.points[6][0], e.source) for e in d.edges if len(e.points) > 4]
    assert len(runs) >= 4
    for i, (y, x0, x1, source) in enumerate(runs):
        for y2, x2, x3, source2 in runs[i + 1:]:
            assert source == source2 or abs(y - y2) >= 6 or x1 <= x2 or x3 <= x0, (source, source2)


def _rnn_checks(d, cell):
    """The drawing has the cell's boxes and edges, and nothing else."""
    num_nodes = len(cell)
    prev = {j: p for j, (_, p) in cell.items() if p is not None}
    loose = [j for j in range(num_nodes) if j not in prev.values()]
    ids = [n.id for n in d.nodes]
    assert sorted(ids) == sorted(['x_t', 'h_t-1', 'avg', 'h_t'] + [f'node_{j}' for j in range(num_nodes)])
    for j, (act, _) in cell.items():
        node = d.node(f'node_{j}')
        assert node.label == f'{j}: {act}' and node.fill == OP_COLORS[act]
    assert sorted(d.edge_pairs('input')) == [('h_t-1', 'node_0'), ('x_t', 'node_0')]
    assert sorted(d.edge_pairs('prev')) == sorted((f'node_{p}', f'node_{j}') for j, p in prev.items())
    assert sorted(d.edge_pairs('loose')) == sorted((f'node_{j}', 'avg') for j in loose)
    assert d.edge_pairs('chain') == [('avg', 'h_t')]
    assert len(d.edges) == 2 + len(prev) + len(loose) + 1
    # top to bottom: inputs, each node below the node it reads, avg below every node, h_t below avg
    for j, p in prev.items():
        assert d.node(f'node_{j}').y > d.node(f'node_{p}').y
    assert d.node('node_0').y > d.node('x_t').y == d.node('h_t-1').y
    assert d.node('avg').y > max(d.node(f'node_{j}').y for j in range(num_nodes)) and d.node('h_t').y > d.node('avg').y
    assert box_crossings(d) == [] and boxes_overlap(d) == []
    assert all(0 <= n.x - n.w / 2 and n.x + n.w / 2 <= d.width and n.y + n.h / 2 <= d.height for n in d.nodes)


def test_paper_rnn_cell_layout_has_the_nodes_activations_previous_nodes_and_loose_ends():
    record = rnn_record()
    d = layout(record)
    assert d.space == 'rnn'
    _rnn_checks(d, PAPER_RNN)
    assert sorted(int(s.split('_')[1]) for s, _ in d.edge_pairs('loose')) == PAPER_RNN_LOOSE
    assert layout(record).texts[0].text == 'ENAS rnn cell, 12 nodes'


@pytest.mark.parametrize('seed', range(6))
def test_random_rnn_cells_are_drawn_whole_without_crossing_a_box(seed):
    import random
    rng = random.Random(seed)
    num_nodes = [1, 2, 16, 5, 12, 16][seed]
    cell = {0: (rng.choice(ACTIVATIONS), None)}
    for j in range(1, num_nodes):    # seed 2: a chain (one leaf, 16 rows)
        cell[j] = (rng.choice(ACTIVATIONS), j - 1 if seed == 2 else rng.randrange(j))
    record = rnn_record(cell)
    record['arch'] = {k: ([v] if k.endswith('/prev') and seed % 2 else v) for k, v in record['arch'].items()}
    _rnn_checks(layout(record), cell)     # odd seeds: previous nodes as one-element lists (an input choice)


# --------------------------------------------------------------------------- renderers

def test_svg_has_one_element_per_node_and_edge_with_its_label():
    d = layout(load_architecture('paper-micro'))
    root = ET.fromstring(render_svg(d))
    groups = {g.get('id'): g for g in root.iter(f'{SVG}g')}
    nodes = [g for g in groups.values() if 'node' in g.get('class', '').split()]
    edges = [g for g in groups.values() if 'edge' in g.get('class', '').split()]
    assert len(nodes) == len(d.nodes) and len(edges) == len(d.edges)
    for n in d.nodes:
        g = groups[f'node-{n.id.replace("/", ".")}']
        assert g.get('data-id') == n.id
        assert g.find(f'{SVG}text').text == n.label
        assert g.find(f'{SVG}rect').get('fill') == n.fill
    assert {(g.get('data-source'), g.get('data-target')) for g in edges} == set(d.edge_pairs())
    assert all(g.find(f'{SVG}path').get('marker-end') for g in edges)
    texts = [t.text for t in root.iter(f'{SVG}text')]
    assert 'normal cell' in texts and any(t.startswith('reduction cell') for t in texts)


def test_rnn_svg_has_the_cells_boxes_and_edges_by_id(tmp_path, rnn_space):
    record = rnn_record(epoch=3, epochs=150, reward=1.234)
    d = draw_architecture(record, tmp_path / 'cell.svg')
    root = ET.parse(tmp_path / 'cell.svg').getroot()
    groups = {g.get('id'): g for g in root.iter(f'{SVG}g')}
    for j, (act, prev) in PAPER_RNN.items():
        assert groups[f'node-node_{j}'].find(f'{SVG}text').text == f'{j}: {act}'
        assert groups[f'node-node_{j}'].find(f'{SVG}rect').get('fill') == OP_COLORS[act]
        if prev is not None:
            assert groups[f'edge-node_{prev}--node_{j}'].get('class') == 'edge prev'
    for j in PAPER_RNN_LOOSE:
        assert groups[f'edge-node_{j}--avg'].get('class') == 'edge loose'
    for node_id in ('x_t', 'h_t-1', 'avg', 'h_t'):
        assert groups[f'node-{node_id}'].get('data-id') == node_id
    assert {'edge-x_t--node_0', 'edge-h_t-1--node_0', 'edge-avg--h_t'} <= set(groups)
    assert len([g for g in groups.values() if 'edge' in g.get('class', '').split()]) == len(d.edges) == 2 + 11 + 6 + 1
    assert root.find(f'{SVG}text').text == 'ENAS rnn cell, 12 nodes - epoch 3/150 reward 1.234'


def test_cli_draws_a_recurrent_cell_file(tmp_path, capsys, rnn_space):
    path = tmp_path / 'paper-rnn.json'
    path.write_text(json.dumps(rnn_record()))
    assert main([str(path), '-o', str(tmp_path / 'cell.png')]) == 0
    d = layout(rnn_record(), 'paper-rnn: ENAS rnn cell, 12 nodes')
    with Image.open(tmp_path / 'cell.png') as im:
        assert im.size == (round(d.width * 1.5), round(d.height * 1.5))
        rgb = im.convert('RGB')
    assert len(d.nodes) == 12 + 4
    for n in d.nodes:     # each box's fill just inside its left edge: the activation's colour
        colour = tuple(int(n.fill[i:i + 2], 16) for i in (1, 3, 5))
        assert rgb.getpixel((round((n.x - n.w / 2 + 4) * 1.5), round(n.y * 1.5))) == colour, n.id
    node = d.node('node_3')
    assert rgb.getpixel((round((node.x - node.w / 2 + 4) * 1.5), round(node.y * 1.5))) == (0xf4, 0xa6, 0xb7)   # relu
    assert capsys.readouterr().err == ''


def test_draw_architecture_writes_svg_and_png_of_the_layout(tmp_path):
    svg = tmp_path / 'arch.svg'
    d = draw_architecture('paper-macro', svg)
    root = ET.parse(svg).getroot()
    labels = {g.get('data-id'): g.find(f'{SVG}text').text for g in root.iter(f'{SVG}g') if g.get('data-id')}
    assert labels == {n.id: n.label for n in d.nodes}
    assert any(t.text.startswith('paper-macro') for t in root.iter(f'{SVG}text'))   # the title names it

    png = tmp_path / 'arch.png'
    d = draw_architecture(load_architecture('paper-macro'), png, scale=2)
    with Image.open(png) as im:
        assert im.format == 'PNG' and im.size == (round(d.width * 2), round(d.height * 2))
        rgb = im.convert('RGB')
        for n in d.nodes[1:]:
            # just inside each layer box's left edge: the op's colour
            colour = tuple(int(n.fill[i:i + 2], 16) for i in (1, 3, 5))
            assert rgb.getpixel((round((n.x - n.w / 2 + 4) * 2), round(n.y * 2))) == colour, n.id


def test_written_files_get_the_users_umask_and_leave_no_temp_file(tmp_path):
    old = os.umask(0o027)
    try:
        draw_architecture('paper-micro', tmp_path / 'a.svg')
    finally:
        os.umask(old)
    assert (tmp_path / 'a.svg').stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ['a.svg']


# --------------------------------------------------------------------------- command line

def _error(capsys, argv):
    status = main(argv)
    out, err = capsys.readouterr()
    return status, err.strip().splitlines()


def test_cli_writes_png_and_svg(tmp_path, capsys):
    assert main(['paper-micro', '-o', str(tmp_path / 'm.svg')]) == 0
    assert main(['paper-micro', '-o', str(tmp_path / 'm.png'), '--scale', '1']) == 0
    d = layout(load_architecture('paper-micro'))
    with Image.open(tmp_path / 'm.png') as im:
        assert im.size == (round(d.width), round(d.height))
    assert ET.parse(tmp_path / 'm.svg').getroot().tag == f'{SVG}svg'


def test_cli_bad_input_is_one_error_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / 'bad.json'
    record = load_architecture('paper-micro')
    record['arch']['normal/node_2/op_a'] = 'conv_9x9'
    bad.write_text(json.dumps(record))
    (tmp_path / 'file').write_text('x')
    (tmp_path / 'dir.png').mkdir()
    cases = {
        'no such file': [str(tmp_path / 'missing.json'), '-o', str(tmp_path / 'a.png')],
        'conv_9x9': [str(bad), '-o', str(tmp_path / 'a.png')],
        "unknown image format '.jpg'": ['paper-micro', '-o', str(tmp_path / 'a.jpg')],
        'no such folder': ['paper-micro', '-o', str(tmp_path / 'file' / 'a.png')],
        'cannot write': ['paper-micro', '-o', str(tmp_path / 'dir.png')],
        '--scale must be in': ['paper-micro', '-o', str(tmp_path / 'a.png'), '--scale', '0'],
        '--scale must be in [0.1, 10], got 0.001': ['paper-micro', '-o', str(tmp_path / 'a.png'), '--scale', '0.001'],
        '--scale must be in [0.1, 10], got nan': ['paper-micro', '-o', str(tmp_path / 'a.png'), '--scale', 'nan'],
    }
    for expected, argv in cases.items():
        status, lines = _error(capsys, argv)
        assert status == 2, expected
        assert len(lines) == 1 and lines[0].startswith('error: ') and expected in lines[0], (expected, lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bad.json', 'dir.png', 'file']   # nothing half-written
    assert list((tmp_path / 'dir.png').iterdir()) == []


def test_module_entry_point_exits_2_on_bad_input(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'nni_enas.draw', str(tmp_path / 'missing.json')],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr


# --------------------------------------------------------------------------- during a search

def _search(run_dir, epochs, ckpt_path=None):
    from pytorch_lightning.loggers import TensorBoardLogger
    torch.manual_seed(0)
    space = MacroSpace(num_layers=3, channels=4)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))
    callbacks = [ArchitectureExport(run_dir / 'exported.json', space=space), SearchDrawings(run_dir)]
    trainer = EnasTrainer(space, nn.CrossEntropyLoss(), None, accuracy, torch.optim.SGD(space.parameters(), lr=0.05),
                          epochs, data, batch_size=8, workers=0, device='cpu', ctrl_steps=1,
                          ctrl_steps_aggregate=2, num_candidates=2, callbacks=callbacks,
                          trainer_kwargs=dict(enable_progress_bar=False, default_root_dir=str(run_dir),
                                              logger=TensorBoardLogger(str(run_dir), name='tensorboard', version='')))
    trainer.fit(ckpt_path=ckpt_path)
    return trainer


def test_search_drawings_per_epoch_gif_probabilities_and_tensorboard_across_a_resume(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run_dir = tmp_path / 'run'
    first = _search(run_dir, 1)
    first.trainer.save_checkpoint(str(tmp_path / 'epoch1.ckpt'))
    assert (run_dir / 'drawings' / 'epoch_001.png').is_file()
    with Image.open(run_dir / 'architecture.gif') as gif:
        assert gif.n_frames == 1
    # resume after epoch 1 and run to 2: the frames, GIF and probabilities continue
    trainer = _search(run_dir, 2, ckpt_path=str(tmp_path / 'epoch1.ckpt'))

    frames = sorted(p.name for p in (run_dir / 'drawings').iterdir())
    assert frames == ['epoch_001.png', 'epoch_002.png']
    record = load_architecture(run_dir / 'exported.json')
    assert record['provenance']['epoch'] == 2
    with Image.open(run_dir / 'drawings' / 'epoch_002.png') as im:
        assert im.size == tuple(round(v) for v in (layout(record).width, layout(record).height))
        last_frame = im.convert('RGB')
    assert last_frame == render_image(layout(record))      # the frame is the epoch's export
    with Image.open(run_dir / 'architecture.gif') as gif:
        assert gif.n_frames == 2

    data = json.loads((run_dir / 'choice_probabilities.json').read_text())
    controller = trainer.controller
    assert [e['epoch'] for e in data['epochs']] == [1, 2]
    assert data['decisions'] == {d.label: {'kind': d.kind, 'values': list(d.values)} for d in controller.decisions}
    now = controller.choice_probabilities()
    assert set(data['epochs'][-1]['probabilities']) == set(now)
    for label, probs in now.items():
        assert data['epochs'][-1]['probabilities'][label] == pytest.approx(probs, abs=1e-5)
    for e in data['epochs']:
        for label, info in data['decisions'].items():
            probs = e['probabilities'][label]
            assert len(probs) == len(info['values'])
            if info['kind'] == 'op':
                assert sum(probs) == pytest.approx(1.0, abs=1e-4)
    with Image.open(run_dir / 'choice_probabilities.png') as im:
        assert im.format == 'PNG' and im.width > 400 and im.height > 100

    events = EventAccumulator(str(run_dir / 'tensorboard'), size_guidance={'images': 0})
    events.Reload()
    assert 'architecture' in events.Tags()['images']
    images = events.Images('architecture')
    assert sorted({i.step for i in images}) == [1, 2]
    assert (images[-1].width, images[-1].height) == last_frame.size


class _FakeController:
    """The controller surface SearchDrawings reads: decisions and choice probabilities (of a recurrent cell)."""

    def __init__(self, num_nodes, probabilities):
        from types import SimpleNamespace
        self.decisions = [SimpleNamespace(label='node_0/act', kind='op', values=list(ACTIVATIONS))]
        for j in range(1, num_nodes):
            self.decisions += [SimpleNamespace(label=f'node_{j}/prev', kind='input', values=list(range(j))),
                               SimpleNamespace(label=f'node_{j}/act', kind='op', values=list(ACTIVATIONS))]
        self.probabilities = probabilities

    def choice_probabilities(self):
        return self.probabilities


def _rnn_probabilities(num_nodes, favourite):
    """Probabilities that make ``favourite`` (node -> (act, prev)) the most likely cell."""
    probs = {}
    for j in range(num_nodes):
        act, prev = favourite[j]
        probs[f'node_{j}/act'] = [0.7 if a == act else 0.1 for a in ACTIVATIONS]
        if j:
            probs[f'node_{j}/prev'] = [1.0] if j == 1 else [0.6 if k == prev else 0.4 / (j - 1) for k in range(j)]
    return probs


def test_search_drawings_of_a_recurrent_search_frames_gif_and_plot(tmp_path, rnn_space):
    """Per-epoch frames of a recurrent cell's exports, the GIF over them, the probability plot with both choices."""
    from types import SimpleNamespace
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    callback = SearchDrawings(run_dir)
    chain = {j: ('relu' if j % 2 else 'tanh', j - 1 if j else None) for j in range(12)}
    exports = [rnn_record(chain, epoch=1, epochs=2, reward=0.5), rnn_record(PAPER_RNN, epoch=2, epochs=2, reward=0.9)]
    module = SimpleNamespace(controller=_FakeController(12, _rnn_probabilities(12, PAPER_RNN)))
    for epoch, record in enumerate(exports, start=1):
        (run_dir / 'exported.json').write_text(json.dumps(record))
        callback.on_train_epoch_end(SimpleNamespace(is_global_zero=True, current_epoch=epoch - 1, loggers=[]), module)
        with Image.open(run_dir / 'drawings' / f'epoch_{epoch:03d}.png') as im:
            assert im.convert('RGB') == render_image(layout(record)), epoch   # the frame is the epoch's export
    callback.on_fit_end(SimpleNamespace(is_global_zero=True, current_epoch=2, loggers=[]), module)
    with Image.open(run_dir / 'architecture.gif') as gif:
        assert gif.n_frames == 2
    data = json.loads((run_dir / 'choice_probabilities.json').read_text())
    assert [e['epoch'] for e in data['epochs']] == [1, 2]
    assert data['decisions']['node_3/prev'] == {'kind': 'input', 'values': [0, 1, 2]}
    assert data['decisions']['node_3/act'] == {'kind': 'op', 'values': list(ACTIVATIONS)}
    with Image.open(run_dir / 'choice_probabilities.png') as im:
        assert im.format == 'PNG' and im.width > 400 and im.height > 6 * (44 + 3 * 13)   # 23 panels, 4 a row
        rgb = im.convert('RGB')
    # the activations' panels are in the activations' colours; the exported cell is the most likely, so no red title
    colours = {c for _, c in rgb.getcolors(1 << 20)}
    assert {tuple(int(OP_COLORS[a][i:i + 2], 16) for i in (1, 3, 5)) for a in ('tanh', 'relu')} <= colours
    assert not any(r > 150 and g < 60 and b < 60 for r, g, b in colours)


def _plot(tmp_path, decisions, probabilities, exported=None):
    from nni_enas.draw.search import plot_choice_probabilities
    data = {'decisions': decisions, 'epochs': [{'epoch': e, 'probabilities': probabilities} for e in (1, 2, 3)]}
    plot_choice_probabilities(data, tmp_path / 'p.png', exported=exported)
    with Image.open(tmp_path / 'p.png') as im:
        return im.convert('RGB')


def test_probability_titles_name_the_most_likely_and_the_exported_choice_apart(tmp_path):
    from nni_enas.draw.probabilities import panel_titles
    op = {'kind': 'op', 'values': ['tanh', 'relu', 'identity', 'sigmoid']}
    assert panel_titles('node_2/act', op, [0.1, 0.6, 0.2, 0.1], 'tanh') == (
        'node_2/act', 'most likely: relu 0.60', 'exported: tanh')
    assert panel_titles('node_2/act', op, [0.1, 0.6, 0.2, 0.1]) == ('node_2/act', 'most likely: relu 0.60')
    inputs = {'kind': 'input', 'values': [0, 1, 2]}
    assert panel_titles('normal/node_4/input_a', inputs, [0.2, 0.3, 0.5], [1])[1:] == ('most likely: 2 0.50',
                                                                                     'exported: 1')
    skip = {'kind': 'skip', 'values': [0, 1, 2, 3]}
    assert panel_titles('layer_3/skip', skip, [0.45, 0.55, 0.9, 0.1], [0, 2])[1:] == ('most likely on: 1,2',
                                                                                   'exported: 0,2')
    assert panel_titles('layer_3/skip', skip, [0.1, 0.1, 0.1, 0.1], [])[1:] == ('most likely on: -', 'exported: -')

    # in the plot: a differing export is written in red and marked black right of its panel
    decisions = {'node_2/act': op}
    probabilities = {'node_2/act': [0.1, 0.6, 0.2, 0.1]}
    red = lambda img: sum(1 for _, (r, g, b) in img.getcolors(1 << 20) if r > 150 and g < 60 and b < 60)  # noqa: E731
    same = _plot(tmp_path, decisions, probabilities, {'node_2/act': 'relu'})
    other = _plot(tmp_path, decisions, probabilities, {'node_2/act': 'tanh'})
    assert red(same) == 0 and red(other) > 0
    assert same.size == other.size
    # the mark: black beside the exported candidate's band only (relu: rows 10%-70% of the panel)
    ys = [y for y in range(other.height) if other.getpixel((16 + 240 + 3, y)) == (0, 0, 0)]
    ys_same = [y for y in range(same.height) if same.getpixel((16 + 240 + 3, y)) == (0, 0, 0)]
    assert ys and ys_same and max(ys) < min(ys_same)      # tanh's band lies above relu's


def test_skip_panels_tell_close_probabilities_apart(tmp_path):
    """0.45 (more likely off) and 0.55 (more likely on) get clearly different colours, not two similar blues;
    and each of a 24-candidate skip's rows is several pixels tall."""
    img = _plot(tmp_path, {'layer_2/skip': {'kind': 'skip', 'values': [0, 1]}}, {'layer_2/skip': [0.45, 0.55]})
    counts = img.getcolors(1 << 20)
    grey = sum(c for c, (r, g, b) in counts if r == g == b and 150 < r < 240)
    blue = sum(c for c, (r, g, b) in counts if b - r > 60)
    assert grey > 240 * 15 and blue > 240 * 15
    many = _plot(tmp_path, {'layer_23/skip': {'kind': 'skip', 'values': list(range(24))}},
                 {'layer_23/skip': [0.3, 0.7] * 12})
    column = [many.getpixel((16 + 120, y)) for y in range(many.height)]
    runs, y = [], 0
    while y < len(column):    # lengths of the runs of one skip colour down the panel's middle column
        k = y
        while k < len(column) and column[k] == column[y]:
            k += 1
        if column[y] not in ((255, 255, 255), (128, 128, 128)):
            runs.append(k - y)
        y = k
    assert len(runs) >= 24 and min(runs[-24:]) >= 5


def _shipped_record(name):
    """A shipped architecture; paper-rnn from TF0's arc here until the recurrent space ships its file."""
    if name == 'paper-rnn' and not (SHIPPED_DIR / 'paper-rnn.json').exists():
        return rnn_record()
    return load_architecture(name)


@pytest.mark.parametrize('name', ['paper-macro', 'paper-micro', 'paper-rnn'])
def test_shipped_drawings_are_current_and_small(name):
    """The README's images: regenerate with `python3 -m nni_enas.draw NAME -o nni_enas/architectures/NAME.png`."""
    path = ROOT / 'nni_enas' / 'architectures' / f'{name}.png'
    d = layout(_shipped_record(name))
    with Image.open(path) as im:
        assert im.size == (round(d.width * 1.5), round(d.height * 1.5)), 'the layout changed: regenerate the image'
    assert path.stat().st_size < 200_000


def test_shipped_paper_rnn_is_the_cell_drawn_here():
    """Once paper-rnn.json ships (with the recurrent space), it is the cell this file draws and tests."""
    if not (SHIPPED_DIR / 'paper-rnn.json').exists():
        pytest.skip('paper-rnn.json ships with the recurrent space')
    assert load_architecture('paper-rnn')['arch'] == rnn_record()['arch']


def test_animation_pads_frames_to_one_size_and_thins_long_runs(tmp_path):
    from nni_enas.draw.search import write_animation
    colours = [(255, 0, 0), (0, 0, 255), (0, 160, 0), (0, 0, 0), (255, 160, 0)]
    frames = []
    for i, colour in enumerate(colours):
        frames.append(tmp_path / f'epoch_{i + 1:03d}.png')
        Image.new('RGB', (40 + 10 * i, 30), colour).save(frames[-1])
    write_animation(frames, tmp_path / 'all.gif', max_width=1000)
    write_animation(frames, tmp_path / 'thin.gif', max_frames=3)
    with Image.open(tmp_path / 'all.gif') as gif:
        assert gif.n_frames == 5 and gif.size == (80, 30)
        seen = []
        for k in range(gif.n_frames):
            gif.seek(k)
            seen.append(gif.convert('RGB').getpixel((5, 5)))
        assert seen == colours
    with Image.open(tmp_path / 'thin.gif') as gif:
        seen = []
        for k in range(gif.n_frames):
            gif.seek(k)
            seen.append(gif.convert('RGB').getpixel((5, 5)))
        assert seen == [colours[0], colours[2], colours[4]]    # first, middle, last
