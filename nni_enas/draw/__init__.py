"""Pictures of architectures and of a search.

Read in this order: :mod:`~nni_enas.draw.drawing` is a drawing as plain data (boxes, edges, text),
:mod:`~nni_enas.draw.layout` turns an architecture record into one (macro, micro; the recurrent
cell in :mod:`~nni_enas.draw.recurrent`), :mod:`~nni_enas.draw.render` paints it as SVG or PNG and
writes it, :mod:`~nni_enas.draw.search` draws every epoch of a search (frames, the GIF) and
:mod:`~nni_enas.draw.probabilities` the controller's choice probabilities, and
:mod:`~nni_enas.draw.cli` is ``python3 -m nni_enas.draw``::

    python3 -m nni_enas.draw exported.json -o arch.png     # or arch.svg
    python3 -m nni_enas.draw paper-micro -o paper-micro.svg
    python3 -m nni_enas.draw paper-rnn -o cell.png
"""

from nni_enas.draw.cli import build_parser, main
from nni_enas.draw.drawing import OP_COLORS, Drawing, Edge, Node, Text
from nni_enas.draw.layout import default_title, layout
from nni_enas.draw.render import FORMATS, draw_architecture, image_format, render_image, render_png, render_svg, write_atomic

__all__ = ['Node', 'Edge', 'Text', 'Drawing', 'layout', 'default_title', 'render_svg', 'render_png',
           'render_image', 'draw_architecture', 'write_atomic', 'image_format', 'FORMATS', 'OP_COLORS', 'main',
           'build_parser']
