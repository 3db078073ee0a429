"""Tests of nni_enas.data.images: readers, splits and the on-device batch loader (no network)."""

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from nni_enas.data.images import BatchLoader, DataError, ImageTensors, host_to_device, load_data, read_cifar10

from helpers import CLASSES, write_cifar, write_png  # shared with tests/test_search.py


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------

def np_stats(images):
    x = np.asarray(images, dtype=np.float64) / 255.0
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))


def make_set(n=10, c=3, h=32, w=32, value=None, mean=None, std=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    if value is None:
        images = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)
    else:
        images = torch.full((n, c, h, w), value, dtype=torch.uint8)
    return ImageTensors(images, torch.arange(n), [str(i) for i in range(n)], mean=mean, std=std)


# ---------------------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------------------

def test_read_cifar10_shapes_labels_and_pixel_order(tmp_path):
    written = write_cifar(tmp_path)
    train, test = read_cifar10(tmp_path)
    assert train.images.shape == (100, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (10, 3, 32, 32)
    assert train.labels.dtype == torch.int64 and train.labels.shape == (100,)
    assert train.classes == CLASSES and test.classes == CLASSES
    expected = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert np.array_equal(train.images.numpy(), expected)
    assert np.array_equal(train.labels.numpy(),
                          np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)]))
    assert np.array_equal(test.images.numpy(), written["test_batch"][0])
    assert np.array_equal(test.labels.numpy(), written["test_batch"][1])
    assert train.images[0, :, 5, 7].tolist() == [200, 100, 50]
    # statistics from the training images only; the test set reuses them
    mean, std = np_stats(expected)
    assert np.allclose(train.mean, mean, atol=1e-6) and np.allclose(train.std, std, atol=1e-6)
    assert test.mean == train.mean and test.std == train.std


def test_read_cifar10_accepts_the_batches_folder_itself(tmp_path):
    write_cifar(tmp_path)
    train, test = read_cifar10(tmp_path / "cifar-10-batches-py")
    assert len(train) == 100 and len(test) == 10


def test_cifar_search_split_takes_tail_of_last_batch(tmp_path):
    written = write_cifar(tmp_path)
    train, valid = load_data("cifar10", tmp_path, split="search", valid_size=5, download=False)
    assert len(train) == 95 and len(valid) == 5
    assert np.array_equal(valid.images.numpy(), written["data_batch_5"][0][-5:])
    assert np.array_equal(valid.labels.numpy(), written["data_batch_5"][1][-5:])
    assert np.array_equal(train.images[:20].numpy(), written["data_batch_1"][0])
    assert np.array_equal(train.images[80:].numpy(), written["data_batch_5"][0][:15])
    # mean/std of the 95 training images only, shared by the valid split
    all_train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    mean, std = np_stats(all_train[:95])
    assert np.allclose(train.mean, mean, atol=1e-6) and np.allclose(train.std, std, atol=1e-6)
    assert valid.mean == train.mean and valid.std == train.std


def test_cifar_search_split_falls_back_to_ten_percent(tmp_path):
    written = write_cifar(tmp_path)
    train, valid = load_data("cifar10", tmp_path, split="search", download=False)  # 5000 > 100
    assert len(train) == 90 and len(valid) == 10
    assert np.array_equal(valid.images.numpy(), written["data_batch_5"][0][-10:])


def test_cifar_final_split_is_all_train_and_test(tmp_path):
    written = write_cifar(tmp_path)
    train, test = load_data("cifar10", tmp_path, split="final", download=False)
    assert len(train) == 100 and len(test) == 10
    assert np.array_equal(test.images.numpy(), written["test_batch"][0])
    assert test.mean == train.mean


def test_cifar_missing_gives_instructions(tmp_path):
    with pytest.raises(DataError) as info:
        load_data("cifar10", tmp_path / "data", split="final", download=False)
    message = str(info.value)
    assert "cifar-10-batches-py" in message and "--dataset synthetic" in message
    assert str(tmp_path / "data") in message and "\n" not in message


