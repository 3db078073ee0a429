"""The controller's choice probabilities over a search: the record (``choice_probabilities.json``) and its plot.

The plot has one small panel per decision, epochs left to right. Op decisions (and the recurrent
cell's activations): the share of each candidate, stacked, in the op colours of the architecture
drawings. Input decisions (a micro op's input, a recurrent node's previous node): the same,
coloured by candidate index. Skip decisions: one row per candidate, blue where the skip is more
likely on than off (darker: surer), grey where it is more likely off, so that 0.45 and 0.55 differ
at a glance. Each panel's title names the controller's most likely choice at the last epoch (the
greedy path's, what :meth:`~nni_enas.search.controller.ReinforceController.choice_probabilities`
gives) and, apart from it, the exported one (``exported.json``: the best of the sampled
candidates, which need not be the most likely); a black mark right of the panel shows the exported
choice too.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from nni_enas.draw.drawing import OP_COLORS
from nni_enas.draw.render import _font, write_atomic

__all__ = ['load_probabilities', 'append_probabilities', 'plot_choice_probabilities', 'panel_titles',
           'skip_color', 'INPUT_COLORS']

_FORMAT = 'nni-enas-probabilities/1'

# Candidates by index (inputs, previous nodes): Dark2, then Paired, cycled beyond 12.
INPUT_COLORS = ('#1b9e77', '#d95f02', '#7570b3', '#e7298a', '#66a61e', '#e6ab02', '#a6761d', '#666666',
                '#1f78b4', '#fb9a99', '#b2df8a', '#cab2d6')
_OFF = ((255, 255, 255), (189, 189, 189))    # skip probability 0 -> just under 0.5: white to grey
_ON = ((107, 174, 214), (8, 48, 107))        # 0.5 -> 1: light to dark blue
_EXPORTED_MARK = (0, 0, 0)
_DIFFERS = (176, 32, 32)                     # an exported choice that is not the most likely one


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


def append_probabilities(path: str | os.PathLike, decisions: dict[str, dict[str, Any]], epoch: int,
                         probabilities: dict[str, list[float]]) -> None:
    """Add (or replace) ``epoch``'s probabilities in the record at ``path``; later epochs are dropped
    (a resumed run repeats the epoch that was in progress)."""
    data = load_probabilities(path)
    data['decisions'] = decisions
    data['epochs'] = [e for e in data['epochs'] if e.get('epoch', 0) < epoch]
    data['epochs'].append({'epoch': epoch, 'probabilities': {
        label: [round(float(p), 5) for p in probs] for label, probs in probabilities.items()}})
    # one line per epoch: rewritten every epoch, so kept compact (630 micro epochs: ~1.5 MB)
    lines = ',\n'.join(json.dumps(e, separators=(',', ':')) for e in data['epochs'])
    head = json.dumps({'format': data['format'], 'decisions': data['decisions']}, separators=(',', ':'))
    write_atomic(path, (head[:-1] + ',"epochs":[\n' + lines + '\n]}\n').encode())


def _rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))


def _op_colored(info: dict[str, Any]) -> bool:
    """Op-like (coloured by op name) or input-like (coloured by index): named ops are the former."""
    return info['kind'] == 'op' and all(isinstance(v, str) for v in info['values'])


def skip_color(p: float) -> tuple[int, int, int]:
    """A skip probability's colour: grey shades under 0.5 (more likely off), blue shades from 0.5 (on)."""
    (lo, hi), t = (_OFF, p / 0.5) if p < 0.5 else (_ON, (p - 0.5) / 0.5)
    return tuple(round(a + (b - a) * min(max(t, 0.0), 1.0)) for a, b in zip(lo, hi))


def _exported_value(kind: str, value: Any) -> Any:
    if kind == 'input' and isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def panel_titles(label: str, info: dict[str, Any], last: list[float], exported: Any = None) -> tuple[str, ...]:
    """A panel's title lines: the label, the most likely choice at the last epoch (with its
    probability), and when ``exported`` is given the exported choice."""
    values = info['values']
    if info['kind'] == 'skip':
        likely = ','.join(str(v) for v, p in zip(values, last) if p > 0.5) or '-'
        lines = (label, f'most likely on: {likely}')
        on = None if exported is None else ','.join(str(v) for v in values if v in exported) or '-'
    else:
        best = max(range(len(values)), key=lambda i: last[i])
        lines = (label, f'most likely: {values[best]} {last[best]:.2f}')
        on = None if exported is None else _exported_value(info['kind'], exported)
    return lines if on is None else lines + (f'exported: {on}',)


