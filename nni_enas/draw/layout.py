"""The layout of an architecture as a drawing (plain data): the macro network as a chain, the micro cells as DAGs.

    python3 -m nni_enas.draw exported.json -o arch.png     # or arch.svg
    python3 -m nni_enas.draw paper-micro -o paper-micro.svg

:func:`layout` turns an architecture record (``exported.json``, see :mod:`~nni_enas.architecture`)
into a :class:`~nni_enas.draw.drawing.Drawing`: plain data, nodes with labels and positions, edges
with their paths, so that it can be checked without painting it. Macro:
``stem -> layer_0 -> ... -> layer_{L-1}``, each layer's box labelled with its op, and one arc per
skip connection (``layer_i/skip`` indexes ``[stem, layer_0, ...]``). Micro: the normal cell above
the reduction cell; each cell has its inputs ``c_{k-2}`` and ``c_{k-1}``, one box per op (``op_a``,
``op_b`` of every node) fed by the op's chosen input, the node summing its two ops, and ``concat``,
fed by the loose ends (the states no node reads, unused cell inputs included, as
:class:`~nni_enas.spaces.micro.Cell` computes its output); no edge passes through a box it does not
connect. The recurrent cell is :mod:`~nni_enas.draw.recurrent`'s.

:mod:`~nni_enas.draw.render` paints a drawing (``draw_architecture`` lays out and paints a record,
a file or a shipped name); :mod:`~nni_enas.draw.search` draws every epoch of a search.
"""

from __future__ import annotations

from typing import Any

from nni_enas.draw.drawing import (BOX_H, CHAR_WIDTH, FONT_SIZE, KIND_FILL, MARGIN, OP_COLORS, Drawing, Edge, Node,
                                   Point, Text, box_width, legend, s_curve, straight)
from nni_enas.draw.recurrent import rnn_layout
from nni_enas.spaces.macro import reduction_layers
from nni_enas.spaces.ops import MACRO_OPS, MICRO_OPS

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
    box_w = box_width(ops + ['stem'])
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
    d.nodes.append(Node('stem', 'stem', 'stem', cx, ys[0], box_w, BOX_H, KIND_FILL['stem']))
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
    y = legend(d, MACRO_OPS, ys[-1] + BOX_H + 18, notes=(
        'arcs on the right: skip connections, summed into the layer they enter;',
        'reduce: the resolution halves (every earlier output gets a factorized reduction)'))
    d.height = y + MARGIN
    return d


def _cell_graph(arch: dict[str, Any], cell: str):
    """One micro cell's nodes, their (input_a, input_b), (op_a, op_b), loose ends and rank (columns from the inputs)."""
    nodes = sorted({int(label.split('/')[1].split('_')[1]) for label in arch if label.startswith(cell + '/')})
    inputs = {n: (arch[f'{cell}/node_{n}/input_a'][0], arch[f'{cell}/node_{n}/input_b'][0]) for n in nodes}
    ops = {n: (arch[f'{cell}/node_{n}/op_a'], arch[f'{cell}/node_{n}/op_b']) for n in nodes}
    # The same rule as micro.Cell._loose_ends: every state no node reads, cell inputs included.
    used = {j for pair in inputs.values() for j in pair}
    loose = [j for j in range(len(nodes) + 2) if j not in used]
    rank = {0: 0, 1: 0}
    for n in nodes:
        rank[n] = 1 + max(rank[j] for j in inputs[n])
    return nodes, inputs, ops, loose, rank


def _cell_layout(d: Drawing, arch: dict[str, Any], cell: str, x0: float, y0: float) -> tuple[float, float]:
    """Add one micro cell at (x0, y0); returns its (width, height)."""
    nodes, inputs, ops, loose, rank = _cell_graph(arch, cell)
    depth = max(rank.values())
    state_id = {0: f'{cell}/c_k-2', 1: f'{cell}/c_k-1', **{n: f'{cell}/node_{n}' for n in nodes}}

    in_w, op_w = box_width(['c_{k-2}']), box_width(list(MICRO_OPS))
    sum_w, out_w, gap, row = box_width([f'node {nodes[-1]}']), box_width(['concat']), 34.0, BOX_H + 8
    pair = 2 * row + 10     # a node's two ops, and a wider gap to the next pair: room for routed edges
    # Columns: inputs | ops of rank 1 | nodes of rank 1 | ops of rank 2 | ... | concat
    widths = [in_w] + [op_w, sum_w] * depth + [out_w]
    xs, x = [], x0
    for w in widths:
        xs.append(x + w / 2)
        x += w + gap
    width = x - gap - x0
    per_rank = {r: [n for n in nodes if rank[n] == r] for r in range(1, depth + 1)}
    height = max(len(v) for v in per_rank.values()) * pair - (pair - 2 * row)
    top = y0 + 22

    d.texts.append(Text(x0, y0 + 8, 'normal cell' if cell == 'normal' else
                        'reduction cell (ops on c_{k-2} and c_{k-1} have stride 2)', size=12, bold=True))
    centre, column = {}, {}
    for j, label in ((0, 'c_{k-2}'), (1, 'c_{k-1}')):
        centre[j], column[state_id[j]] = (xs[0], top + height * (1 + 2 * j) / 4), 0
        d.nodes.append(Node(state_id[j], label, 'input', *centre[j], in_w, BOX_H, KIND_FILL['input']))
    for r, members in per_rank.items():
        offset = top + (height - len(members) * pair + (pair - 2 * row)) / 2
        for k, n in enumerate(members):
            ys = [offset + k * pair + s * row + row / 2 for s in (0, 1)]
            centre[n], column[state_id[n]] = (xs[2 * r], sum(ys) / 2), 2 * r
            d.nodes.append(Node(state_id[n], f'node {n}', 'sum', *centre[n], sum_w, BOX_H, KIND_FILL['sum']))
            for s, slot in enumerate('ab'):
                op_id = f'{cell}/node_{n}/op_{slot}'
                column[op_id] = 2 * r - 1
                d.nodes.append(Node(op_id, ops[n][s], 'op', xs[2 * r - 1], ys[s], op_w, BOX_H,
                                    OP_COLORS.get(ops[n][s], '#cccccc')))
    router = _Router([n for n in d.nodes if n.id in column], column, xs, widths)
    for n in nodes:
        for s, slot in enumerate('ab'):
            op_id, src = f'{cell}/node_{n}/op_{slot}', d.node(state_id[inputs[n][s]])
            op = d.node(op_id)
            d.edges.append(Edge(src.id, op_id, 'input', router.route(src, op), curved=True))
            d.edges.append(Edge(op_id, state_id[n], 'op', router.route(op, d.node(state_id[n])), curved=True))
    lane = _add_concat(d, cell, loose, centre, state_id, xs[-1], out_w, widths=(in_w, sum_w, gap),
                       lane=max(top + height, router.lowest) + 6)
    return width, max(height, lane - top) + 22