def test_cifar_failed_download_says_why_and_leaves_nothing(tmp_path, monkeypatch):
    import torchvision

    def offline(root, train, download):
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / "cifar-10-python.tar.gz").write_bytes(b"half an archive")
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "mine.txt").write_text("user file")
    for data_dir in (tmp_path / "new" / "data", tmp_path / "kept"):
        with pytest.raises(DataError) as info:
            load_data("cifar10", data_dir, split="final")
        message = str(info.value)
        assert "download failed (OSError: <urlopen error [Errno -3] Temporary failure" in message, message
        assert "\n" not in message and "--dataset synthetic" in message
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept", "mine.txt"]   # nothing of ours left


def test_cifar_corrupt_file_is_named(tmp_path):
    write_cifar(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        read_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch"):
        read_cifar10(tmp_path)


def test_unknown_dataset_and_split():
    with pytest.raises(DataError, match="mnist"):
        load_data("mnist", None, split="final")
    with pytest.raises(DataError, match="split"):
        load_data("synthetic", None, split="train")


# ---------------------------------------------------------------------------------------
# image folders
# ---------------------------------------------------------------------------------------

COLORS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "fox": (0, 0, 255)}


def write_folder(root, per_class=4):
    for c, color in COLORS.items():
        for i in range(per_class):
            write_png(root / c / f"{i}.png", (10 + 7 * i, 20 + 3 * i), color)


