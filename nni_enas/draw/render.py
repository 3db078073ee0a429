"""Painting a drawing: SVG and PNG (standard library and Pillow only), and drawing an architecture to a file.

:func:`render_svg` and :func:`render_png` paint a :class:`~nni_enas.draw.drawing.Drawing`;
:func:`draw_architecture` lays out and paints a record, a file or a shipped name (``retrain.py`` calls it
for the network it trains).

Both painters are written with the standard library and Pillow (which comes with torchvision): no
graphviz binary, no plotting library. In the SVG every node and edge is one ``<g>`` with an ``id``
(``node-layer_3``, ``edge-stem--layer_2``, ``edge-node_2--node_3``; ``/`` becomes ``.``) and
``data-`` attributes with the real names.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from nni_enas.architecture import check_record, load_architecture
from nni_enas.draw.drawing import BOX_H, EDGE_STYLE, FONT_SIZE, Drawing
from nni_enas.draw.layout import default_title, layout
from nni_enas.files import write_bytes_atomic

__all__ = ['render_svg', 'render_png', 'render_image', 'draw_architecture', 'write_atomic', 'image_format',
           'FORMATS']

FORMATS = ('.png', '.svg')

# --------------------------------------------------------------------------------------------
# renderers
# --------------------------------------------------------------------------------------------

def _xml_id(prefix: str, *names: str) -> str:
    return prefix + '--'.join(n.replace('/', '.') for n in names)


def _svg_path(points, curved: bool) -> str:
    (x0, y0), *rest = points
    if curved:
        return f'M{x0:.1f},{y0:.1f} C' + ' '.join(f'{x:.1f},{y:.1f}' for x, y in rest)
    return f'M{x0:.1f},{y0:.1f} ' + ' '.join(f'L{x:.1f},{y:.1f}' for x, y in rest)


def render_svg(drawing: Drawing) -> str:
    """The drawing as an SVG document; one ``<g id=...>`` per node and per edge, text kept as text."""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{drawing.width:.0f}" height="{drawing.height:.0f}" '
           f'viewBox="0 0 {drawing.width:.0f} {drawing.height:.0f}" '
           f'font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="{FONT_SIZE:g}">',
           '<defs>']
    for kind, (color, _) in EDGE_STYLE.items():
        out.append(f'<marker id="arrow-{kind}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
                   f'markerHeight="7" orient="auto"><path d="M0,1 L10,5 L0,9 z" fill="{color}"/></marker>')
    out.append('</defs>')
    out.append('<rect width="100%" height="100%" fill="#ffffff"/>')
    for e in drawing.edges:
        color, width = EDGE_STYLE[e.kind]
        opacity = ' stroke-opacity="0.7"' if e.kind == 'skip' else ''
        out.append(f'<g id="{_xml_id("edge-", e.source, e.target)}" class="edge {e.kind}" '
                   f'data-source={quoteattr(e.source)} data-target={quoteattr(e.target)}>'
                   f'<path d="{_svg_path(e.points, e.curved)}" fill="none" stroke="{color}" stroke-width="{width}"{opacity} '
                   f'marker-end="url(#arrow-{e.kind})"/>')
        if e.label:
            (x0, y0), (x1, y1) = e.points[0], e.points[-1]
            out.append(f'<text x="{x0 - 8:.1f}" y="{(y0 + y1) / 2 + 4:.1f}" text-anchor="end" font-size="10" '
                       f'fill="#a03030">{escape(e.label)}</text>')
        out.append('</g>')
    for n in drawing.nodes:
        rx = BOX_H / 2 if n.kind == 'sum' else 4
        out.append(f'<g id="{_xml_id("node-", n.id)}" class="node {n.kind}" data-id={quoteattr(n.id)}>'
                   f'<rect x="{n.x - n.w / 2:.1f}" y="{n.y - n.h / 2:.1f}" width="{n.w:.1f}" height="{n.h:.1f}" '
                   f'rx="{rx:g}" fill="{n.fill}" stroke="#404040"/>'
                   f'<text x="{n.x:.1f}" y="{n.y + 4:.1f}" text-anchor="middle">{escape(n.label)}</text>')
        if n.note:
            out.append(f'<text x="{n.x - n.w / 2 - 8:.1f}" y="{n.y + 4:.1f}" text-anchor="end" font-size="11" '
                       f'fill="#606060">{escape(n.note)}</text>')
        out.append('</g>')
    for x, y, w, h, fill in drawing.swatches:
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:g}" height="{h:g}" fill="{fill}" stroke="#404040"/>')
    for t in drawing.texts:
        weight = ' font-weight="bold"' if t.bold else ''
        out.append(f'<text x="{t.x:.1f}" y="{t.y:.1f}" text-anchor="{t.anchor}" font-size="{t.size:g}"{weight}>'
                   f'{escape(t.text)}</text>')
    out.append('</svg>')
    return '\n'.join(out) + '\n'


def _font(size: float, bold: bool = False):
    from PIL import ImageFont
    size = max(1.0, size)    # FreeType refuses a size of 0 (a tiny scale)
    try:   # the SVG's font where the system has it, so that both look alike
        return ImageFont.truetype('DejaVuSansMono-Bold.ttf' if bold else 'DejaVuSansMono.ttf', round(size))
    except OSError:
        pass
    try:
        return ImageFont.load_default(size=round(size))   # Pillow's own scalable font (needs FreeType)
    except (TypeError, ImportError, OSError, AttributeError):
        return ImageFont.load_default()


def _blend(color: str, alpha: float) -> tuple[int, int, int]:
    """``color`` at ``alpha`` over white (Pillow's RGB drawing has no transparency)."""
    rgb = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    return tuple(round(255 + (c - 255) * alpha) for c in rgb)


def render_image(drawing: Drawing, scale: float = 1.0):
    """The drawing as a Pillow RGB image, ``scale`` pixels per drawing unit."""
    from PIL import Image, ImageDraw
    s = scale
    img = Image.new('RGB', (max(1, round(drawing.width * s)), max(1, round(drawing.height * s))), 'white')
    draw = ImageDraw.Draw(img)
    fonts: dict[tuple[float, bool], Any] = {}

    def font(size: float, bold: bool = False):
        if (size, bold) not in fonts:
            fonts[size, bold] = _font(size * s, bold)
        return fonts[size, bold]

    for e in drawing.edges:
        color, width = EDGE_STYLE[e.kind]
        rgb = _blend(color, 0.7 if e.kind == 'skip' else 1.0)
        pts = [(x * s, y * s) for x, y in e.polyline()]
        # stop the line at the arrowhead's base, then draw the head
        (xa, ya), (xb, yb) = pts[-2], pts[-1]
        length = math.hypot(xb - xa, yb - ya) or 1.0
        ux, uy = (xb - xa) / length, (yb - ya) / length
        head, half = 7 * s, 3.2 * s
        base = (xb - ux * head, yb - uy * head)
        draw.line(pts[:-1] + [base], fill=rgb, width=max(1, round(width * s)), joint='curve')
        draw.polygon([(xb, yb), (base[0] - uy * half, base[1] + ux * half), (base[0] + uy * half, base[1] - ux * half)],
                     fill=rgb)
        if e.label:
            (x0, y0), (x1, y1) = e.points[0], e.points[-1]
            draw.text(((x0 - 8) * s, (y0 + y1) / 2 * s), e.label, fill=(160, 48, 48), font=font(10), anchor='rm')
    for n in drawing.nodes:
        box = [(n.x - n.w / 2) * s, (n.y - n.h / 2) * s, (n.x + n.w / 2) * s, (n.y + n.h / 2) * s]
        radius = (BOX_H / 2 if n.kind == 'sum' else 4) * s
        draw.rounded_rectangle(box, radius=radius, fill=n.fill, outline=(64, 64, 64), width=max(1, round(s)))
        draw.text((n.x * s, n.y * s), n.label, fill='black', font=font(FONT_SIZE), anchor='mm')
        if n.note:
            draw.text(((n.x - n.w / 2 - 8) * s, n.y * s), n.note, fill=(96, 96, 96), font=font(11), anchor='rm')
    for x, y, w, h, fill in drawing.swatches:
        draw.rectangle([x * s, y * s, (x + w) * s, (y + h) * s], fill=fill, outline=(64, 64, 64))
    for t in drawing.texts:
        anchor = {'start': 'ls', 'middle': 'ms', 'end': 'rs'}[t.anchor]
        draw.text((t.x * s, t.y * s), t.text, fill='black', font=font(t.size, t.bold), anchor=anchor)
    return img


def render_png(drawing: Drawing, scale: float = 1.0) -> bytes:
    """The drawing as PNG bytes."""
    buf = io.BytesIO()
    render_image(drawing, scale).save(buf, format='PNG', optimize=True)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------

def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` whole or not at all, with the user's umask; the folder must exist."""
    write_bytes_atomic(path, data, make_parents=False)


def _resolve(architecture: dict[str, Any] | str | os.PathLike) -> tuple[dict[str, Any], str | None]:
    """A validated record and its name (a file's stem, a shipped name), from any of the three forms."""
    if isinstance(architecture, dict):
        check_record(architecture)
        return architecture, None
    record = load_architecture(architecture)
    return record, Path(architecture).stem if str(architecture).endswith('.json') else Path(architecture).name


def image_format(path: str | os.PathLike) -> str:
    """``.png`` or ``.svg`` from the file name; :class:`ValueError` for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f'{path}: unknown image format {suffix or "(no suffix)"!r} (use {" or ".join(FORMATS)})')
    return suffix


def draw_architecture(architecture: dict[str, Any] | str | os.PathLike, path: str | os.PathLike, *,
                      title: str | None = None, scale: float = 1.0) -> Drawing:
    """Draw an architecture into ``path`` (PNG or SVG, from the suffix), atomically.

    Parameters
    ----------
    architecture
        An architecture record (a dict, as in ``exported.json``), the path of such a file, or a
        shipped name (``paper-macro``, ``paper-micro``).
    path
        The image to write: ``.png`` or ``.svg``. Its folder must exist.
    title
        Text above the drawing (default: the name, space, and the epoch and reward of a search's
        export).
    scale
        PNG pixels per drawing unit (1: about 12-pixel text).

    Returns
    -------
    The :class:`Drawing` that was rendered.

    Raises
    ------
    ArchitectureError
        The architecture cannot be read or does not fit its space.
    ValueError
        ``path`` is neither ``.png`` nor ``.svg``.
    OSError
        ``path`` cannot be written.

    Examples
    --------
    >>> draw_architecture('paper-micro', 'paper-micro.svg')
    >>> draw_architecture(load_architecture('runs/search-macro-.../exported.json'), 'arch.png')
    """
    fmt = image_format(path)
    record, name = _resolve(architecture)
    drawing = layout(record, title if title is not None else default_title(record, name))
    data = render_svg(drawing).encode() if fmt == '.svg' else render_png(drawing, scale)
    write_atomic(path, data)
    return drawing
