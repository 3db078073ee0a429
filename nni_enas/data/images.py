"""Datasets held in memory as uint8 tensors, and a batch iterator that augments on the device.

CIFAR-10 (50k 32x32 RGB images, 150 MB as uint8) fits in memory, and on CUDA the whole set
lives on the GPU.  :class:`BatchLoader` then builds every minibatch with a handful of tensor
ops on that device (gather, crop, flip, normalise, cutout): no per-image Python work and no
DataLoader worker processes.

Public API
----------
DataError
    Raised for every bad-data situation, with one human-readable message.
ImageTensors
    Images (uint8 ``[N, C, H, W]``), labels, class names and per-channel mean/std.
read_cifar10(root)
    Read the python-pickle CIFAR-10 files.
load_data(dataset, data_dir, *, split, ...)
    The (train, valid) or (train, test) pair for 'cifar10', 'imagefolder' or 'synthetic'.
BatchLoader
    Iterable over normalised (and optionally augmented) minibatches on a device.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from nni_enas.data.download import download_into
from nni_enas.data.errors import DataError

__all__ = ['DataError', 'ImageTensors', 'read_cifar10', 'load_data', 'BatchLoader']

CIFAR10_DIRNAME = 'cifar-10-batches-py'
CIFAR10_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'
CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer',
                   'dog', 'frog', 'horse', 'ship', 'truck']
_CIFAR10_TRAIN_FILES = [f'data_batch_{i}' for i in range(1, 6)]
_CIFAR10_FILES = _CIFAR10_TRAIN_FILES + ['test_batch', 'batches.meta']

#: Fraction of the images held out when a set has no separate split of the needed size.
HOLDOUT_FRACTION = 0.1
# The test set's folder in an image folder (the first that exists); never a class beside class folders.
HELD_OUT_FOLDERS = ('val', 'test')


# --------------------------------------------------------------------------------------------
# In-memory dataset
# --------------------------------------------------------------------------------------------

def _channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and population std of ``images / 255`` (sums accumulated in float64)."""
    n = images.shape[0]
    if n == 0:
        raise DataError('cannot compute mean/std of an empty image set')
    total = torch.zeros(images.shape[1], dtype=torch.float64, device=images.device)
    total_sq = torch.zeros_like(total)
    for part in images.split(chunk):
        x = part.to(torch.float32)  # exact for 0..255; a chunk's sums stay precise in float32
        total += x.sum(dim=(0, 2, 3)).double()
        total_sq += x.square_().sum(dim=(0, 2, 3)).double()
    count = n * images.shape[2] * images.shape[3]
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)
    # A constant channel would give std 0; keep normalisation finite.
    std = (var.sqrt() / 255.0).clamp_min(1e-6)
    return (mean / 255.0).tolist(), std.tolist()


