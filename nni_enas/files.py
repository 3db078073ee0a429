"""Files written whole or not at all, with the permissions any other file of the user gets.

Every result file (``args.json``, ``exported.json``, ``result.json``, checkpoints) is written
to a temporary file in the same folder and renamed over its target, so a reader (or a run
killed with SIGKILL) never sees half a file. ``tempfile.mkstemp`` creates the temporary file
0600; :func:`atomic_write` gives it the mode a plain ``open(path, 'w')`` would (``0666`` less
the umask), or keeps the mode of the file it replaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = ['atomic_write', 'write_json_atomic', 'write_bytes_atomic', 'new_file_mode']


def new_file_mode() -> int:
    """The mode ``open(path, 'w')`` gives a new file: ``0o666`` less the process's umask."""
    umask = os.umask(0)     # the only portable way to read it is to set it, then put it back
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, binary: bool = False, sync: bool = False,
                 make_parents: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; rename it over ``path`` when the block ends.

    If the block raises, the temporary file is removed and ``path`` is left as it was. The file
    gets the mode of the one it replaces, or :func:`new_file_mode`. ``sync`` flushes it to disk
    before the rename (checkpoints: a power cut must not leave an empty file under the name).
    With ``make_parents=False`` a missing folder is an error (``FileNotFoundError``), not created.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = new_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, 'wb' if binary else 'w') as f:
            yield f
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON with :func:`atomic_write`."""
    with atomic_write(path) as f:
        json.dump(data, f, indent=2)
        f.write('\n')


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, make_parents: bool = True) -> None:
    """Write ``data`` with :func:`atomic_write` (images, for instance)."""
    with atomic_write(path, binary=True, make_parents=make_parents) as f:
        f.write(data)