def _differs(info: dict[str, Any], last: list[float], exported: Any) -> bool:
    """Whether the exported choice is not the most likely one."""
    values = info['values']
    if info['kind'] == 'skip':
        return [v for v, p in zip(values, last) if p > 0.5] != [v for v in values if v in exported]
    return _exported_value(info['kind'], exported) != values[max(range(len(values)), key=lambda i: last[i])]


def _panel(info: dict[str, Any], probs, width: int, height: int):
    """One decision's probabilities over epochs (``probs``: epochs x candidates) as an image."""
    import numpy as np
    from PIL import Image
    values = info['values']
    probs = np.clip(np.asarray(probs, dtype=float), 0.0, 1.0)
    if info['kind'] == 'skip':
        # one row per candidate (top: stem / index 0), one column per epoch
        pixels = np.array([[skip_color(p) for p in row] for row in probs.T], dtype=float)
    else:
        # stacked shares: candidate 0 on top; each column is one epoch
        colors = np.array([_rgb(OP_COLORS.get(v, '#cccccc')) if _op_colored(info) else
                           _rgb(INPUT_COLORS[i % len(INPUT_COLORS)]) for i, v in enumerate(values)], dtype=float)
        cum = np.cumsum(probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12), axis=1)
        rows = (np.arange(height) + 0.5) / height
        index = np.minimum((rows[:, None, None] > cum[None, :, :]).sum(axis=2), len(values) - 1)
        pixels = colors[index]
    image = Image.fromarray(pixels.round().astype(np.uint8), 'RGB')
    return image.resize((width, height), Image.Resampling.NEAREST)


def _exported_marks(info: dict[str, Any], last: list[float], exported: Any, height: int) -> list[tuple[int, int]]:
    """The (top, bottom) pixel rows, in a panel ``height`` tall, of the exported choice at the last epoch."""
    values, n = info['values'], len(info['values'])
    if info['kind'] == 'skip':
        return [(round(i * height / n), round((i + 1) * height / n) - 1) for i, v in enumerate(values) if v in exported]
    value = _exported_value(info['kind'], exported)
    if value not in values:
        return []
    i, total = values.index(value), sum(last) or 1.0
    top, bottom = sum(last[:i]) / total * height, sum(last[:i + 1]) / total * height
    middle = (top + bottom) / 2     # at least 3 pixels, so that a choice of probability ~0 still shows
    return [(round(min(top, middle - 1.5)), round(max(bottom, middle + 1.5)) - 1)]


def _panel_heights(data: dict[str, Any], labels: list[str], panel_height: int) -> dict[str, int]:
    """Skip panels get at least 5 pixels per candidate (a 24-layer macro's last skip has 24)."""
    return {label: max(panel_height, 5 * len(data['decisions'][label]['values']))
            if data['decisions'][label]['kind'] == 'skip' else panel_height for label in labels}


