"""Pictures of a search as it runs: the exported architecture per epoch, and the controller's choices.

:class:`SearchDrawings` is a Lightning callback. After every epoch it draws the epoch's
``exported.json`` (written by the export callback placed before it) into
``drawings/epoch_NNN.png`` of the run folder and into TensorBoard (tag ``architecture``), and
records the controller's choice probabilities in ``choice_probabilities.json``. When the fit ends
it writes ``architecture.gif`` (the export over the epochs) and ``choice_probabilities.png``
(one small panel per decision, epochs left to right, with the exported choice beside the most
likely one: :mod:`~nni_enas.draw.probabilities`). A resumed run continues both: the frames and
the probabilities of the earlier epochs are read back from the run folder. Any space with a
layout draws: macro, micro and the recurrent cell.

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
from nni_enas.draw.layout import layout
from nni_enas.draw.probabilities import append_probabilities, load_probabilities, plot_choice_probabilities
from nni_enas.draw.render import render_image, write_atomic

__all__ = ['SearchDrawings', 'write_animation', 'plot_choice_probabilities', 'load_probabilities',
           'DRAWINGS_DIR', 'ANIMATION_FILE', 'PROBABILITIES_FILE', 'PROBABILITIES_PLOT']

DRAWINGS_DIR = 'drawings'
ANIMATION_FILE = 'architecture.gif'
PROBABILITIES_FILE = 'choice_probabilities.json'
PROBABILITIES_PLOT = 'choice_probabilities.png'


def _frame_name(epoch: int) -> str:
    return f'epoch_{epoch:03d}.png'


def _frame_epoch(path: Path) -> int | None:
    stem = path.stem
    if stem.startswith('epoch_') and stem[6:].isdigit():
        return int(stem[6:])
    return None


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
        self.run_dir.mkdir(parents=True, exist_ok=True)
        decisions = {d.label: {'kind': d.kind, 'values': list(d.values)} for d in controller.decisions}
        append_probabilities(self.run_dir / PROBABILITIES_FILE, decisions, epoch, controller.choice_probabilities())

    def _exported_arch(self) -> dict[str, Any] | None:
        """The last export's choices, read as plain JSON (the frame already validated it), or None."""
        try:
            arch = json.loads(self.export_path.read_text()).get('arch')
        except (OSError, ValueError, AttributeError):
            return None
        return arch if isinstance(arch, dict) else None

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
            plot_choice_probabilities(data, self.run_dir / PROBABILITIES_PLOT, exported=self._exported_arch())


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
