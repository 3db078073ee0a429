"""The layout of a drawing (plain data) architecture: the macro network as a chain, the micro cells as DAGs.

    python3 -m nni_enas.draw exported.json -o arch.png     # or arch.svg
    python3 -m nni_enas.draw paper-micro -o paper-micro.svg

Two steps, kept apart so that each can be tested alone:

* :func:`layout` turns an architecture record (``exported.json``, see :mod:`~nni_enas.architecture`)
  into a :class:`Drawing`: plain data, nodes with labels and positions, edges with their paths.
  Macro: ``stem -> layer_0 -> ... -> layer_{L-1}``, each layer's box labelled with its op, and
  one arc per skip connection (``layer_i/skip`` indexes ``[stem, layer_0, ...]``). Micro: the
  normal and the reduction cell side by side; each cell has its inputs ``c_{k-2}`` and
  ``c_{k-1}``, one box per op (``op_a``, ``op_b`` of every node) fed by the op's chosen input,
  the node summing its two ops, and ``concat``, fed by the loose ends (the states no node reads,
  unused cell inputs included, as :class:`~nni_enas.micro.Cell` computes its output).
* :func:`render_svg` and :func:`render_png` paint a drawing. Both are written here with the
  standard library and Pillow (which comes with torchvision): no graphviz binary, no plotting
  library. In the SVG every node and edge is one ``<g>`` with an ``id`` (``node-layer_3``,
  ``edge-stem--layer_2``; ``/`` becomes ``.``) and ``data-`` attributes with the real names.

:func:`draw_architecture` does both for a record, a file or a shipped name (``retrain.py`` calls
it for the network it trains); :mod:`~nni_enas.drawings` draws every epoch of a search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from nni_enas.spaces.macro import reduction_layers
from nni_enas.spaces.ops import MACRO_OPS, MICRO_OPS


# One colour per op family (shades of one hue per family), read from the op table so that a new
# op gets a colour without touching the drawing.
_FAMILY_SHADES = {'conv': ('#9ecae1', '#4f9bd0'), 'sep_conv': ('#a1d99b', '#5db96a'),
                  'avg_pool': ('#fdd0a2',), 'max_pool': ('#fd8d3c',), 'identity': ('#d9d9d9',)}


def _op_colors() -> dict[str, str]:
    colors = {}
    for name in dict.fromkeys(MACRO_OPS + MICRO_OPS):
        family = name.rsplit('_', 1)[0] if name[-1].isdigit() else name
        shades = _FAMILY_SHADES.get(family, ('#cccccc',))
        used = sum(1 for n in colors if n.startswith(family + '_') or n == family)
        colors[name] = shades[min(used, len(shades) - 1)]
    return colors


OP_COLORS = _op_colors()
_KIND_FILL = {'stem': '#ffffff', 'input': '#ffffff', 'sum': '#fff7bc', 'output': '#e0e0e0'}
_EDGE_STYLE = {   # colour, width
    'chain': ('#303030', 1.6), 'skip': ('#6a8fc0', 1.0), 'input': ('#707070', 1.1),
    'op': ('#707070', 1.1), 'loose': ('#b04040', 1.1),
}

FONT_SIZE = 12.0
CHAR_WIDTH = 0.62 * FONT_SIZE    # layout's estimate of a character's width (monospace in the SVG)
BOX_H = 24.0
MARGIN = 16.0


# --------------------------------------------------------------------------------------------
# the drawing as data
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    """A box: ``id`` is unique in the drawing, ``label`` is the text in it, (x, y) its centre.

    ``kind`` is ``stem``, ``layer`` (macro), ``input``, ``op``, ``sum`` or ``output`` (micro);
    ``note`` is drawn left of the box (e.g. ``layer 3``).
    """
    id: str
    label: str
    kind: str
    x: float
    y: float
    w: float
    h: float
    fill: str = '#ffffff'
    note: str = ''


@dataclass(frozen=True)
class Edge:
    """An arrow from node ``source`` to node ``target``.

    ``points``, in drawing units: a polyline, or with ``curved`` the four points of a cubic Bezier.
    ``kind`` is ``chain`` or ``skip`` (macro), ``input`` (state -> op), ``op`` (op -> node) or
    ``loose`` (loose end -> concat) (micro).
    """
    source: str
    target: str
    kind: str
    points: tuple[tuple[float, float], ...]
    label: str = ''
    curved: bool = False


@dataclass(frozen=True)
class Text:
    """Free text (title, cell titles, legend, notes); ``anchor`` is start, middle or end."""
    x: float
    y: float
    text: str
    size: float = FONT_SIZE
    anchor: str = 'start'
    bold: bool = False


@dataclass
class Drawing:
    """What to draw, in drawing units (1 unit = 1 pixel at scale 1)."""
    space: str
    width: float
    height: float
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)
    swatches: list[tuple[float, float, float, float, str]] = field(default_factory=list)  # x, y, w, h, fill

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)

    def edge_pairs(self, kind: str | None = None) -> list[tuple[str, str]]:
        """``(source, target)`` of every edge (of one kind)."""
        return [(e.source, e.target) for e in self.edges if kind is None or e.kind == kind]


def _box_width(labels: Sequence[str]) -> float:
    return max(len(s) for s in labels) * CHAR_WIDTH + 16


def _curve(a: tuple[float, float], b: tuple[float, float]) -> tuple[tuple[float, float], ...]:
    """A left-to-right S curve from ``a`` to ``b`` (micro edges)."""
    dx = max(20.0, (b[0] - a[0]) * 0.45)
    return (a, (a[0] + dx, a[1]), (b[0] - dx, b[1]), b)


def _legend(drawing: Drawing, ops: Sequence[str], y: float, notes: Sequence[str] = ()) -> float:
    """Op colour swatches (and note lines) from ``y``; returns the y below them."""
    x = MARGIN
    for name in ops:
        w = len(name) * CHAR_WIDTH + 26
        if x + w > drawing.width - MARGIN and x > MARGIN:
            x, y = MARGIN, y + 20
        drawing.swatches.append((x, y - 6, 12, 12, OP_COLORS.get(name, '#cccccc')))
        drawing.texts.append(Text(x + 16, y + 4, name, size=11))
        x += w
    y += 20
    for line in notes:
        drawing.texts.append(Text(MARGIN, y + 4, line, size=11))
        y += 16
    return y


# --------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------

def macro_layout(arch: dict[str, Any], title: str) -> Drawing:
    """Macro network top to bottom: stem, then one box per layer; skips arc on the right."""
    num_layers = sum(1 for label in arch if label.endswith('/op'))
    ops = [arch[f'layer_{i}/op'] for i in range(num_layers)]
    names = ['stem'] + [f'layer_{i}' for i in range(num_layers)]
    row = BOX_H + 12
    note_w = len(f'layer {num_layers - 1}') * CHAR_WIDTH + 10
    box_w = _box_width(ops + ['stem'])
    top = MARGIN + 30
    cx = MARGIN + note_w + box_w / 2
    right = cx + box_w / 2
    skips = [(j, i) for i in range(1, num_layers) for j in arch.get(f'layer_{i}/skip', [])]
    # Bulge of an arc grows with its span, so that nested skips do not overlap.
    bulge = lambda span: 14.0 + 11.0 * span  # noqa: E731
    max_bulge = max((bulge(i + 1 - j) for j, i in skips), default=0.0)
    width = max(right + 0.75 * max_bulge + MARGIN, 520.0)
    d = Drawing('macro', width, 0.0)
    d.texts.append(Text(MARGIN, MARGIN + 10, title, size=14, bold=True))
    ys = [top + k * row + BOX_H / 2 for k in range(num_layers + 1)]
    d.nodes.append(Node('stem', 'stem', 'stem', cx, ys[0], box_w, BOX_H, _KIND_FILL['stem']))
    for i, op in enumerate(ops):
        d.nodes.append(Node(names[i + 1], op, 'layer', cx, ys[i + 1], box_w, BOX_H,
                            OP_COLORS.get(op, '#cccccc'), note=f'layer {i}'))
    reduce_after = set(reduction_layers(num_layers))
    for k in range(num_layers):
        label = 'reduce' if k - 1 in reduce_after else ''
        d.edges.append(Edge(names[k], names[k + 1], 'chain',
                            ((cx, ys[k] + BOX_H / 2), (cx, ys[k + 1] - BOX_H / 2)), label))
    for j, i in skips:
        # skip index j is [stem, layer_0, ...][j]; the arc leaves j's box and enters layer i's box
        b = bulge(i + 1 - j)
        a, z = (right, ys[j] + 4), (right, ys[i + 1] - 4)
        d.edges.append(Edge(names[j], names[i + 1], 'skip', (a, (a[0] + b, a[1]), (z[0] + b, z[1]), z), curved=True))
    y = _legend(d, MACRO_OPS, ys[-1] + BOX_H + 18, notes=(
        'arcs on the right: skip connections, summed into the layer they enter;',
        'reduce: the resolution halves (every earlier output gets a factorized reduction)'))
    d.height = y + MARGIN
    return d


def _cell_layout(d: Drawing, arch: dict[str, Any], cell: str, x0: float, y0: float) -> tuple[float, float]:
    """Add one micro cell at (x0, y0); returns its (width, height)."""
    nodes = sorted({int(label.split('/')[1].split('_')[1]) for label in arch if label.startswith(cell + '/')})
    inputs = {n: (arch[f'{cell}/node_{n}/input_a'][0], arch[f'{cell}/node_{n}/input_b'][0]) for n in nodes}
    ops = {n: (arch[f'{cell}/node_{n}/op_a'], arch[f'{cell}/node_{n}/op_b']) for n in nodes}
    # The same rule as micro.Cell._loose_ends: every state no node reads, cell inputs included.
    used = {j for pair in inputs.values() for j in pair}
    loose = [j for j in range(len(nodes) + 2) if j not in used]

    rank = {0: 0, 1: 0}
    for n in nodes:
        rank[n] = 1 + max(rank[j] for j in inputs[n])
    depth = max(rank.values())
    state_id = {0: f'{cell}/c_k-2', 1: f'{cell}/c_k-1', **{n: f'{cell}/node_{n}' for n in nodes}}

    in_w, op_w = _box_width(['c_{k-2}']), _box_width(list(MICRO_OPS))
    sum_w, out_w, gap, row = _box_width([f'node {nodes[-1]}']), _box_width(['concat']), 34.0, BOX_H + 8
    # Columns: inputs | ops of rank 1 | nodes of rank 1 | ops of rank 2 | ... | concat
    xs, x = [], x0
    for w in [in_w] + [op_w, sum_w] * depth + [out_w]:
        xs.append(x + w / 2)
        x += w + gap
    width = x - gap - x0
    per_rank = {r: [n for n in nodes if rank[n] == r] for r in range(1, depth + 1)}
    height = max(2 * len(v) for v in per_rank.values()) * row
    top = y0 + 22

    d.texts.append(Text(x0, y0 + 8, 'normal cell' if cell == 'normal' else
                        'reduction cell (ops on c_{k-2} and c_{k-1} have stride 2)', size=12, bold=True))
    centre = {}
    for j, label in ((0, 'c_{k-2}'), (1, 'c_{k-1}')):
        centre[j] = (xs[0], top + height * (1 + 2 * j) / 4)
        d.nodes.append(Node(state_id[j], label, 'input', *centre[j], in_w, BOX_H, _KIND_FILL['input']))
    for r, members in per_rank.items():
        offset = top + (height - 2 * len(members) * row) / 2
        for k, n in enumerate(members):
            ys = [offset + (2 * k + s) * row + row / 2 for s in (0, 1)]
            centre[n] = (xs[2 * r], sum(ys) / 2)
            d.nodes.append(Node(state_id[n], f'node {n}', 'sum', *centre[n], sum_w, BOX_H, _KIND_FILL['sum']))
            for s, slot in enumerate('ab'):
                op_id = f'{cell}/node_{n}/op_{slot}'
                op = ops[n][s]
                d.nodes.append(Node(op_id, op, 'op', xs[2 * r - 1], ys[s], op_w, BOX_H, OP_COLORS.get(op, '#cccccc')))
                j = inputs[n][s]
                src_w = in_w if j < 2 else sum_w
                d.edges.append(Edge(state_id[j], op_id, 'input', _curve(
                    (centre[j][0] + src_w / 2, centre[j][1]), (xs[2 * r - 1] - op_w / 2, ys[s])), curved=True))
                d.edges.append(Edge(op_id, state_id[n], 'op', _curve(
                    (xs[2 * r - 1] + op_w / 2, ys[s]), (centre[n][0] - sum_w / 2, centre[n][1])), curved=True))
    lane = _add_concat(d, cell, loose, centre, state_id, xs[-1], out_w, widths=(in_w, sum_w, gap), lane=top + height + 6)
    return width, max(height, lane - top) + 22


def _add_concat(d: Drawing, cell: str, loose: list[int], centre: dict, state_id: dict, x: float, out_w: float, *,
                widths: tuple[float, float, float], lane: float) -> float:
    """The cell's ``concat`` at column ``x`` and its loose-end edges; returns the next free lane below the cell.

    concat is a bar as tall as its inputs' span: each loose end runs straight across to it (one
    converging fan would pass through the boxes of later nodes); one whose way is blocked by a
    box goes down to its own lane below the cell instead.
    """
    in_w, sum_w, gap = widths
    boxes = [n for n in d.nodes if n.id.startswith(cell + '/')]
    routes = {}
    for j in loose:
        sx, sy = centre[j][0] + (in_w if j < 2 else sum_w) / 2, centre[j][1]
        blocked = any(n.x - n.w / 2 > sx and abs(n.y - sy) < (n.h + BOX_H) / 2 - 2 for n in boxes)
        if blocked:
            routes[j] = [(sx, sy), (sx + gap / 2, sy), (sx + gap / 2, lane), (x - out_w / 2, lane)]
            lane += 8
        else:
            routes[j] = [(sx, sy), (x - out_w / 2, sy)]
    low, high = min(r[-1][1] for r in routes.values()), max(r[-1][1] for r in routes.values())
    d.nodes.append(Node(f'{cell}/output', 'concat', 'output', x, (low + high) / 2, out_w,
                        high - low + BOX_H, _KIND_FILL['output']))
    for j in loose:
        d.edges.append(Edge(state_id[j], f'{cell}/output', 'loose', tuple(routes[j])))
    return lane


def micro_layout(arch: dict[str, Any], title: str) -> Drawing:
    """The normal cell above the reduction cell, each flowing left to right."""
    d = Drawing('micro', 0.0, 0.0)
    d.texts.append(Text(MARGIN, MARGIN + 10, title, size=14, bold=True))
    y, width = MARGIN + 34, 0.0
    for cell in ('normal', 'reduce'):
        w, h = _cell_layout(d, arch, cell, MARGIN, y)
        y += h + 30
        width = max(width, w)
    d.width = width + 2 * MARGIN
    y = _legend(d, MICRO_OPS, y, notes=(
        'node n = op_a(input_a) + op_b(input_b); the cell outputs the concatenation',
        'of its loose ends (the states no node reads)'))
    d.height = y + MARGIN
    return d


def default_title(record: dict[str, Any], name: str | None = None) -> str:
    """``name: <space> ...`` with the epoch and reward of a search's export when the record has them."""
    prov = record.get('provenance') or {}
    args = record.get('space_args') or {}
    parts = [f'{name}:' if name else '', f'ENAS {record["space"]}']
    if record['space'] == 'macro':
        parts.append(f'network, {sum(1 for k in record["arch"] if k.endswith("/op"))} layers')
    else:
        n = args.get('num_layers')
        parts.append('cells' + (f', {n} normal cell{"s" if n != 1 else ""}' if isinstance(n, int) else ''))
    if isinstance(prov.get('epoch'), int):
        parts.append(f'- epoch {prov["epoch"]}' + (f'/{prov["epochs"]}' if isinstance(prov.get('epochs'), int) else ''))
    if isinstance(prov.get('reward'), (int, float)):
        parts.append(f'reward {prov["reward"]:.3f}')
    return ' '.join(p for p in parts if p)


def layout(record: dict[str, Any], title: str | None = None) -> Drawing:
    """The :class:`Drawing` of a validated architecture record (see :func:`load_architecture`)."""
    title = title if title is not None else default_title(record)
    if record['space'] == 'micro':
        drawing = micro_layout(record['arch'], title)
    else:
        drawing = macro_layout(record['arch'], title)
    # wide enough for every left-aligned text (the title, legend notes)
    drawing.width = max([drawing.width] + [t.x + len(t.text) * CHAR_WIDTH * t.size / FONT_SIZE + MARGIN
                                           for t in drawing.texts if t.anchor == 'start'])
    return drawing
