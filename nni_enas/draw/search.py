"""Pictures of a search as it runs: the exported architecture per epoch, and the controller's choices.

:class:`SearchDrawings` is a Lightning callback. After every epoch it draws the epoch's
``exported.json`` (written by the export callback placed before it) into
``drawings/epoch_NNN.png`` of the run folder and into TensorBoard (tag ``architecture``), and
records the controller's choice probabilities in ``choice_probabilities.json``. When the fit ends
it writes ``architecture.gif`` (the export over the epochs) and ``choice_probabilities.png``
(one small panel per decision, epochs left to right). A resumed run continues both: the frames
and the probabilities of the earlier epochs are read back from the run folder.

Nothing here imports Pillow or numpy before the first epoch ends, so a search that imports this
module pays nothing at start-up.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn

from nni_enas.architecture import ArchitectureError, load_architecture
from nni_enas.draw.layout import OP_COLORS, layout
from nni_enas.draw.render import render_image, write_atomic

__all__ = ['SearchDrawings', 'write_animation', 'plot_choice_probabilities', 'load_probabilities',
           'DRAWINGS_DIR', 'ANIMATION_FILE', 'PROBABILITIES_FILE', 'PROBABILITIES_PLOT']

DRAWINGS_DIR = 'drawings'
ANIMATION_FILE = 'architecture.gif'
PROBABILITIES_FILE = 'choice_probabilities.json'
PROBABILITIES_PLOT = 'choice_probabilities.png'
_FORMAT = 'nni-enas-probabilities/1'

# Input decisions: one colour per candidate index (cycled).
INPUT_COLORS = ('#1b9e77', '#d95f02', '#7570b3', '#e7298a', '#66a61e', '#e6ab02', '#a6761d', '#666666')
_SKIP_ON = (8, 48, 107)   # heatmap colour of probability 1 (0 is white)


def _frame_name(epoch: int) -> str:
    return f'epoch_{epoch:03d}.png'


def _frame_epoch(path: Path) -> int | None:
    stem = path.stem
    if stem.startswith('epoch_') and stem[6:].isdigit():
        return int(stem[6:])
    return None


def load_probabilities(path: str | os.PathLike) -> dict[str, Any]:
    """The recorded choice probabilities (``{"decisions": {label: {kind, values}}, "epochs": [...]}``);
    an empty record when the file is missing or unreadable (a new run)."""
    try:
        data = json.loads(Path(path).read_text())
        if data.get('format') == _FORMAT and isinstance(data.get('epochs'), list):
            return data
    except (OSError, ValueError, AttributeError):
        pass
    return {'format': _FORMAT, 'decisions': {}, 'epochs': []}


class SearchDrawings(pl.Callback):
    """Draw each epoch's exported architecture and record the controller's choice probabilities.

    Put it after the callback that writes the export (``search.py``'s ``SearchMonitor``):
    Lightning calls callbacks in list order.

    Parameters
    ----------
    run_dir
        The run folder: ``drawings/``, ``choice_probabilities.json``, ``architecture.gif`` and
        ``choice_probabilities.png`` are written there.
    export_path
        The ``exported.json`` rewritten after every epoch (default: ``run_dir/exported.json``).
    scale
        Pixels per drawing unit of the frames (1: about 12-pixel text).
    frame_ms
        How long the GIF shows each epoch (the last one four times as long).
    tag
        TensorBoard image tag.

    Examples
    --------
    >>> callbacks = [monitor, SearchDrawings(run_dir), cli.RngStateCallback(), ...]
    """

    def __init__(self, run_dir: str | os.PathLike, export_path: str | os.PathLike | None = None, *,
                 scale: float = 1.0, frame_ms: int = 500, tag: str = 'architecture'):
        self.run_dir = Path(run_dir)
        self.export_path = Path(export_path) if export_path is not None else self.run_dir / 'exported.json'
        self.scale = scale
        self.frame_ms = frame_ms
        self.tag = tag
        self._warned = False

    @property
    def drawings_dir(self) -> Path:
        return self.run_dir / DRAWINGS_DIR

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch + 1
        if hasattr(pl_module, 'finish_epoch'):
            pl_module.finish_epoch()    # the epoch's controller phase, if no callback before ran it yet
        self._record_probabilities(pl_module, epoch)
        try:
            record = load_architecture(self.export_path)
        except ArchitectureError as e:
            if not self._warned:   # a drawing is a convenience: never stop a search for it
                rank_zero_warn(f'SearchDrawings: not drawing the architecture ({e})')
                self._warned = True
            return
        image = render_image(layout(record), self.scale)
        self.drawings_dir.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        # not optimize=True: 5% smaller files for 5x the encoding time (paper macro: 164 vs 30 ms on
        # the dev CPU), CPU time that every epoch of a GPU search would wait for
        image.save(buf, format='PNG')
        write_atomic(self.drawings_dir / _frame_name(epoch), buf.getvalue())
        for logger in trainer.loggers:
            experiment = getattr(logger, 'experiment', None)
            if hasattr(experiment, 'add_image'):   # TensorBoard's SummaryWriter
                import numpy as np
                experiment.add_image(self.tag, np.asarray(image), global_step=epoch, dataformats='HWC')
                experiment.flush()

    def _record_probabilities(self, pl_module: pl.LightningModule, epoch: int) -> None:
        controller = getattr(pl_module, 'controller', None)
        if controller is None:
            return
        path = self.run_dir / PROBABILITIES_FILE
        data = load_probabilities(path)
        data['decisions'] = {d.label: {'kind': d.kind, 'values': list(d.values)} for d in controller.decisions}
        # A resumed run repeats the epoch that was in progress: its old entry (and any later) go.
        data['epochs'] = [e for e in data['epochs'] if e.get('epoch', 0) < epoch]
        probabilities = {label: [round(float(p), 5) for p in probs]
                         for label, probs in controller.choice_probabilities().items()}
        data['epochs'].append({'epoch': epoch, 'probabilities': probabilities})
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # one line per epoch: rewritten every epoch, so kept compact (630 micro epochs: ~1.5 MB)
        lines = ',\n'.join(json.dumps(e, separators=(',', ':')) for e in data['epochs'])
        head = json.dumps({'format': data['format'], 'decisions': data['decisions']}, separators=(',', ':'))
        write_atomic(path, (head[:-1] + ',"epochs":[\n' + lines + '\n]}\n').encode())

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        last = trainer.current_epoch
        frames = sorted((p for p in self.drawings_dir.glob('epoch_*.png')
                         if (_frame_epoch(p) or 0) and _frame_epoch(p) <= last), key=_frame_epoch)
        if frames:
            write_animation(frames, self.run_dir / ANIMATION_FILE, frame_ms=self.frame_ms)
        data = load_probabilities(self.run_dir / PROBABILITIES_FILE)
        data['epochs'] = [e for e in data['epochs'] if e.get('epoch', 0) <= last]
        if data['epochs']:
            plot_choice_probabilities(data, self.run_dir / PROBABILITIES_PLOT)


def write_animation(frames: Sequence[str | os.PathLike], path: str | os.PathLike, *, frame_ms: int = 500,
                    max_width: int = 900, max_frames: int = 100) -> None:
    """A looping GIF of the PNG ``frames`` (padded to one size on white, at most ``max_width`` wide).

    Longer runs are thinned evenly to ``max_frames`` (the first and the last frame always kept):
    an animation of 630 epochs would last minutes, and every frame is held in memory while the
    GIF is encoded.
    """
    from PIL import Image
    frames = list(frames)
    if len(frames) > max_frames:
        step = (len(frames) - 1) / (max_frames - 1)
        frames = [frames[round(k * step)] for k in range(max_frames)]
    sizes = []
    for frame in frames:
        with Image.open(frame) as im:
            sizes.append(im.size)
    width, height = max(w for w, _ in sizes), max(h for _, h in sizes)
    factor = min(1.0, max_width / width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    pages = []
    for frame in frames:
        page = Image.new('RGB', (width, height), 'white')
        with Image.open(frame) as im:
            page.paste(im.convert('RGB'), (0, 0))
        if factor < 1:
            page = page.resize(size, Image.Resampling.LANCZOS)
        pages.append(page.convert('P', palette=Image.Palette.ADAPTIVE, colors=64))
    durations = [frame_ms] * (len(pages) - 1) + [frame_ms * 4]
    buf = io.BytesIO()
    pages[0].save(buf, format='GIF', save_all=True, append_images=pages[1:], duration=durations, loop=0)
    write_atomic(path, buf.getvalue())


def _rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))


def _panel(kind: str, values: list, probs, width: int, height: int):
    """One decision's probabilities over epochs (``probs``: epochs x candidates) as an image."""
    import numpy as np
    from PIL import Image
    probs = np.clip(np.asarray(probs, dtype=float), 0.0, 1.0)
    if kind == 'skip':
        # one row per candidate (top: stem / index 0), darker = the skip is more likely on
        on = np.asarray(_SKIP_ON, dtype=float)
        pixels = 255.0 - probs.T[:, :, None] * (255.0 - on)
    else:
        # stacked shares: candidate 0 on top; each column is one epoch
        colors = np.array([_rgb(OP_COLORS.get(v, '#cccccc')) if kind == 'op' else _rgb(INPUT_COLORS[i % len(INPUT_COLORS)])
                           for i, v in enumerate(values)], dtype=float)
        cum = np.cumsum(probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12), axis=1)
        rows = (np.arange(height) + 0.5) / height
        index = np.minimum((rows[:, None, None] > cum[None, :, :]).sum(axis=2), len(values) - 1)
        pixels = colors[index]
    image = Image.fromarray(pixels.round().astype(np.uint8), 'RGB')
    return image.resize((width, height), Image.Resampling.NEAREST)