def test_imagefolder_single_folder(tmp_path):
    write_folder(tmp_path, per_class=4)  # 12 images: 1 held out as test (10%)
    train, test = load_data("imagefolder", tmp_path, split="final", image_size=16, download=False)
    assert train.classes == ["cat", "dog", "fox"] and test.classes == train.classes
    assert len(train) == 11 and len(test) == 1
    assert train.images.shape == (11, 3, 16, 16) and train.images.dtype == torch.uint8
    everything = torch.cat([train.labels, test.labels])
    assert sorted(everything.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    # every image is its class's solid colour, whatever its original size
    for images, labels in [(train.images, train.labels), (test.images, test.labels)]:
        for img, label in zip(images, labels):
            color = COLORS[train.classes[label]]
            assert torch.equal(img, torch.tensor(color, dtype=torch.uint8).view(3, 1, 1).expand(3, 16, 16))
    # seeded shuffle: not in class order, and reproducible
    again, _ = load_data("imagefolder", tmp_path, split="final", image_size=16)
    assert torch.equal(again.labels, train.labels)
    assert train.labels.tolist() != sorted(train.labels.tolist())
    # search split: valid is the tail of the training part (the test image is never in it)
    s_train, s_valid = load_data("imagefolder", tmp_path, split="search", image_size=16, valid_size=3)
    assert len(s_train) == 8 and len(s_valid) == 3
    assert torch.equal(torch.cat([s_train.labels, s_valid.labels]), train.labels)


def test_imagefolder_train_val_layout_and_grayscale(tmp_path):
    write_folder(tmp_path / "train", per_class=2)
    write_png(tmp_path / "val" / "dog" / "a.png", (8, 8), 128, mode="L")
    train, test = load_data("imagefolder", tmp_path, split="final", image_size=8)
    assert len(train) == 6 and len(test) == 1
    assert test.labels.tolist() == [train.classes.index("dog")]
    assert test.images.shape == (1, 3, 8, 8) and bool((test.images == 128).all())


def test_imagefolder_train_folder_without_val_holds_out_a_tail(tmp_path):
    write_folder(tmp_path / "train", per_class=4)
    train, test = load_data("imagefolder", tmp_path, split="final", image_size=8)
    assert train.classes == ["cat", "dog", "fox"]  # not a class named 'train'
    assert len(train) == 11 and len(test) == 1


@pytest.mark.parametrize("held_out", ["val", "test"])
def test_imagefolder_class_folders_beside_val_use_it_as_the_test_set(tmp_path, held_out):
    # before: val/ (or test/) was one more class and the test set a 10% tail of everything
    write_folder(tmp_path, per_class=2)
    write_png(tmp_path / held_out / "fox" / "a.png", (8, 8), (0, 0, 255))
    write_png(tmp_path / held_out / "cat" / "b.png", (8, 8), (255, 0, 0))
    train, test = load_data("imagefolder", tmp_path, split="final", image_size=8)
    assert train.classes == ["cat", "dog", "fox"] and len(train) == 6     # every training image, no held-out tail
    assert sorted(test.labels.tolist()) == [train.classes.index("cat"), train.classes.index("fox")]
    assert torch.equal(test.images[test.labels == train.classes.index("fox")][0, :, 0, 0],
                       torch.tensor([0, 0, 255], dtype=torch.uint8))


def test_imagefolder_val_without_class_folders_is_refused(tmp_path):
    write_folder(tmp_path, per_class=2)
    write_png(tmp_path / "val" / "a.png", (8, 8), (1, 2, 3))     # a class named 'val'? ambiguous: refused
    with pytest.raises(DataError, match=r"val holds no class folders.*rename it if it is a class"):
        load_data("imagefolder", tmp_path, split="final", image_size=8)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="data folder"):
        load_data("imagefolder", None, split="final")
    with pytest.raises(DataError, match="not found"):
        load_data("imagefolder", tmp_path / "missing", split="final")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError):
        load_data("imagefolder", tmp_path / "empty", split="final")
    (tmp_path / "noimages" / "cat").mkdir(parents=True)
    (tmp_path / "noimages" / "dog").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_data("imagefolder", tmp_path / "noimages", split="final")
    write_png(tmp_path / "one" / "cat" / "a.png", (5, 5), (1, 2, 3))
    write_png(tmp_path / "one" / "cat" / "b.png", (6, 5), (1, 2, 3))
    with pytest.raises(DataError, match="found 1 class"):
        load_data("imagefolder", tmp_path / "one", split="final")
    write_folder(tmp_path / "bad", per_class=1)
    (tmp_path / "bad" / "dog" / "broken.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="broken.png"):
        load_data("imagefolder", tmp_path / "bad", split="final")


# ---------------------------------------------------------------------------------------
# synthetic
# ---------------------------------------------------------------------------------------

def test_synthetic_shapes_and_determinism():
    train, test = load_data("synthetic", None, split="final", synthetic_size=50, image_size=12)
    assert train.images.shape == (50, 3, 12, 12) and train.images.dtype == torch.uint8
    assert test.images.shape == (10, 3, 12, 12)
    assert train.labels.dtype == torch.int64 and 0 <= int(train.labels.min()) <= int(train.labels.max()) <= 9
    assert train.classes == CLASSES
    again, again_test = load_data("synthetic", None, split="final", synthetic_size=50, image_size=12)
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    assert torch.equal(again_test.images, test.images)
    other, _ = load_data("synthetic", None, split="final", synthetic_size=50, image_size=12, seed=1)
    assert not torch.equal(other.images, train.images)
    s_train, s_valid = load_data("synthetic", None, split="search", synthetic_size=50, valid_size=20)
    assert len(s_train) == 30 and len(s_valid) == 20
    full, _ = load_data("synthetic", None, split="final", synthetic_size=50)
    assert torch.equal(s_valid.images, full.images[30:]) and torch.equal(s_train.images, full.images[:30])
    s_train, s_valid = load_data("synthetic", None, split="search", synthetic_size=50)
    assert len(s_train) == 45 and len(s_valid) == 5
    mean, std = np_stats(s_train.images.numpy())
    assert np.allclose(s_train.mean, mean, atol=1e-6) and s_valid.mean == s_train.mean


# ---------------------------------------------------------------------------------------
# ImageTensors and BatchLoader
# ---------------------------------------------------------------------------------------

def normalise(images, data):
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return (images.double() / 255 - mean) / std


def test_image_tensors_getitem_and_dataloader():
    data = make_set(6)
    x, y = data[2]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and int(y) == 2
    assert torch.allclose(x.double(), normalise(data.images[2:3], data)[0], atol=1e-5)
    xb, yb = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    assert xb.shape == (4, 3, 32, 32) and yb.tolist() == [0, 1, 2, 3]
    moved = data.to("cpu")
    assert torch.equal(moved.images, data.images) and moved.mean == data.mean


def test_loader_length_and_one_pass_covers_everything():
    data = make_set(50)
    loader = BatchLoader(data, 16, shuffle=True, augment=False)
    assert len(loader) == 4
    assert len(BatchLoader(data, 16, shuffle=True, augment=False, drop_last=True)) == 3
    batches = list(loader)
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(50))
    assert seen.tolist() != list(range(50))  # actually shuffled
    second = torch.cat([y for _, y in loader])
    assert second.tolist() != seen.tolist()  # a new permutation per pass
    for x, y in batches:  # each image comes with its own label
        assert torch.allclose(x.double(), normalise(data.images[y], data), atol=1e-5)
    dropped = torch.cat([y for _, y in BatchLoader(data, 16, shuffle=True, augment=False,
                                                    drop_last=True)])
    assert len(dropped) == 48 and len(set(dropped.tolist())) == 48


