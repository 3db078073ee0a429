"""Any English text as a Penn-Treebank-style text folder (train.txt, valid.txt, test.txt) for --dataset textfolder.

Mikolov's PTB preprocessing, approximately: lower case, one sentence per line (a line starts
with a space and ends with " \\n"), numbers written ``N``, no punctuation (words keep their
apostrophe endings as separate tokens: ``it 's``), the ``--vocab`` most frequent training words
kept and every other word written ``<unk>``. Sentences are split in order: the first 80% train,
the next 10% validation, the last 10% test. The last line (JSON) gives the token counts and the
test text's add-one unigram perplexity under the training text (the floor a language model must
beat). Words seen once in the training text are ``<unk>`` too.

    for p in $(ls /usr/share/man/man1 | head -200 | sed 's/\\.gz$//; s/\\.1[a-z]*$//'); do
        MANWIDTH=2000 man -P cat "$p" 2>/dev/null; done > man200.txt
    python3 bench/ptb_style.py man200.txt --out data/man-ptb --vocab 10000
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

_NUMBER = re.compile(r'\d+(?:[.,:]\d+)*')
_TOKEN = re.compile(r"[a-z]+|'[a-z]+|\x00")
_SENTENCE_END = re.compile(r'(?<=[.!?])\s+|\n\s*\n')


def sentences(text: str, min_tokens: int = 3) -> list[list[str]]:
    """The sentences of ``text`` as PTB-style token lists (numbers become ``N``)."""
    result = []
    for part in _SENTENCE_END.split(text.lower()):
        tokens = ['N' if t == '\x00' else t for t in _TOKEN.findall(_NUMBER.sub('\x00', part))]
        if len(tokens) >= min_tokens:
            result.append(tokens)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('sources', nargs='+', help='text files')
    p.add_argument('--out', required=True, help='the folder to write train.txt, valid.txt, test.txt into')
    p.add_argument('--vocab', type=int, default=10_000, help='words kept, <unk> and N included')
    args = p.parse_args(argv)
    text = '\n\n'.join(open(path, encoding='utf-8', errors='replace').read() for path in args.sources)
    lines = sentences(text)
    n = len(lines)
    splits = {'train': lines[:n * 8 // 10], 'valid': lines[n * 8 // 10:n * 9 // 10], 'test': lines[n * 9 // 10:]}
    counts = collections.Counter(w for line in splits['train'] for w in line)
    # one id left for <unk>; a word seen once is <unk> too, so the training text has <unk>s to learn from
    keep = {w for w, c in counts.most_common(args.vocab - 1) if c >= 2}
    os.makedirs(args.out, exist_ok=True)
    for name, part in splits.items():
        with open(os.path.join(args.out, f'{name}.txt'), 'w') as f:
            for line in part:
                f.write(' ' + ' '.join(w if w in keep else '<unk>' for w in line) + ' \n')

    from nni_enas.data.text import load_text, unigram_perplexity
    corpus = load_text('textfolder', args.out)
    print(json.dumps({'folder': args.out, 'sentences': n, 'train_tokens': corpus.train.numel(),
                      'valid_tokens': corpus.valid.numel(), 'test_tokens': corpus.test.numel(),
                      'vocabulary': len(corpus.vocabulary),
                      'unigram_test_ppl': round(unigram_perplexity(corpus.train, corpus.test, len(corpus.vocabulary)), 2)}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