class _Router:
    """Left-to-right edges between the columns of a micro cell that go around every box between them.

    An edge between neighbouring columns is one S curve in the gap between them. A longer one
    (an input read from an earlier rank) would cut through the boxes of the columns it passes,
    and seem to come out of one of them; it runs instead along a horizontal corridor clear of
    every box in those columns (between two boxes, one lane above them all, or lanes below), entered
    and left by S curves in the first and the last gap. Corridors of different sources never
    overlap.
    """
    CLEARANCE = 3.0    # between a corridor and a box
    LANE = 6.0         # between two corridors

    def __init__(self, boxes: list[Node], column: dict[str, int], xs: list[float], widths: list[float]):
        self.boxes, self.column, self.xs, self.widths = boxes, column, xs, widths
        self.taken: list[tuple[float, float, float, str]] = []     # y, x from, x to, source

    @property
    def lowest(self) -> float:
        """The lowest corridor's y (-inf: none)."""
        return max((y for y, *_ in self.taken), default=float('-inf'))

    def route(self, src: Node, dst: Node) -> tuple[Point, ...]:
        c0, c1 = self.column[src.id], self.column[dst.id]
        a, b = (src.x + src.w / 2, src.y), (dst.x - dst.w / 2, dst.y)
        if c1 == c0 + 1:
            return s_curve(a, b)
        left = self.xs[c0 + 1] - self.widths[c0 + 1] / 2
        right = self.xs[c1 - 1] + self.widths[c1 - 1] / 2
        y = self._corridor([n for n in self.boxes if c0 < self.column[n.id] < c1], a[1], b[1], (left, right, src.id))
        return s_curve(a, (left, y)) + straight((left, y), (right, y))[1:] + s_curve((right, y), b)[1:]

    def _corridor(self, boxes: list[Node], ya: float, yb: float, span: tuple[float, float, str]) -> float:
        """The y of a horizontal line clear of ``boxes``, near ``ya`` and ``yb``, clear of other sources' corridors."""
        spans = sorted((n.y - n.h / 2 - self.CLEARANCE, n.y + n.h / 2 + self.CLEARANCE) for n in boxes)
        merged = [list(spans[0])]
        for lo, hi in spans[1:]:
            if lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        candidates = [(hi + lo) / 2 for (_, hi), (lo, _) in zip(merged, merged[1:])] + [merged[0][0] - 4]
        candidates += [merged[-1][1] + 4 + self.LANE * k for k in range(len(self.taken) + 1)]
        left, right, source = span
        free = [y for y in candidates if not any(abs(y - ty) < self.LANE and tx0 < right and left < tx1 and ts != source
                                                 for ty, tx0, tx1, ts in self.taken)]
        y = min(free, key=lambda y: abs(y - ya) + abs(y - yb))
        self.taken.append((y, left, right, source))
        return y


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
                        high - low + BOX_H, KIND_FILL['output']))
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
    y = legend(d, MICRO_OPS, y, notes=(
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
    elif record['space'] == 'rnn':
        parts.append(f'cell, {sum(1 for k in record["arch"] if k.endswith("/act"))} nodes')
    else:
        n = args.get('num_layers')
        parts.append('cells' + (f', {n} normal cell{"s" if n != 1 else ""}' if isinstance(n, int) else ''))
    if isinstance(prov.get('epoch'), int):
        parts.append(f'- epoch {prov["epoch"]}' + (f'/{prov["epochs"]}' if isinstance(prov.get('epochs'), int) else ''))
    if isinstance(prov.get('reward'), (int, float)):
        parts.append(f'reward {prov["reward"]:.3f}')
    return ' '.join(p for p in parts if p)


def layout(record: dict[str, Any], title: str | None = None) -> Drawing:
    """The :class:`Drawing` of a validated architecture record (see :func:`load_architecture`), by its space."""
    title = title if title is not None else default_title(record)
    draw = {'macro': macro_layout, 'micro': micro_layout, 'rnn': rnn_layout}[record['space']]
    drawing = draw(record['arch'], title)
    # wide enough for every left-aligned text (the title, legend notes)
    drawing.width = max([drawing.width] + [t.x + len(t.text) * CHAR_WIDTH * t.size / FONT_SIZE + MARGIN
                                           for t in drawing.texts if t.anchor == 'start'])
    return drawing
