"""Fetching a data set into a folder, leaving nothing behind when it fails."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

__all__ = ['download_into']


def download_into(target: Path, fetch: Callable[[Path], None]) -> str:
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