def _summary(kind: str, values: list, last: list[float]) -> str:
    if kind == 'skip':
        on = [str(v) for v, p in zip(values, last) if p > 0.5]
        return 'on: ' + (','.join(on) if on else '-')
    best = max(range(len(values)), key=lambda i: last[i])
    return f'{values[best]} {last[best]:.2f}'


def plot_choice_probabilities(data: dict[str, Any], path: str | os.PathLike, *, columns: int = 4,
                              panel_width: int = 240, panel_height: int = 44) -> None:
    """One small panel per decision, epochs left to right, written as PNG to ``path``.

    Op and input decisions: the share of each candidate, stacked (op colours as in the
    architecture drawings; inputs coloured by index). Skip decisions: one row per candidate
    (stem, layer_0, ...), darker where the skip is more likely on. Each panel's title ends with
    the last epoch's choice (the most likely candidate and its probability; the likely-on skips).
    """
    from PIL import Image, ImageDraw

    from nni_enas.draw.render import _font
    labels = list(data['decisions'])
    epochs = [e['epoch'] for e in data['epochs']]
    rows = -(-len(labels) // columns)
    pad, title_h = 16, 15
    cell_w, cell_h = panel_width + pad, panel_height + title_h + 10
    kinds = {data['decisions'][label]['kind'] for label in labels}
    header = 74 if 'op' in kinds or 'input' in kinds else 40
    width = pad + columns * cell_w
    height = header + rows * cell_h + pad
    img = Image.new('RGB', (width, height), 'white')
    draw = ImageDraw.Draw(img)
    small, bold = _font(10), _font(13, bold=True)
    draw.text((pad, pad), f'Controller choice probabilities per decision, epochs {epochs[0]}-{epochs[-1]} '
                          f'left to right', fill='black', font=bold, anchor='lt')
    _legend(draw, data, labels, kinds, pad, small)
    for k, label in enumerate(labels):
        info = data['decisions'][label]
        values = info['values']
        probs = [e['probabilities'].get(label, [0.0] * len(values)) for e in data['epochs']]
        px = pad + (k % columns) * cell_w
        py = header + (k // columns) * cell_h
        text = f'{label} {_summary(info["kind"], values, probs[-1])}'
        while draw.textlength(text, font=small) > panel_width and len(text) > 4:
            text = text[:-2]
        draw.text((px, py + 10), text, fill='black', font=small, anchor='ls')
        img.paste(_panel(info['kind'], values, probs, panel_width, panel_height), (px, py + title_h))
        draw.rectangle([px - 1, py + title_h - 1, px + panel_width, py + title_h + panel_height], outline=(128, 128, 128))
    buf = io.BytesIO()
    img.save(buf, format='PNG', optimize=True)
    write_atomic(path, buf.getvalue())


def _legend(draw, data: dict[str, Any], labels: list[str], kinds: set[str], pad: int, small) -> None:
    """The colour keys under the plot's title: op colours, input colours, how to read a skip panel."""
    x, y = pad, pad + 22
    op_values = [v for label in labels if data['decisions'][label]['kind'] == 'op'
                 for v in data['decisions'][label]['values']]
    for name in dict.fromkeys(op_values):
        draw.rectangle([x, y, x + 10, y + 10], fill=OP_COLORS.get(name, '#cccccc'), outline=(64, 64, 64))
        draw.text((x + 14, y + 5), name, fill='black', font=small, anchor='lm')
        x += 14 + round(draw.textlength(name, font=small)) + 14
    if 'input' in kinds:
        x, y = pad, y + 16
        most = max(len(data['decisions'][label]['values']) for label in labels
                   if data['decisions'][label]['kind'] == 'input')
        for i in range(min(most, len(INPUT_COLORS))):
            draw.rectangle([x, y, x + 10, y + 10], fill=INPUT_COLORS[i], outline=(64, 64, 64))
            draw.text((x + 14, y + 5), f'input {i}', fill='black', font=small, anchor='lm')
            x += 74
        draw.text((x + 6, y + 5), '(micro: 0 = c_{k-2}, 1 = c_{k-1}, j = node j)', fill='black', font=small, anchor='lm')
    if 'skip' in kinds:
        y += 16
        draw.text((pad, y + 5), 'skip panels: one row per candidate (stem, layer_0, ... top to bottom), '
                                'darker = more likely on', fill='black', font=small, anchor='lm')
