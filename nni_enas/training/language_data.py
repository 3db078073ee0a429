"""The text of a language-model run: its rows on the device, its windows, its vocabulary file.

What ``search.py --search-for rnn`` and ``retrain.py`` (an rnn architecture) put between the text
loader (:func:`nni_enas.data.text.load_text`) and the recipe
(:class:`~nni_enas.training.language_model.LanguageModelTraining`):

* :func:`load_text_data` loads the corpus (numbered with a given vocabulary, or with the one a
  run folder keeps, so a resumed run or a retrain maps every word to the same id) and cuts each
  split into rows at its batch size, on the device, before any file is written: a text too
  short for its batch is bad input;
* :class:`TextData` serves the windows: :meth:`TextData.train_windows` with new random lengths
  every epoch (:class:`EpochWindows`), fixed-length windows for evaluation, and
  :class:`RandomOrder` for the controller's rewards;
* the run folder's ``vocabulary.json`` (a JSON list of the words, id = index).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from nni_enas.data.errors import DataError
from nni_enas.data.text import TextCorpus, TextWindows, Vocabulary, batchify, load_text
from nni_enas.files import write_json_atomic

__all__ = ['VOCABULARY_FILE', 'TextData', 'load_text_data', 'read_vocabulary', 'EpochWindows', 'fit_epoch',
           'RandomOrder', 'supernet_parameters']

VOCABULARY_FILE = 'vocabulary.json'


class _EpochSampler:
    """What Lightning calls ``set_epoch`` on at every epoch's start (it looks for ``loader.sampler``)."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class EpochWindows:
    """The training windows of each epoch: ``make(epoch)`` builds them (enas_lm draws new lengths as it goes).

    The epoch is ``epoch_of()`` when given (:func:`fit_epoch` of the Lightning trainer), else the
    one Lightning last passed to ``sampler.set_epoch``. Lightning creates (and prefetches from) the
    first epoch's iterator of a fit before it calls ``set_epoch``, so a resumed run needs
    ``epoch_of`` to draw the lengths of the run that never stopped. There is no ``len()``: the
    number of windows changes with their lengths, and Lightning would read it once; the recipe
    finds an epoch's last window with ``trainer.is_last_batch`` instead.
    """

    def __init__(self, make: Callable[[int], Iterable], epoch_of: Callable[[], int] | None = None):
        self.make = make
        self.epoch_of = epoch_of
        self.sampler = _EpochSampler()
        self.batch_sampler = None

    def __iter__(self) -> Iterator:
        epoch = self.epoch_of() if self.epoch_of is not None else self.sampler.epoch
        return iter(self.make(epoch))


def fit_epoch(trainer) -> Callable[[], int]:
    """``epoch_of`` for :class:`EpochWindows`: the epoch a Lightning fit is in (restored on resume)."""
    return lambda: trainer.fit_loop.epoch_progress.current.processed


class RandomOrder:
    """The windows of an iterable, served in a new random order on every pass (the reward batches).

    Rewards start from a zero state, so the windows' order does not matter to them; a random one
    gives the export's scoring window(s) a random draw (the paper: "a minibatch sampled from the
    validation set") and each controller phase other windows. The order comes from the global
    torch generator, which the checkpoints keep: a resumed search draws the same windows.
    """

    def __init__(self, windows: Iterable):
        self.windows = list(windows)
        if not self.windows:
            raise ValueError('no windows: the text is too short for one window')

    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self) -> Iterator:
        for i in torch.randperm(len(self.windows)).tolist():
            yield self.windows[i]


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % 2**63


class TextData:
    """A corpus and its splits cut into rows (``rows[split]``, int64 ``[B, L]`` on the device)."""

    def __init__(self, corpus: TextCorpus, rows: dict[str, torch.Tensor]):
        self.corpus = corpus
        self.rows = rows

    @property
    def vocabulary(self) -> Vocabulary:
        return self.corpus.vocabulary

    @property
    def train_tokens(self) -> int:
        """The targets one training epoch predicts (every column of the rows but the first)."""
        rows = self.rows['train']
        return rows.shape[0] * (rows.shape[1] - 1)

    def describe(self) -> str:
        c = self.corpus
        return (f'{c.train.numel():,} train / {c.valid.numel():,} valid / {c.test.numel():,} test tokens, '
                f'{len(self.vocabulary):,} words')

    def train_windows(self, bptt: int, *, seed: int = 0) -> EpochWindows:
        """Consecutive training windows, their lengths random around ``bptt`` and new every epoch."""
        rows = self.rows['train']
        return EpochWindows(lambda epoch: TextWindows(rows, bptt, random_length=True, seed=_epoch_seed(seed, epoch)))

    def windows(self, split: str, bptt: int) -> TextWindows:
        """Consecutive windows of ``bptt`` steps over a split (evaluation)."""
        return TextWindows(self.rows[split], bptt)

    def save_vocabulary(self, run_dir: str | os.PathLike) -> Path:
        path = Path(run_dir) / VOCABULARY_FILE
        write_json_atomic(path, self.vocabulary.to_list())
        return path


def read_vocabulary(run_dir: str | os.PathLike) -> Vocabulary:
    """The vocabulary a run folder keeps (:class:`~nni_enas.data.errors.DataError` if it cannot be read)."""
    path = Path(run_dir) / VOCABULARY_FILE
    try:
        words = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f'{path}: cannot read the run\'s vocabulary ({exc})') from None
    if not isinstance(words, list) or not words or not all(isinstance(w, str) for w in words):
        raise DataError(f'{path}: not a list of words')
    return Vocabulary(words)


def load_text_data(dataset: str, data_dir: str | os.PathLike, *, batch_sizes: dict[str, int],
                   vocabulary: Vocabulary | None = None, synthetic_tokens: int | None = None, seed: int = 0,
                   device: torch.device | str | None = None) -> TextData:
    """Load the text and cut the splits of ``batch_sizes`` (``{'train': 64, 'valid': 64}``) into rows.

    ``vocabulary`` numbers the words (a search's export, a resumed run's folder); without it the
    words of the training text are numbered. Every problem is a one-line :class:`DataError`.
    """
    kwargs: dict[str, Any] = {'vocabulary': vocabulary, 'seed': seed}
    if synthetic_tokens is not None:
        kwargs['synthetic_tokens'] = synthetic_tokens
    corpus = load_text(dataset, data_dir, **kwargs)
    names = {'train': 'the training text', 'valid': 'the validation text', 'test': 'the test text'}
    rows = {split: batchify(getattr(corpus, split), size, name=names[split]).to(device)
            for split, size in batch_sizes.items()}
    return TextData(corpus, rows)


def supernet_parameters(space_class, **space_args) -> int:
    """Shared weights of ``space_class(**space_args)`` at its ``hidden_size``, counted without building it there.

    Every weight of the recurrent space is a product of at most two widths proportional to the
    hidden size (embedding: vocabulary x H, the cell's matrices: H x 2H and 2H x 2H), so the count
    is a quadratic in H: three spaces of hidden size 1, 2 and 3 give it exactly.
    """
    counts = [sum(p.numel() for p in space_class(**{**space_args, 'hidden_size': h}).parameters()) for h in (1, 2, 3)]
    a = (counts[2] - 2 * counts[1] + counts[0]) / 2
    b = counts[1] - counts[0] - 3 * a
    c = counts[0] - a - b
    h = space_args['hidden_size']
    return round(a * h * h + b * h + c)