def plot_choice_probabilities(data: dict[str, Any], path: str | os.PathLike, *, exported: dict[str, Any] | None = None,
                              columns: int = 4, panel_width: int = 240, panel_height: int = 44) -> None:
    """One small panel per decision, epochs left to right, written as PNG to ``path`` (see the module docstring).

    ``exported``: the exported architecture's ``arch`` (``{label: value}``), named in each title
    apart from the most likely choice, and marked right of each panel; None leaves both out.
    """
    from PIL import Image, ImageDraw
    labels = list(data['decisions'])
    exported = exported or {}
    heights = _panel_heights(data, labels, panel_height)
    pad, title_h, mark_w = 16, 14 + 13 * (2 if exported else 1), 5
    cell_w = panel_width + mark_w + 2 * pad
    width = pad + columns * cell_w
    row_h = [max(heights[label] for label in labels[r:r + columns]) + title_h + 12
             for r in range(0, len(labels), columns)]
    probe = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    header = _legend(probe, data, labels, pad, width, bool(exported))       # measure first, then draw
    img = Image.new('RGB', (width, header + sum(row_h) + pad), 'white')
    draw = ImageDraw.Draw(img)
    _legend(draw, data, labels, pad, width, bool(exported))
    small = _font(10)
    for k, label in enumerate(labels):
        info = data['decisions'][label]
        probs = [e['probabilities'].get(label, [0.0] * len(info['values'])) for e in data['epochs']]
        px, py = pad + (k % columns) * cell_w, header + sum(row_h[:k // columns])
        lines = panel_titles(label, info, probs[-1], exported.get(label))
        differs = label in exported and _differs(info, probs[-1], exported[label])
        for i, (line, fill) in enumerate(zip(lines, [(0, 0, 0), (64, 64, 64), _DIFFERS if differs else (64, 64, 64)])):
            _fit_text(draw, (px, py + 10 + 13 * i), line, small, panel_width + mark_w, fill)
        top, h = py + title_h, heights[label]
        img.paste(_panel(info, probs, panel_width, h), (px, top))
        draw.rectangle([px - 1, top - 1, px + panel_width, top + h], outline=(128, 128, 128))
        if label in exported:
            for a, b in _exported_marks(info, probs[-1], exported[label], h):
                draw.rectangle([px + panel_width + 2, top + a, px + panel_width + 1 + mark_w, top + b],
                               fill=_EXPORTED_MARK)
    buf = io.BytesIO()
    img.save(buf, format='PNG', optimize=True)
    write_atomic(path, buf.getvalue())


def _fit_text(draw, xy: tuple[int, int], text: str, font, width: int, fill) -> None:
    """``text`` at ``xy`` (left, baseline), shortened with '...' to ``width`` pixels."""
    if draw.textlength(text, font=font) > width:
        while len(text) > 4 and draw.textlength(text + '...', font=font) > width:
            text = text[:-1]
        text += '...'
    draw.text(xy, text, fill=fill, font=font, anchor='ls')


def _legend(draw, data: dict[str, Any], labels: list[str], pad: int, width: int, exported: bool) -> int:
    """The plot's title and colour keys; returns the y below them."""
    small, bold = _font(10), _font(13, bold=True)
    epochs = [e['epoch'] for e in data['epochs']]
    draw.text((pad, pad), f'Controller choice probabilities per decision, epochs {epochs[0]}-{epochs[-1]} '
                          f'left to right', fill='black', font=bold, anchor='lt')
    infos = [data['decisions'][label] for label in labels]
    y = pad + 22
    named = [v for info in infos if _op_colored(info) for v in info['values']]
    keys = [(OP_COLORS.get(name, '#cccccc'), name) for name in dict.fromkeys(named)]
    y = _key_row(draw, keys, pad, y, width, small) if keys else y
    indexed = [info for info in infos if info['kind'] != 'skip' and not _op_colored(info)]
    if indexed:
        most = min(max(len(info['values']) for info in indexed), len(INPUT_COLORS))
        y = _key_row(draw, [(INPUT_COLORS[i], f'input {i}') for i in range(most)], pad, y, width, small,
                     note=_input_note(labels))
    if any(info['kind'] == 'skip' for info in infos):
        keys = [('#%02x%02x%02x' % skip_color(p), f'{p:g}') for p in (0.0, 0.25, 0.45, 0.55, 0.75, 1.0)]
        y = _key_row(draw, keys, pad, y, width, small, note='skip panels: one row per candidate (stem, layer_0, ... '
                     'top to bottom), grey = more likely off, blue = more likely on')
    lines = ['titles: the decision; its most likely choice at the last epoch (the controller\'s greedy path) and '
             'that choice\'s probability']
    if exported:
        lines.append('then the exported choice (exported.json: the best of the sampled candidates, red where it is '
                     'not the most likely one), also marked black right of the panel')
    for line in lines:
        draw.text((pad, y + 5), line, fill='black', font=small, anchor='lm')
        y += 14
    return y + 10


def _input_note(labels: list[str]) -> str:
    notes = []
    if any(label.endswith(('/input_a', '/input_b')) for label in labels):
        notes.append('micro: 0 = c_{k-2}, 1 = c_{k-1}, j = node j')
    if any(label.endswith('/prev') for label in labels):
        notes.append('recurrent cell: j = node j')
    return '(' + '; '.join(notes) + ')' if notes else ''


def _key_row(draw, keys: list[tuple[str, str]], x0: int, y: int, width: int, font, note: str = '') -> int:
    """Colour swatches with their names from (x0, y), wrapped at ``width``, then ``note``; returns the next row's y."""
    x = x0
    for color, name in keys:
        step = 14 + round(draw.textlength(name, font=font)) + 14
        if x + step > width - x0 and x > x0:
            x, y = x0, y + 16
        draw.rectangle([x, y, x + 10, y + 10], fill=color, outline=(64, 64, 64))
        draw.text((x + 14, y + 5), name, fill='black', font=font, anchor='lm')
        x += step
    if note:
        if x + draw.textlength(note, font=font) > width - x0:
            x, y = x0, y + 16
        draw.text((x + 6, y + 5), note, fill='black', font=font, anchor='lm')
    return y + 16
