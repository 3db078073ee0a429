"""Test helpers shared by several test files (import with ``from helpers import ...``).

pytest puts this folder on ``sys.path`` for the test modules in it (no ``__init__.py``).
"""

import pickle

import numpy as np
from PIL import Image

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar(root, per_batch=20, test_size=10, seed=0):
    """Write tiny CIFAR-10 pickles in the real format; return {name: (images, labels)}."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test_size)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        if name == "data_batch_1":
            # image 0, pixel (y=5, x=7): R=200, G=100, B=50 in the row-major R, G, B planes
            data[0, 5 * 32 + 7] = 200
            data[0, 1024 + 5 * 32 + 7] = 100
            data[0, 2048 + 5 * 32 + 7] = 50
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n}, f)
        written[name] = (data.reshape(n, 3, 32, 32), np.array(labels))
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072,
                     b"num_cases_per_batch": per_batch}, f)
    return written


def write_png(path, size, color, mode="RGB"):
    """Write a solid-colour image of ``size`` (w, h) to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def run_captured(main, argv, capsys):
    """Call a command's ``main(argv)`` in-process; return (status, stdout, stderr)."""
    capsys.readouterr()
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err
# --------------------------------------------------------------------------------------------
# language models: a small stand-in network with the recurrent space's forward contract
# --------------------------------------------------------------------------------------------

from typing import NamedTuple  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class LMOutput(NamedTuple):
    logits: torch.Tensor
    hidden: torch.Tensor
    states: torch.Tensor


class TinyLM(nn.Module):
    """A one-layer tanh RNN with a tied decoder and ``forward(tokens, hidden=None) -> (logits, hidden, states)``.

    It records every call: ``calls`` holds ``(hidden it started from or None, hidden it returned,
    training flag)``, so tests can follow the state from window to window.
    """

    def __init__(self, vocab=7, hidden=6, dropout=0.0, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(vocab, hidden)
        self.cell = nn.Linear(2 * hidden, hidden, bias=False)
        self.dropout = dropout
        self.hidden_size = hidden
        self.calls = []

    def forward(self, tokens, hidden=None):
        batch, steps = tokens.shape
        h = tokens.new_zeros(batch, self.emb.embedding_dim, dtype=torch.float) if hidden is None else hidden
        x = self.emb(tokens)
        if self.training and self.dropout:
            x = F.dropout(x, self.dropout)
        states = []
        for t in range(steps):
            h = torch.tanh(self.cell(torch.cat([x[:, t], h], 1)))
            states.append(h)
        states = torch.stack(states, 1)
        self.calls.append((None if hidden is None else hidden.detach().clone(), h.detach().clone(), self.training))
        return LMOutput(states @ self.emb.weight.t(), h, states)


class Windows:
    """A list of windows Lightning takes as one loader (a plain list would be a list of loaders)."""

    def __init__(self, windows):
        self.windows = list(windows)

    def __len__(self):
        return len(self.windows)

    def __iter__(self):
        return iter(self.windows)

    def __getitem__(self, i):
        return self.windows[i]


def text_windows(stream, batch_size, bptt):
    """Consecutive ``(x, y)`` windows of a 1-D id stream batched row-contiguously (the LM layout)."""
    rows = stream[:len(stream) // batch_size * batch_size].reshape(batch_size, -1)
    windows = []
    for i in range(0, rows.shape[1] - 1, bptt):
        n = min(bptt, rows.shape[1] - 1 - i)
        windows.append((rows[:, i:i + n], rows[:, i + 1:i + 1 + n]))
    return Windows(windows)


def ptb_like_lines(n, seed=0):
    """``n`` lower-case sentences of a small grammar, PTB-style (space-separated, no punctuation)."""
    import random
    rng = random.Random(seed)
    return [f'{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_TAILS)}'
            for _ in range(n)]


_SUBJECTS = ['the cat', 'a dog', 'the market', 'the company', 'a trader']
_VERBS = ['sees', 'buys', 'sells', 'likes', 'moves']
_OBJECTS = ['the shares', 'a house', 'the bonds', 'n dollars', 'the <unk>']
_TAILS = ['', ' today', ' in new york', ' again']
#: one line holding every word of the grammar (first in train.txt, so no valid/test word is unknown)
ALL_WORDS_LINE = ' '.join(_SUBJECTS + _VERBS + _OBJECTS + _TAILS[1:])


def write_text_folder(folder, train=60, valid=20, test=20, seed=0):
    """``train.txt``, ``valid.txt`` and ``test.txt`` of PTB-like lines (the text-folder layout); returns folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, n) in enumerate((('train', train), ('valid', valid), ('test', test))):
        lines = ([ALL_WORDS_LINE] if name == 'train' else []) + ptb_like_lines(n, seed=seed + i)
        (folder / f'{name}.txt').write_text(''.join(f' {line} \n' for line in lines))
    return folder