def test_loader_without_augment_is_plain_normalisation():
    data = make_set(10)
    x, y = next(iter(BatchLoader(data, 10, shuffle=False, augment=False, device="cpu")))
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and y.tolist() == list(range(10))
    assert torch.allclose(x.double(), normalise(data.images, data), atol=1e-5)


def test_same_rng_state_same_batches():
    data = make_set(20)

    def run(**kw):
        loader = BatchLoader(data, 8, shuffle=True, augment=True, cutout=6, **kw)
        return [(x.clone(), y.clone()) for x, y in loader]

    torch.manual_seed(123)
    first = run()
    torch.manual_seed(123)
    second = run()
    third = run()  # RNG moved on
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, third))
    # an explicit generator is used instead of the global RNG
    state = torch.get_rng_state()
    g1 = run(generator=torch.Generator().manual_seed(7))
    g2 = run(generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(g1, g2))


def test_augment_is_a_real_pad_crop_flip():
    torch.manual_seed(0)
    image = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    image[0, :, 10, 12] = 255
    data = ImageTensors(image.expand(64, -1, -1, -1).clone(), torch.zeros(64), ["a"],
                        mean=[0.5] * 3, std=[0.25] * 3)
    x, _ = next(iter(BatchLoader(data, 64, shuffle=False, augment=True)))
    assert x.shape == (64, 3, 32, 32)
    background, bright = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25
    flipped = 0
    shifts = set()
    for img in x:
        spots = (img[0] == bright).nonzero().tolist()
        assert len(spots) == 1  # the pixel never leaves the image: it moves at most 4 px
        (r, c), = spots
        assert torch.all(img[:, r, c] == bright)
        assert (img == background).sum() == 3 * 32 * 32 - 3
        assert abs(r - 10) <= 4
        if abs(c - 12) <= 4:
            shifts.add((r - 10, c - 12))
        else:
            assert abs(c - (31 - 12)) <= 4
            flipped += 1
    assert 0 < flipped < 64 and len(shifts) > 5


def test_augment_output_is_some_crop_of_the_padded_image():
    torch.manual_seed(1)
    data = make_set(8, h=12, w=12)
    x, y = next(iter(BatchLoader(data, 8, shuffle=True, augment=True)))
    padded = torch.nn.functional.pad(data.images.double(), (4, 4, 4, 4))
    for img, label in zip(x.double(), y):
        candidates = []
        for dy, dx in itertools.product(range(9), range(9)):
            crop = padded[label, :, dy:dy + 12, dx:dx + 12]
            candidates += [crop, crop.flip(-1)]
        assert any(torch.allclose(img, normalise(c[None], data)[0], atol=1e-5) for c in candidates)


