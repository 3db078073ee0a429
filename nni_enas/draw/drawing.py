"""A drawing as plain data (boxes, edges, text, in drawing units), the colours, and the shared pieces of every layout.

:mod:`~nni_enas.draw.layout` (macro, micro) and :mod:`~nni_enas.draw.recurrent` (the recurrent
cell) fill a :class:`Drawing`; :mod:`~nni_enas.draw.render` paints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from nni_enas.spaces.ops import MACRO_OPS, MICRO_OPS, RNN_ACTIVATIONS

# The recurrent cell's activations, from the one op table.
ACTIVATIONS = RNN_ACTIVATIONS

# One colour per op family (shades of one hue per family), read from the op tables so that a new
# op gets a colour without touching the drawing. Activations as carpedm20 colours them (tanh
# yellow, ReLU pink, sigmoid yellow-green), in pastel; identity is grey everywhere.
_FAMILY_SHADES = {'conv': ('#9ecae1', '#4f9bd0'), 'sep_conv': ('#a1d99b', '#5db96a'),
                  'avg_pool': ('#fdd0a2',), 'max_pool': ('#fd8d3c',), 'identity': ('#d9d9d9',),
                  'tanh': ('#ffe680',), 'relu': ('#f4a6b7',), 'sigmoid': ('#b8e186',)}


def _op_colors() -> dict[str, str]:
    colors = {}
    for name in dict.fromkeys(MACRO_OPS + MICRO_OPS + ACTIVATIONS):
        family = name.rsplit('_', 1)[0] if name[-1].isdigit() else name
        shades = _FAMILY_SHADES.get(family, ('#cccccc',))
        used = sum(1 for n in colors if n.startswith(family + '_') or n == family)
        colors[name] = shades[min(used, len(shades) - 1)]
    return colors


OP_COLORS = _op_colors()
KIND_FILL = {'stem': '#ffffff', 'input': '#ffffff', 'sum': '#fff7bc', 'output': '#e0e0e0', 'state': '#cfe6f7'}
EDGE_STYLE = {   # colour, width
    'chain': ('#303030', 1.6), 'skip': ('#6a8fc0', 1.0), 'input': ('#707070', 1.1),
    'op': ('#707070', 1.1), 'loose': ('#b04040', 1.1), 'prev': ('#404040', 1.3),
}

FONT_SIZE = 12.0
CHAR_WIDTH = 0.62 * FONT_SIZE    # layout's estimate of a character's width (monospace in the SVG)
BOX_H = 24.0
MARGIN = 16.0

Point = tuple[float, float]


@dataclass(frozen=True)
class Node:
    """A box: ``id`` is unique in the drawing, ``label`` is the text in it, (x, y) its centre.

    ``kind`` is ``stem``, ``layer`` (macro), ``input``, ``op``, ``sum`` or ``output`` (micro),
    ``input``, ``state``, ``node`` or ``output`` (recurrent); ``note`` is drawn left of the box
    (e.g. ``layer 3``).
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

    ``points``, in drawing units: a polyline, or with ``curved`` a chain of cubic Beziers
    (``3n + 1`` points: start, then two control points and an end per piece). ``kind`` is ``chain``
    or ``skip`` (macro), ``input`` (state -> op), ``op`` (op -> node) or ``loose`` (loose end ->
    concat) (micro), ``input``, ``prev`` (node -> node), ``loose`` (-> avg) or ``chain`` (recurrent).
    """
    source: str
    target: str
    kind: str
    points: tuple[Point, ...]
    label: str = ''
    curved: bool = False

    def polyline(self, steps: int = 24) -> list[Point]:
        """The path as a polyline (each Bezier piece in ``steps`` straight pieces)."""
        if not self.curved:
            return list(self.points)
        out = [self.points[0]]
        for k in range(0, len(self.points) - 1, 3):
            (x0, y0), (x1, y1), (x2, y2), (x3, y3) = self.points[k:k + 4]
            for i in range(1, steps + 1):
                t = i / steps
                a, b, c, e = (1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t ** 3
                out.append((a * x0 + b * x1 + c * x2 + e * x3, a * y0 + b * y1 + c * y2 + e * y3))
        return out


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


# --------------------------------------------------------------------------------------------
# pieces shared by the layouts
# --------------------------------------------------------------------------------------------

def box_width(labels: Sequence[str]) -> float:
    return max(len(s) for s in labels) * CHAR_WIDTH + 16


def s_curve(a: Point, b: Point) -> tuple[Point, ...]:
    """A left-to-right S curve from ``a`` to ``b`` (one Bezier piece, inside the x range of a and b)."""
    dx = min(max(20.0, (b[0] - a[0]) * 0.45), abs(b[0] - a[0]))
    return (a, (a[0] + dx, a[1]), (b[0] - dx, b[1]), b)


def v_curve(a: Point, b: Point) -> tuple[Point, ...]:
    """A top-to-bottom S curve from ``a`` to ``b`` (one Bezier piece, inside the y range of a and b)."""
    dy = (b[1] - a[1]) * 0.5
    return (a, (a[0], a[1] + dy), (b[0], b[1] - dy), b)


def straight(a: Point, b: Point) -> tuple[Point, ...]:
    """A straight line as a Bezier piece (to chain it with curves in one path)."""
    return (a, (a[0] + (b[0] - a[0]) / 3, a[1] + (b[1] - a[1]) / 3),
            (a[0] + 2 * (b[0] - a[0]) / 3, a[1] + 2 * (b[1] - a[1]) / 3), b)


def legend(drawing: Drawing, ops: Sequence[str], y: float, notes: Sequence[str] = ()) -> float:
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
