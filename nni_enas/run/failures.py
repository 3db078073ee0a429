"""Run-time failures that are the machine's, not the code's: out of memory and a full disk.

They reach us in many shapes: ``torch.OutOfMemoryError`` (CUDA), a ``RuntimeError`` from the
CPU allocator (``DefaultCPUAllocator: can't allocate memory``), ``MemoryError``, ``OSError``
with ``ENOSPC`` or ``EDQUOT``, and wrapped in other exceptions on the way out (``torch.save``
turns a full disk into ``RuntimeError: unexpected pos``, with the ``OSError`` as its context).
:func:`resource_failure` looks along the whole chain and says what happened and what to change,
so the commands can print one ``error:`` line (exit 1) instead of chained tracebacks. Every file
the commands write is written whole or not at all (:mod:`nni_enas.files`), so what is on disk
after such a failure is the last good checkpoint and export.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass

import torch

__all__ = ['ResourceFailure', 'resource_failure']

_CPU_ALLOCATOR = ("can't allocate memory", 'DefaultCPUAllocator: not enough memory', 'Cannot allocate memory')
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_LOWER = 'lower --batch-size (or --channels / --layers)'


@dataclass
class ResourceFailure:
    """What ran out (``'memory'`` or ``'disk'``), in a few words (``what``) with the details the
    error gave (``detail``, may be empty), and what the user should change (``advice``)."""

    kind: str
    what: str
    detail: str
    advice: str

    def line(self, when: str = '') -> str:
        """``'out of memory in epoch 2/5 (it asked for 4.0 GB)'`` (``when``: ``'in epoch 2/5'``)."""
        return ' '.join(filter(None, [self.what, when])) + (f' ({self.detail})' if self.detail else '')


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _asked(exc: BaseException) -> str:
    """``'it asked for 4,000.0 GB'`` from the allocator's message, or nothing."""
    found = re.search(r'[Tt]ried to allocate (\d+) bytes', str(exc))
    if found:
        return f'it asked for {int(found[1]) / 1e9:,.1f} GB'
    found = re.search(r'[Tt]ried to allocate ([\d.]+ [KMGT]iB)', str(exc))
    return f'it asked for {found[1]}' if found else ''


def resource_failure(exc: BaseException) -> ResourceFailure | None:
    """The out-of-memory or disk-full failure behind ``exc`` (anywhere along its chain), or ``None``."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            where = f' writing {e.filename}' if e.filename else ''
            return ResourceFailure('disk', 'the disk is full', f'{e.strerror or "no space left"}{where}',
                                   'free some space on that disk')
        if isinstance(e, torch.OutOfMemoryError):
            return ResourceFailure('memory', 'out of GPU memory', _asked(e), _LOWER)
        if isinstance(e, MemoryError) or (isinstance(e, RuntimeError)
                                          and any(s in str(e) for s in _CPU_ALLOCATOR)):
            return ResourceFailure('memory', 'out of memory', _asked(e), _LOWER)
    return None