def test_cutout_zeroes_one_square():
    torch.manual_seed(0)
    data = make_set(200, value=255, mean=[0.5] * 3, std=[0.25] * 3)  # normalised value 2.0
    x, _ = next(iter(BatchLoader(data, 200, shuffle=False, augment=False, cutout=8)))
    full_squares = 0
    for img in x:
        zero = img == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])
        assert torch.all(img[~zero] == 2.0)
        rows = zero[0].any(1).nonzero().flatten()
        cols = zero[0].any(0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert 1 <= h <= 8 and 1 <= w <= 8
        assert int(zero[0].sum()) == h * w  # a (clipped) rectangle
        assert rows[-1] - rows[0] + 1 == h and cols[-1] - cols[0] + 1 == w
        if 0 < rows[0] and rows[-1] < 31 and 0 < cols[0] and cols[-1] < 31:
            assert h == 8 and w == 8  # away from the borders: the full square
            full_squares += 1
    assert full_squares > 50
    clean, _ = next(iter(BatchLoader(data, 200, shuffle=False, augment=False)))
    assert torch.all(clean == 2.0)


def test_infinite_loader_keeps_going():
    data = make_set(10)
    loader = BatchLoader(data, 4, shuffle=True, augment=False, infinite=True)
    assert len(loader) == 3
    batches = list(itertools.islice(iter(loader), 9))  # three passes
    assert len(batches) == 9
    for p in range(3):
        labels = torch.cat([y for _, y in batches[3 * p:3 * p + 3]])
        assert sorted(labels.tolist()) == list(range(10))
    with pytest.raises(ValueError):
        BatchLoader(data, 20, shuffle=True, augment=False, drop_last=True, infinite=True)


class _HostValues:
    """A CPU tensor's stand-in that records what happens to it on the way to a device."""

    def __init__(self, log, pinned=False):
        self.log, self.pinned, self.device = log, pinned, torch.device('cpu')

    def pin_memory(self):
        self.log.append('pin')
        return _HostValues(self.log, pinned=True)

    def to(self, device, non_blocking=False):
        self.log.append(('to', str(device), non_blocking, self.pinned))
        return self


def test_random_numbers_reach_cuda_from_pinned_memory_without_blocking():
    """REVIEW finding 8: an async copy from pageable memory may wait for the GPU queue."""
    log = []
    host_to_device(_HostValues(log), torch.device('cuda', 0))
    assert log == ['pin', ('to', 'cuda:0', True, True)]
    log.clear()
    host_to_device(_HostValues(log), torch.device('cpu'))       # no pinning, nothing asynchronous
    assert log == [('to', 'cpu', False, False)]


def test_enas_trainer_pins_its_loaders_for_cuda_only():
    from nni_enas import EnasTrainer
    data = make_set(8)
    for pin in (True, False):
        loaders = EnasTrainer._loaders(data, 4, 0, pin_memory=pin)
        assert [loader.pin_memory for loader in loaders] == [pin, pin]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_loader_on_cuda():
    data = make_set(20)
    loader = BatchLoader(data, 8, shuffle=True, augment=True, cutout=4, device="cuda")
    x, y = next(iter(loader))
    assert x.is_cuda and y.is_cuda and x.shape == (8, 3, 32, 32)
    torch.manual_seed(3)
    a = [t.cpu() for batch in loader for t in batch]
    torch.manual_seed(3)
    b = [t.cpu() for batch in loader for t in batch]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    x, y = next(iter(BatchLoader(data, 20, shuffle=False, augment=False, device="cuda")))
    assert torch.allclose(x.cpu().double(), normalise(data.images, data), atol=1e-5)
