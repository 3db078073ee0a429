"""Small helpers shared by the scripts in ``bench/``.

Import from a script in this folder with::

    import os, sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import print_json, peak_rss_mib, env_facts

Nothing here imports torch at module level, so the harness (``bench/peers.py``) can use it
without paying torch's import time; the helpers that need torch import it when called.

Conventions for benchmark scripts (what ``bench/peers.py`` relies on):

* stdout carries JSON lines only, one ``print_json`` call per line; the LAST line is the metrics dict
  (or ``{"error": "...", ...}`` together with a non-zero exit code).  Library chatter goes to stderr --
  wrap noisy code in ``stdout_to_stderr()``.
* Times in seconds (``*_s``), memory in MiB (``*_mib``), throughput in images per second (``*_img_per_s``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any, Iterable, Iterator, Optional, Sequence


# --------------------------------------------------------------------------- output

def _json_default(obj: Any) -> Any:
    """Fallback for json.dumps: tensors/numpy scalars -> Python numbers, everything else -> str."""
    item = getattr(obj, 'item', None)
    if callable(item):
        try:
            return item()
        except Exception:
            pass
    tolist = getattr(obj, 'tolist', None)
    if callable(tolist):
        try:
            return tolist()
        except Exception:
            pass
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


_saved_stdouts: list = []  # stack kept by stdout_to_stderr()


def print_json(obj: dict, file=None) -> None:
    """Print ``obj`` as ONE compact JSON line and flush.  Default target: ``sys.stdout`` -- or, inside
    ``stdout_to_stderr()``, the stdout that was current before it.  NaN/inf become null so every line
    is strict JSON; tensors and numpy scalars become numbers."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    if file is not None:
        out = file
    elif _saved_stdouts:
        out = _saved_stdouts[-1]
    else:
        out = sys.stdout
    out.write(json.dumps(clean(obj), separators=(',', ':'), default=_json_default) + '\n')
    out.flush()


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything printed to ``sys.stdout`` inside the block to stderr (Python-level only;
    ``print_json`` still writes to the real stdout)."""
    _saved_stdouts.append(sys.stdout)
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = _saved_stdouts.pop()


def last_json_line(text: str) -> Optional[dict]:
    """The last line of ``text`` that parses as a JSON object, or None."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line.startswith('{'):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


# --------------------------------------------------------------------------- memory

def peak_rss_mib(children: bool = False) -> float:
    """Peak resident set size so far in MiB (``getrusage().ru_maxrss``, KiB on Linux).
    ``children=True``: the largest peak among waited-for child processes instead."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    kib = resource.getrusage(who).ru_maxrss
    if sys.platform == 'darwin':  # bytes there
        kib /= 1024.0
    return round(kib / 1024.0, 1)


def current_rss_mib() -> float:
    """Current resident set size in MiB (from /proc/self/statm; NaN where unavailable)."""
    try:
        with open('/proc/self/statm') as f:
            pages = int(f.read().split()[1])
        return round(pages * os.sysconf('SC_PAGE_SIZE') / 2 ** 20, 1)
    except (OSError, ValueError, IndexError):
        return float('nan')


# --------------------------------------------------------------------------- timing

class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.s`` (seconds, perf_counter).  ``sync`` is an optional
    callable run before reading the clock at both ends (e.g. ``torch.cuda.synchronize``)."""

    def __init__(self, sync=None):
        self.sync = sync
        self.s = float('nan')

    def __enter__(self) -> 'Stopwatch':
        if self.sync is not None:
            self.sync()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.sync is not None:
            self.sync()
        self.s = time.perf_counter() - self._t0


def median(xs: Iterable[float]) -> Optional[float]:
    """Median of the finite numbers in ``xs`` (None if there are none)."""
    vals = [float(x) for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool)
            and math.isfinite(float(x))]
    return statistics.median(vals) if vals else None


def median_batch_img_per_s(batch_s: Sequence[float], batch_size: int) -> Optional[float]:
    """``batch_size / median(batch_s)``: throughput that ignores the occasional slow batch."""
    m = median(batch_s or [])
    if not m or not batch_size:
        return None
    return batch_size / m


# --------------------------------------------------------------------------- data

def synthetic_cifar(n: int, seed: int = 0):
    """``(x, y)``: ``n`` CIFAR-10-shaped samples, x ~ N(0, 1) of shape (n, 3, 32, 32) float32, y uniform
    in [0, 10), both drawn from one ``torch.Generator`` seeded with ``seed`` (x first, then y) -- the
    same tensors as the peer benchmarks (bench/peers.py --peer-dir) use, so labels and batches match."""
    import torch
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


# --------------------------------------------------------------------------- environment

def _version(mod_name: str) -> Optional[str]:
    try:
        mod = __import__(mod_name)
    except Exception:
        return None
    return str(getattr(mod, '__version__', '?'))


def env_facts(device: Any = None, modules: Sequence[str] = ('nni', 'pytorch_lightning', 'numpy')) -> dict:
    """Facts that explain a timing: python/torch versions, torch intra/inter-op threads, CPU count
    (and the CPUs this process may use), the device and, for CUDA, its name.  ``modules``: extra
    packages whose ``__version__`` to record (missing ones are left out)."""
    facts: dict = {
        'python': platform.python_version(),
        'platform': platform.platform(terse=True),
        'cpu_count': os.cpu_count(),
    }
    try:
        facts['cpus_usable'] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'CUDA_VISIBLE_DEVICES'):
        if os.environ.get(var) is not None:
            facts[var] = os.environ[var]
    try:
        import torch
    except Exception:  # harness-side use without torch
        torch = None
    if torch is not None:
        facts['torch'] = torch.__version__
        facts['torch_threads'] = torch.get_num_threads()
        facts['torch_interop_threads'] = torch.get_num_interop_threads()
        facts['cuda_available'] = torch.cuda.is_available()
        if device is not None:
            dev = torch.device(device)
            facts['device'] = str(dev)
            if dev.type == 'cuda' and torch.cuda.is_available():
                facts['device_name'] = torch.cuda.get_device_name(dev)
    elif device is not None:
        facts['device'] = str(device)
    for name in modules:
        v = _version(name)
        if v is not None:
            facts[name] = v
    return facts
