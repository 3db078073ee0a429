"""The recurrent cell as a drawing, top to bottom as carpedm20's ENAS-pytorch draws it.

``x_t`` and ``h_{t-1}`` feed node 0; below it one box per node (``3: relu``: the node and its
activation, coloured by the activation) with an arrow from the previous node it chose
(``node_j/prev``); the loose ends (the nodes no later node reads) run down into ``avg``, which
gives ``h_t``. Read from the record's ``arch`` alone (labels ``node_0/act``, ``node_j/prev``,
``node_j/act``), so that no space class is needed to draw a cell.

Every node reads exactly one earlier node, so the cell is a tree rooted at node 0 whose leaves are
the loose ends. Each node sits one row below the node it reads, and the leaves get columns of
their own, left to right in depth-first order, with every other node centred over its children:
then nothing stands below a leaf, and its line down to ``avg`` is straight and crosses no box.
"""

from __future__ import annotations

from typing import Any

from nni_enas.draw.drawing import (ACTIVATIONS, BOX_H, KIND_FILL, MARGIN, OP_COLORS, Drawing, Edge, Node, Text,
                                   box_width, legend, v_curve)

__all__ = ['rnn_layout', 'cell_tree']

ROW = BOX_H + 30      # vertical pitch of the rows
COLUMN_GAP = 22.0     # between the boxes of two neighbouring leaves


def _index(value: Any) -> int:
    """A previous-node choice as an int (a one-element list, as an input choice exports it, too)."""
    return value[0] if isinstance(value, list) else value


def cell_tree(arch: dict[str, Any]) -> tuple[list[str], dict[int, int], list[int]]:
    """The cell of ``arch``: the activation of every node, the node each node j >= 1 reads, and the loose ends."""
    num_nodes = sum(1 for label in arch if label.startswith('node_') and label.endswith('/act'))
    acts = [arch[f'node_{j}/act'] for j in range(num_nodes)]
    prev = {j: _index(arch[f'node_{j}/prev']) for j in range(1, num_nodes)}
    read = set(prev.values())
    return acts, prev, [j for j in range(num_nodes) if j not in read]


def _columns(num_nodes: int, prev: dict[int, int]) -> tuple[dict[int, float], dict[int, int]]:
    """Column (in leaf widths) and row of every node: leaves in depth-first order, parents centred over
    their children."""
    children = {j: [k for k in range(1, num_nodes) if prev[k] == j] for j in range(num_nodes)}
    column: dict[int, float] = {}
    row = {0: 0}
    for j in range(1, num_nodes):
        row[j] = row[prev[j]] + 1
    stack, order = [0], []
    while stack:     # depth first, children in index order
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(children[j]))
    leaves = [j for j in order if not children[j]]
    column.update({j: float(k) for k, j in enumerate(leaves)})
    for j in reversed(order):
        if children[j]:
            column[j] = (column[children[j][0]] + column[children[j][-1]]) / 2
    return column, row


def rnn_layout(arch: dict[str, Any], title: str) -> Drawing:
    """The recurrent cell of ``arch``: inputs on top, one row per depth, the loose ends' average and ``h_t`` below."""
    acts, prev, loose = cell_tree(arch)
    num_nodes = len(acts)
    column, row = _columns(num_nodes, prev)
    labels = [f'{j}: {act}' for j, act in enumerate(acts)]
    node_w = box_width(labels + ['h_{t-1}'])
    in_w = box_width(['h_{t-1}'])
    pitch = node_w + COLUMN_GAP
    # x before the shift that puts the leftmost box at the margin (x_t may stand left of node 0)
    xs = {j: column[j] * pitch for j in range(num_nodes)}
    inputs = {'x_t': xs[0] - in_w / 2 - 10, 'h_t-1': xs[0] + in_w / 2 + 10}
    shift = MARGIN + max(node_w / 2 - min(xs.values()), in_w / 2 - inputs['x_t'])
    top = MARGIN + 40 + BOX_H / 2
    y = {j: top + (row[j] + 1) * ROW for j in range(num_nodes)}
    y_avg = top + (max(row.values()) + 2) * ROW
    d = Drawing('rnn', 0.0, 0.0)
    d.texts.append(Text(MARGIN, MARGIN + 10, title, size=14, bold=True))
    for node_id, label, kind in (('x_t', 'x_t', 'input'), ('h_t-1', 'h_{t-1}', 'state')):
        d.nodes.append(Node(node_id, label, kind, inputs[node_id] + shift, top, in_w, BOX_H, KIND_FILL[kind]))
    for j in range(num_nodes):
        d.nodes.append(Node(f'node_{j}', labels[j], 'node', xs[j] + shift, y[j], node_w, BOX_H,
                            OP_COLORS.get(acts[j], '#cccccc')))
    low, high = min(xs[j] for j in loose) + shift, max(xs[j] for j in loose) + shift
    d.nodes.append(Node('avg', 'avg', 'output', (low + high) / 2, y_avg, high - low + node_w, BOX_H,
                        KIND_FILL['output']))
    d.nodes.append(Node('h_t', 'h_t', 'state', (low + high) / 2, y_avg + ROW, in_w, BOX_H, KIND_FILL['state']))
    _add_edges(d, prev, loose)
    d.width = max(n.x + n.w / 2 for n in d.nodes) + MARGIN
    y_end = legend(d, ACTIVATIONS, y_avg + ROW + BOX_H + 18, notes=(
        'n: act = node n and its activation, below the node it reads (node 0 reads x_t and h_{t-1});',
        'h_t = the average of the loose ends (the nodes no node reads)'))
    d.height = y_end + MARGIN
    return d


def _add_edges(d: Drawing, prev: dict[int, int], loose: list[int]) -> None:
    """Inputs into node 0, every node from the node it reads, the loose ends down into avg, avg into h_t."""
    def bottom(n: Node, dx: float = 0.0):
        return (n.x + dx, n.y + n.h / 2)

    def top(n: Node, dx: float = 0.0):
        return (n.x + dx, n.y - n.h / 2)

    node0 = d.node('node_0')
    for node_id, dx in (('x_t', -8.0), ('h_t-1', 8.0)):
        d.edges.append(Edge(node_id, 'node_0', 'input', v_curve(bottom(d.node(node_id)), top(node0, dx)), curved=True))
    for j, p in prev.items():
        d.edges.append(Edge(f'node_{p}', f'node_{j}', 'prev',
                            v_curve(bottom(d.node(f'node_{p}')), top(d.node(f'node_{j}'))), curved=True))
    avg = d.node('avg')
    for j in loose:
        leaf = d.node(f'node_{j}')
        d.edges.append(Edge(leaf.id, 'avg', 'loose', (bottom(leaf), (leaf.x, avg.y - avg.h / 2))))
    h_t = d.node('h_t')
    d.edges.append(Edge('avg', 'h_t', 'chain', (bottom(avg), top(h_t))))
