"""Data sets: :mod:`~nni_enas.data.images` (CIFAR-10, image folders, synthetic images) and the
error every loader raises (:mod:`~nni_enas.data.errors`)."""
