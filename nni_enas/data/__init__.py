"""Data sets: :mod:`~nni_enas.data.images` (CIFAR-10, image folders, synthetic images),
:mod:`~nni_enas.data.text` (Penn Treebank, WikiText-2, a folder of text, synthetic text), the
download both use (:mod:`~nni_enas.data.download`), and the error every loader raises
(:mod:`~nni_enas.data.errors`)."""