class ImageTensors(torch.utils.data.Dataset):
    """A labelled image set held in memory as uint8 tensors.

    Parameters
    ----------
    images : torch.Tensor
        uint8 tensor of shape ``[N, C, H, W]``.
    labels : torch.Tensor
        Integer tensor of shape ``[N]`` (stored as int64).
    classes : list of str
        Class names; ``labels`` index into it.
    mean, std : sequence of float, optional
        Per-channel statistics of ``images / 255`` used for normalisation.  When omitted
        they are computed from ``images`` (pass the training split's values for a
        validation or test split).

    Attributes
    ----------
    images, labels, classes, mean, std
        As above; ``mean`` and ``std`` are lists of Python floats.

    Notes
    -----
    ``__getitem__`` returns ``(normalised float image [C, H, W], label)``, so the object also
    works with a plain :class:`torch.utils.data.DataLoader`.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str],
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(f'images must be a uint8 [N, C, H, W] tensor, '
                            f'got {images.dtype} of shape {tuple(images.shape)}')
        labels = torch.as_tensor(labels).to(torch.int64)
        if labels.shape != (images.shape[0],):
            raise DataError(f'got {images.shape[0]} images but labels of shape {tuple(labels.shape)}')
        self.images = images
        self.labels = labels
        self.classes = list(classes)
        if mean is None or std is None:
            mean, std = _channel_stats(images)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        if len(self.mean) != images.shape[1] or len(self.std) != images.shape[1]:
            raise DataError(f'mean/std need {images.shape[1]} channel values, '
                            f'got {len(self.mean)}/{len(self.std)}')

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index].to(torch.float32) / 255.0
        mean = image.new_tensor(self.mean).view(-1, 1, 1)
        std = image.new_tensor(self.std).view(-1, 1, 1)
        return (image - mean) / std, self.labels[index]

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    def to(self, device: torch.device | str | None) -> 'ImageTensors':
        """Return a copy whose tensors live on ``device`` (same statistics and classes)."""
        return ImageTensors(self.images.to(device), self.labels.to(device), self.classes,
                            mean=self.mean, std=self.std)


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------

def _cifar_dir(root: Path) -> Path:
    """The folder expected to hold the CIFAR-10 batch files, for ``root`` as given."""
    if (root / CIFAR10_DIRNAME).is_dir():
        return root / CIFAR10_DIRNAME
    if root.name == CIFAR10_DIRNAME or (root / 'data_batch_1').is_file():
        return root
    return root / CIFAR10_DIRNAME


def _cifar_complete(root: Path) -> bool:
    folder = _cifar_dir(root)
    return all((folder / name).is_file() for name in _CIFAR10_FILES)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, 'rb') as f:
            content = pickle.load(f, encoding='bytes')
    except FileNotFoundError:
        raise DataError(f'CIFAR-10 file missing: {path}') from None
    except Exception as exc:  # truncated or not a pickle at all
        raise DataError(f'cannot read CIFAR-10 file {path}: {exc.__class__.__name__}: {exc}') from None
    if not isinstance(content, dict):
        raise DataError(f'corrupt CIFAR-10 file {path}: expected a pickled dict')
    # Keys are bytes with encoding='bytes'; accept str keys too (files re-pickled by others).
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in content.items()}


def _read_cifar_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    try:
        data = np.asarray(batch['data'], dtype=np.uint8)
        labels = np.asarray(batch['labels'], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f'corrupt CIFAR-10 file {path}: bad or missing {exc}') from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise DataError(f'corrupt CIFAR-10 file {path}: data of shape {data.shape} '
                        f'with {labels.size} labels (expected [n, 3072] and n labels)')
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f'corrupt CIFAR-10 file {path}: labels outside 0..{num_classes - 1}')
    # Each row holds the R, G and B planes one after the other, each row-major 32x32.
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar10(root: str | Path) -> tuple[ImageTensors, ImageTensors]:
    """Read CIFAR-10 from the python-pickle files (no checksum verification).

    Parameters
    ----------
    root : str or Path
        Either the folder that contains ``cifar-10-batches-py`` or that folder itself.
        It must hold ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
        ``batches.meta``.

    Returns
    -------
    train, test : ImageTensors
        The training batches concatenated in order (``data_batch_1`` first) and the test
        batch; both are normalised with the training set's mean/std.

    Raises
    ------
    DataError
        A file is missing or cannot be decoded; the message names the file.
    """
    folder = _cifar_dir(Path(root).expanduser().absolute())
    for name in _CIFAR10_FILES:
        if not (folder / name).is_file():
            raise DataError(f'CIFAR-10 file missing: {folder / name}')
    meta = _unpickle(folder / 'batches.meta')
    try:
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta['label_names']]
    except (KeyError, TypeError, UnicodeDecodeError):
        raise DataError(f"corrupt CIFAR-10 file {folder / 'batches.meta'}: no label_names") from None
    parts = [_read_cifar_batch(folder / name, len(classes)) for name in _CIFAR10_TRAIN_FILES]
    test_images, test_labels = _read_cifar_batch(folder / 'test_batch', len(classes))
    train = ImageTensors(torch.from_numpy(np.concatenate([p[0] for p in parts])),
                         torch.from_numpy(np.concatenate([p[1] for p in parts])), classes)
    test = ImageTensors(torch.from_numpy(test_images), torch.from_numpy(test_labels), classes,
                        mean=train.mean, std=train.std)
    return train, test


def _load_cifar10(data_dir: Path, download: bool) -> tuple[ImageTensors, ImageTensors]:
    target = data_dir.parent if data_dir.name == CIFAR10_DIRNAME else data_dir
    why = ''
    if not _cifar_complete(data_dir) and download:
        why = _download_cifar10(target)
    if not _cifar_complete(data_dir):
        raise DataError(f"CIFAR-10 not found{why}: put the extracted '{CIFAR10_DIRNAME}' folder in "
                        f'{target} (download {CIFAR10_URL}), or run with --dataset synthetic '
                        f'to try without data')
    return read_cifar10(data_dir)


def _download_cifar10(target: Path) -> str:
    """Fetch and extract CIFAR-10 into ``target`` with torchvision; ``''`` or why it failed.

    A failed download leaves nothing behind: the folders it created and the partial archive
    are removed.
    """
    def fetch(folder: Path) -> None:
        # torchvision is only used to fetch and extract the archive; we read it ourselves.
        import torchvision
        torchvision.datasets.CIFAR10(str(folder), train=True, download=True)
    return download_into(target, fetch)


# --------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------

def _class_folders(folder: Path, skip: Sequence[str] = ()) -> list[str]:
    """The names of the sub-folders of ``folder`` (sorted), except those in ``skip``; at least one."""
    from torchvision.datasets.folder import find_classes

    if not folder.is_dir():
        what = 'is a file, not a folder of class folders' if folder.exists() else 'not found'
        raise DataError(f'image folder {what}: {folder}')
    try:
        names = [name for name in find_classes(str(folder))[0] if name not in skip]
    except FileNotFoundError:
        names = []
    except OSError as exc:
        raise DataError(f'cannot read image folder {folder}: {exc}') from None
    if not names:
        raise DataError(f'no class sub-folders in {folder} (expected one folder of images per class)')
    return names


def _read_image_folder(folder: Path, image_size: int,
                       class_to_idx: dict[str, int] | None = None, skip: Sequence[str] = ()
                       ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode every image under ``folder/<class>/`` to uint8 RGB ``[N, 3, S, S]``.

    Without ``class_to_idx`` the classes are the sub-folders that hold at least one image,
    sorted by name, except those named in ``skip``.  With it (a test folder), each sub-folder
    must be one of its classes.
    """
    from PIL import Image
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
    from torchvision.transforms.functional import pil_to_tensor

    names = _class_folders(folder, skip)
    if class_to_idx is None:
        lookup = {name: i for i, name in enumerate(names)}
    else:
        unknown = sorted(set(names) - set(class_to_idx))
        if unknown:
            raise DataError(f'{folder} has class folders not in the training set: '
                            f"{', '.join(unknown)}")
        lookup = {name: class_to_idx[name] for name in names}
    try:
        samples = make_dataset(str(folder), lookup, extensions=IMG_EXTENSIONS, allow_empty=True)
    except OSError as exc:
        raise DataError(f'cannot read image folder {folder}: {exc}') from None
    if not samples:
        raise DataError(f'no images found in {folder} '
                        f"(extensions: {', '.join(IMG_EXTENSIONS)})")
    if class_to_idx is None:
        # Keep only classes that have images, numbered in name order.
        used = sorted({label for _, label in samples})
        remap = {old: new for new, old in enumerate(used)}
        classes = [names[i] for i in used]
        samples = [(path, remap[label]) for path, label in samples]
        if len(classes) < 2:
            raise DataError(f'found {len(classes)} class with images in {folder}; '
                            f'need at least 2 class sub-folders')
    else:
        classes = sorted(class_to_idx, key=class_to_idx.get)

    images = torch.empty(len(samples), 3, image_size, image_size, dtype=torch.uint8)
    for i, (path, _) in enumerate(samples):
        try:
            with Image.open(path) as img:
                img = img.convert('RGB').resize((image_size, image_size), Image.BILINEAR)
        except Exception as exc:
            raise DataError(f'cannot decode image {path}: {exc}') from None
        images[i] = pil_to_tensor(img)
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return images, labels, classes


