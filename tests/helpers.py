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
