"""``python3 -m nni_enas.draw``: draw an exported or shipped architecture to PNG or SVG."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from nni_enas.architecture import SHIPPED_DIR, ArchitectureError
from nni_enas.draw.render import draw_architecture, image_format

def build_parser() -> argparse.ArgumentParser:
    from nni_enas.run.cli import ArgumentParser
    shipped = ', '.join(sorted(p.stem for p in SHIPPED_DIR.glob('*.json')))
    p = ArgumentParser(
        prog='python3 -m nni_enas.draw',
        description='Draw an exported architecture: the macro network as a chain of layers with their ops\n'
                    'and skip connections, the micro normal and reduction cells as graphs, or the\n'
                    'recurrent cell as a tree of nodes from x_t and h_{t-1} to the average h_t.\n\n'
                    '    python3 -m nni_enas.draw runs/search-macro-.../exported.json -o arch.svg\n'
                    '    python3 -m nni_enas.draw paper-micro -o paper-micro.png',
        epilog='Exit status: 0 written, 2 bad input (nothing is written then).')
    p.add_argument('architecture', metavar='ARCH',
                   help=f'an exported architecture (exported.json of a search) or a shipped one by name: {shipped}')
    p.add_argument('-o', '--output', metavar='IMAGE', default=None,
                   help='the image to write, .png or .svg by its suffix; its folder must exist '
                        '(default: ARCH\'s name with .png, in the working folder)')
    p.add_argument('--title', default=None,
                   help='text above the drawing (default: the name, the space, and the epoch and reward of a '
                        'search\'s export)')
    p.add_argument('--scale', type=float, default=1.5,
                   help='PNG only: pixels per drawing unit, from 0.1 to 10; 1 gives about 12-pixel text '
                        '(default: %(default)s)')
    return p


def _main(argv: Sequence[str] | None) -> int:
    from nni_enas.run.cli import fail, say
    args = build_parser().parse_args(argv)
    if not 0.1 <= args.scale <= 10:    # NaN too; under 0.1 the text would be under 2 pixels (or 0: no font)
        fail(f'--scale must be in [0.1, 10], got {args.scale}')
    output = Path(args.output if args.output is not None else Path(args.architecture).stem + '.png')
    try:
        image_format(output)
    except ValueError as e:
        fail(str(e))
    if not output.parent.is_dir():
        fail(f'{output}: no such folder {str(output.parent)!r}')
    try:
        draw_architecture(args.architecture, output, title=args.title, scale=args.scale)
    except OSError as e:
        fail(f'cannot write {output}: {e.strerror or e}')
    say(f'wrote {output}')
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m nni_enas.draw``; returns the exit status (0 written, 2 bad input)."""
    from nni_enas.run.cli import run_main
    return run_main(_main, argv, user_errors=(ArchitectureError,))