def _check_test_folder(test_dir: Path) -> None:
    """Refuse a test folder without class folders (e.g. a class that happens to be named ``val``)."""
    try:
        has_classes = any(p.is_dir() for p in test_dir.iterdir())
    except OSError as exc:
        raise DataError(f'cannot read image folder {test_dir}: {exc}') from None
    if not has_classes:
        raise DataError(f'{test_dir} holds no class folders: {test_dir.name}/ is read as the test set, one folder '
                        f'per class (rename it if it is a class)')


def _load_imagefolder(data_dir: Path, image_size: int, seed: int
                      ) -> tuple[torch.Tensor, torch.Tensor, list[str],
                                 torch.Tensor, torch.Tensor]:
    """(train images, train labels, classes, test images, test labels) of an image folder.

    One sub-folder of images per class (torchvision ``ImageFolder`` layout). The test set is
    ``data_dir/val`` (or else ``data_dir/test``) when it exists, and the training set
    ``data_dir/train`` if it exists, else the class folders of ``data_dir`` itself: beside class
    folders, ``val/`` and ``test/`` are never classes (a ``val/`` without class folders in it is
    refused). Without a test folder, the training folder is shuffled with ``seed`` and its last
    10% (at least one image) is held out as the test set, which neither split trains on. The
    training images are shuffled with ``seed`` in every layout, so the search split's valid tail
    is a random sample. Images are converted to RGB and resized to ``image_size`` x
    ``image_size`` (bilinear, aspect ratio not kept).
    """
    # Image folders list images class by class: shuffle (seeded) so that a tail is a fair sample.
    generator = torch.Generator().manual_seed(seed)
    train_dir = data_dir / 'train' if (data_dir / 'train').is_dir() else data_dir
    test_dir = next((data_dir / n for n in HELD_OUT_FOLDERS if (data_dir / n).is_dir()), None)
    if test_dir is not None:
        _check_test_folder(test_dir)
        skip = HELD_OUT_FOLDERS if train_dir == data_dir else ()
        images, labels, classes = _read_image_folder(train_dir, image_size, skip=skip)
        perm = torch.randperm(len(labels), generator=generator)
        test_images, test_labels, _ = _read_image_folder(
            test_dir, image_size, {name: i for i, name in enumerate(classes)})
        return images[perm], labels[perm], classes, test_images, test_labels
    images, labels, classes = _read_image_folder(train_dir, image_size)
    perm = torch.randperm(len(labels), generator=generator)
    images, labels = images[perm], labels[perm]
    n_test = max(1, int(len(labels) * HOLDOUT_FRACTION))  # >= 2 images: >= 2 classes
    return images[:-n_test], labels[:-n_test], classes, images[-n_test:], labels[-n_test:]


