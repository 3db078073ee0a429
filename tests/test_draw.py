"""Drawings of architectures (nni_enas.draw) and of a search (nni_enas.draw.search.SearchDrawings).

The layouts are checked against the architectures (every op, input, skip and loose end), the SVG
and PNG files against the layouts, and the callback in a tiny 2-epoch search (resumed after its
first epoch) against the files and the TensorBoard events it must leave.

Runtime: about 20 s on the 2-core dev machine (the tiny search is most of it).
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


from nni_enas import EnasTrainer, MacroSpace, MicroSpace  # noqa: E402
from nni_enas.architecture import architecture_record, load_architecture  # noqa: E402
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
        '--scale': ['paper-micro', '-o', str(tmp_path / 'a.png'), '--scale', '0'],
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


@pytest.mark.parametrize('name', ['paper-macro', 'paper-micro'])
def test_shipped_drawings_are_current_and_small(name):
    """The README's images: regenerate with `python3 -m nni_enas.draw NAME -o nni_enas/architectures/NAME.png`."""
    path = ROOT / 'nni_enas' / 'architectures' / f'{name}.png'
    d = layout(load_architecture(name))
    with Image.open(path) as im:
        assert im.size == (round(d.width * 1.5), round(d.height * 1.5)), 'the layout changed: regenerate the image'
    assert path.stat().st_size < 200_000


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