# --------------------------------------------------------------------------------------------
# Splits and the public loader
# --------------------------------------------------------------------------------------------

def _synthetic(count: int, image_size: int, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randint(0, 256, (count, 3, image_size, image_size), dtype=torch.uint8,
                           generator=generator)
    labels = torch.randint(0, len(CIFAR10_CLASSES), (count,), generator=generator)
    return images, labels


def _search_split(train: ImageTensors, valid_size: int) -> tuple[ImageTensors, ImageTensors]:
    """Split off the last ``valid_size`` images (10% if that leaves nothing to train on)."""
    n = len(train)
    if n < 2:
        raise DataError(f'need at least 2 training images for a train/valid split, got {n}')
    n_valid = valid_size if valid_size < n else max(1, int(n * HOLDOUT_FRACTION))
    cut = n - n_valid
    head = ImageTensors(train.images[:cut], train.labels[:cut], train.classes)
    tail = ImageTensors(train.images[cut:], train.labels[cut:], train.classes,
                        mean=head.mean, std=head.std)
    return head, tail


def load_data(dataset: str, data_dir: str | Path | None, *, split: str,
              synthetic_size: int = 1024, image_size: int = 32, valid_size: int = 5000,
              download: bool = True, seed: int = 0) -> tuple[ImageTensors, ImageTensors]:
    """Load a dataset into memory and split it for architecture search or final training.

    Parameters
    ----------
    dataset : {'cifar10', 'imagefolder', 'synthetic'}
        ``'cifar10'``: the python-pickle files, see :func:`read_cifar10`.
        ``'imagefolder'``: one sub-folder of images per class, see :func:`_load_imagefolder`.
        ``'synthetic'``: random images and labels, see :func:`_load_synthetic`.
    data_dir : str or Path
        Where the data lives (ignored for ``'synthetic'``).
    split : {'search', 'final'}
        ``'search'`` returns ``(train, valid)``: valid is the last ``valid_size`` images of
        the training set, unshuffled (for CIFAR-10 the tail of ``data_batch_5``: 45k/5k), and
        train the rest.  If ``valid_size >= N`` the last 10% (at least one image) is valid.
        ``'final'`` returns ``(train, test)``: the whole training set and the test set.
    synthetic_size : int
        Number of synthetic training images.
    image_size : int
        Side of the (square) images; CIFAR-10 is always 32.
    valid_size : int
        Size of the validation tail for ``split='search'``.
    download : bool
        For CIFAR-10 only: if the files are missing, try to fetch them with torchvision.
    seed : int
        Seed of the synthetic data and of the image-folder shuffle.

    Returns
    -------
    first, second : ImageTensors
        Both normalised with the mean/std of ``first`` (the training part).

    Raises
    ------
    DataError
        Unknown dataset or split, missing or unreadable data, too few images or classes.
    """
    _check_request(dataset, data_dir, split=split, valid_size=valid_size, image_size=image_size,
                   synthetic_size=synthetic_size)
    if dataset == 'cifar10':
        train, test = _load_cifar10(Path(data_dir).expanduser().absolute(), download)
    elif dataset == 'imagefolder':
        images, labels, classes, test_images, test_labels = _load_imagefolder(
            Path(data_dir).expanduser().absolute(), image_size, seed)
        train = ImageTensors(images, labels, classes)
        test = ImageTensors(test_images, test_labels, classes, mean=train.mean, std=train.std)
    else:
        train, test = _load_synthetic(synthetic_size, image_size, seed, with_test=split == 'final')
    if split == 'search':
        return _search_split(train, valid_size)
    return train, test


def _check_request(dataset: str, data_dir, *, split: str, valid_size: int, image_size: int,
                   synthetic_size: int) -> None:
    """Refuse an unknown dataset or split and impossible sizes before reading anything."""
    if split not in ('search', 'final'):
        raise DataError(f"unknown split {split!r} (expected 'search' or 'final')")
    if split == 'search' and valid_size < 1:
        raise DataError(f'valid_size must be at least 1, got {valid_size}')
    if image_size < 1:
        raise DataError(f'image_size must be at least 1, got {image_size}')
    if dataset not in ('cifar10', 'imagefolder', 'synthetic'):
        raise DataError(f'unknown dataset {dataset!r} '
                        f"(expected 'cifar10', 'imagefolder' or 'synthetic')")
    if dataset in ('cifar10', 'imagefolder') and data_dir is None:
        raise DataError(f'--dataset {dataset} needs a data folder')
    if dataset == 'cifar10' and image_size != 32:
        raise DataError(f'CIFAR-10 images are 32x32; image size {image_size} is not supported')
    if dataset == 'synthetic' and synthetic_size < 1:
        raise DataError(f'synthetic_size must be at least 1, got {synthetic_size}')


def _load_synthetic(count: int, image_size: int, seed: int, *, with_test: bool
                    ) -> tuple[ImageTensors, ImageTensors | None]:
    """``count`` random uint8 images ``[3, image_size, image_size]`` with random labels in 0..9
    (CIFAR-10 class names), drawn from a ``torch.Generator`` seeded with ``seed``; with
    ``with_test``, a test set of ``max(1, count // 5)`` images drawn after them."""
    generator = torch.Generator().manual_seed(seed)
    train = ImageTensors(*_synthetic(count, image_size, generator), CIFAR10_CLASSES)
    if not with_test:
        return train, None
    test_images, test_labels = _synthetic(max(1, count // 5), image_size, generator)
    return train, ImageTensors(test_images, test_labels, CIFAR10_CLASSES, mean=train.mean, std=train.std)


# --------------------------------------------------------------------------------------------
# Minibatches
# --------------------------------------------------------------------------------------------

def host_to_device(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``values`` (drawn on the CPU) on ``device``, without making the CPU wait for the GPU.

    Into CUDA the copy is asynchronous and starts from pinned memory: from pageable memory the
    driver may stage it synchronously with the GPU queue, which would take away the CPU's lead
    that CUDA graphs rely on (``shared/device/REVIEW.md``, finding 8). PyTorch's pinned-memory
    cache keeps the block until the copy is done. (non_blocking is safe into an accelerator, not
    for a copy back to the CPU.)
    """
    if device.type == 'cpu':
        return values.to(device)
    if device.type == 'cuda' and values.device.type == 'cpu':
        values = values.pin_memory()
    return values.to(device, non_blocking=True)


class BatchLoader:
    """Iterate over normalised (and optionally augmented) minibatches of an in-memory set.

    The data is moved to ``device`` once, here; every batch is then gathered, augmented
    and normalised with vectorised tensor ops on that device.

    Parameters
    ----------
    data : ImageTensors
        The images to serve.
    batch_size : int
        Images per batch; the last batch of a pass may be smaller unless ``drop_last``.
    shuffle : bool
        Draw a new permutation for every pass.
    augment : bool
        Training augmentation (ENAS / CIFAR): zero-pad 4 pixels, take a random crop of the
        original size (offsets drawn per image), flip horizontally with probability 1/2 (per
        image), then normalise.
    cutout : int
        Side in pixels of the cutout square (0 = off; applied whenever > 0, independently
        of ``augment``).  One square per image, its centre uniform over the image, clipped at
        the border, set to 0 after normalisation (DeVries & Taylor, 2017).
    drop_last : bool
        Drop the last, incomplete batch of each pass.
    device : torch.device or str, optional
        Where the data and the batches live; ``None`` keeps the data where it is.
    generator : torch.Generator, optional
        Source of all randomness (permutations, crops, flips, cutout).  Without it the
        global torch RNG is used (the CPU one, also when ``device`` is CUDA: random numbers
        are drawn on the CPU and copied over), so restoring ``torch.get_rng_state()``
        replays the same batches.
    infinite : bool
        Start a new pass whenever one ends, forever.

    Notes
    -----
    ``len(loader)`` is the number of batches in one pass, also when ``infinite``.
    Iterating yields ``(x, y)``: float32 ``[B, C, H, W]`` and int64 ``[B]`` on ``device``.
    """

    PAD = 4

    def __init__(self, data: ImageTensors, batch_size: int, *, shuffle: bool, augment: bool,
                 cutout: int = 0, drop_last: bool = False,
                 device: torch.device | str | None = None,
                 generator: torch.Generator | None = None, infinite: bool = False):
        if batch_size < 1:
            raise ValueError(f'batch_size must be at least 1, got {batch_size}')
        if cutout < 0:
            raise ValueError(f'cutout must be >= 0, got {cutout}')
        self.dataset = data.to(device) if device is not None else data
        self.device = self.dataset.images.device
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.cutout = cutout
        self.drop_last = drop_last
        self.generator = generator
        self.infinite = infinite
        if infinite and len(self) == 0:
            raise ValueError(f'infinite loader over {len(data)} images with batch size '
                             f'{batch_size} and drop_last would yield nothing')
        # (x / 255 - mean) / std  ==  x * scale + shift
        std = torch.tensor(self.dataset.std, dtype=torch.float32, device=self.device)
        mean = torch.tensor(self.dataset.mean, dtype=torch.float32, device=self.device)
        self._scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
        self._shift = (-mean / std).view(1, -1, 1, 1)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    # Random numbers are drawn where the generator lives (the CPU for the global RNG)
    # and then copied to the data's device.
    def _rand_device(self) -> torch.device:
        return self.generator.device if self.generator is not None else torch.device('cpu')

    def _randint(self, high: int, size: tuple[int, ...]) -> torch.Tensor:
        values = torch.randint(0, high, size, generator=self.generator,
                               device=self._rand_device())
        return self._to_device(values)

    def _to_device(self, values: torch.Tensor) -> torch.Tensor:
        return host_to_device(values, self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from self._one_pass()
            if not self.infinite:
                return

    def _one_pass(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator, device=self._rand_device())
            order = self._to_device(order)
        else:
            order = torch.arange(n, device=self.device)
        for b in range(len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self._make_batch(self.dataset.images[index]), self.dataset.labels[index]

    def _make_batch(self, images: torch.Tensor) -> torch.Tensor:
        if self.augment:
            images = self._crop_and_flip(images)
        x = images.to(torch.float32) * self._scale + self._shift
        if self.cutout > 0:
            x = self._apply_cutout(x)
        return x

    def _crop_and_flip(self, images: torch.Tensor) -> torch.Tensor:
        """Zero-pad, random crop and random horizontal flip of a uint8 batch, per image."""
        b, c, h, w = images.shape
        p = self.PAD
        padded = images.new_zeros(b, c, h + 2 * p, w + 2 * p)
        padded[:, :, p:p + h, p:p + w] = images
        offsets = self._randint(2 * p + 1, (b, 2))          # (dy, dx) in 0..2p
        flip = self._randint(2, (b,)).bool()
        rows = offsets[:, :1] + torch.arange(h, device=self.device)   # [B, H]
        cols = offsets[:, 1:] + torch.arange(w, device=self.device)   # [B, W]
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        batch = torch.arange(b, device=self.device).view(b, 1, 1, 1)
        channel = torch.arange(c, device=self.device).view(1, c, 1, 1)
        return padded[batch, channel, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]

    def _apply_cutout(self, x: torch.Tensor) -> torch.Tensor:
        """Zero one ``cutout`` x ``cutout`` square per image (clipped at the borders)."""
        b, _, h, w = x.shape
        top = self._randint(h, (b, 1)) - self.cutout // 2    # centre - size // 2
        left = self._randint(w, (b, 1)) - self.cutout // 2
        ys = torch.arange(h, device=self.device)
        xs = torch.arange(w, device=self.device)
        in_rows = (ys >= top) & (ys < top + self.cutout)      # [B, H]
        in_cols = (xs >= left) & (xs < left + self.cutout)    # [B, W]
        hole = in_rows[:, :, None] & in_cols[:, None, :]     # [B, H, W]
        return x.masked_fill(hole[:, None], 0.0)
