"""Run folders: where a run's files go, the settings it started with, resuming it, its lock.

A run folder holds ``args.json`` (the command and its settings, :func:`save_settings`),
``checkpoints/last.ckpt`` (:mod:`nni_enas.run.checkpoints`), ``tensorboard/`` and the command's
results. Both commands go through the same three steps:

1. :func:`check_run_dir` (before any work, nothing written): which folder, whether it resumes,
   whether every output can be written (:func:`check_writable`);
2. the data is loaded (bad data stops here, still with nothing written);
3. :func:`start_run_dir`: create (or reopen) the folder, take its lock (:class:`RunLock`, held
   until the process ends: a second run on the same folder is refused), write the settings.

``--resume`` takes the settings back from ``args.json`` (:func:`resume_settings`).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from nni_enas.run.checkpoints import checkpoint_epoch, checkpoint_path, last_checkpoint
from nni_enas.run.cli import fail
from nni_enas.files import write_json_atomic

__all__ = ['SETTINGS_FILE', 'LOCK_FILE', 'RunLock', 'check_writable', 'check_run_dir', 'start_run_dir',
           'new_run_dir', 'save_settings', 'load_settings', 'resume_settings', 'resume_note']

SETTINGS_FILE = 'args.json'
LOCK_FILE = 'run.lock'


# --------------------------------------------------------------------------------------------
# the lock
# --------------------------------------------------------------------------------------------

class RunLock:
    """An exclusive lock on a run folder (``fcntl.flock`` on ``run.lock``), held until :meth:`release`
    or the process ends (the kernel drops it even on SIGKILL).

    The file says who holds it (pid, host, start time), for the refusal a second run gets.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self._file = None

    def acquire(self) -> RunLock:
        """Take the lock or fail (:class:`~nni_enas.run.cli.CliError`) naming its holder."""
        f = open(self.path, 'a+')
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or 'another process'
            f.close()
            fail(f'{self.path.parent} is in use by another run ({holder}); wait for it to end or pick another '
                 f'--output')
        f.seek(0)
        f.truncate()
        f.write(f'pid {os.getpid()} on {socket.gethostname()} since {time.strftime("%Y-%m-%d %H:%M:%S")}\n')
        f.flush()
        self._file = f
        return self

    @staticmethod
    def check_free(run_dir: str | os.PathLike) -> None:
        """Fail now if another process holds the lock of ``run_dir``; creates nothing."""
        if (Path(run_dir) / LOCK_FILE).is_file():
            RunLock(run_dir).acquire().release()

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


# --------------------------------------------------------------------------------------------
# checks before any work
# --------------------------------------------------------------------------------------------

def check_writable(path: str | os.PathLike, flag: str, *, folder: bool) -> None:
    """Fail (exit 2) unless ``path`` can be created or rewritten: a ``folder`` (``--output``) or a file
    (``--export``). Nothing is created."""
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            fail(f'{flag} {path}: it is a file, not a folder')
        if not folder and path.is_dir():
            fail(f'{flag} {path}: it is a folder; name a file')
        where = path if folder else path.parent
    else:
        where = path.parent if path.parent != path else path
        while not where.exists() and where.parent != where:
            where = where.parent
        if not where.is_dir():
            fail(f'{flag} {path}: {where} is a file, not a folder')
    if not os.access(where, os.W_OK | os.X_OK):
        fail(f'{flag} {path}: cannot write in {where} (permission denied)')


def check_run_dir(args: argparse.Namespace, command: str) -> tuple[Path | None, Path | None, int]:
    """``(run folder, checkpoint to resume from, epochs it completed)`` from ``--resume``/``--output``.

    Fails (exit 2) on a finished run without more ``--epochs``, an ``--output`` that already
    holds a run, a folder another run is using, or one that cannot be written. The folder is
    ``None`` when a new one is to be created under ``runs/``; nothing is created here. A folder
    whose run stopped before its first checkpoint may be started again with the same ``--output``.
    """
    if args.resume:
        run_dir = Path(args.resume)
        checkpoint = last_checkpoint(run_dir, command)
        done = checkpoint_epoch(checkpoint)
        if done >= args.epochs:
            verb = 'search' if command == 'search.py' else 'train'
            fail(f'{run_dir} already completed {done} of {args.epochs} epochs; pass --epochs N '
                 f'(N > {done}) to {verb} longer')
        check_writable(run_dir, '--resume', folder=True)
        RunLock.check_free(run_dir)
        return run_dir, checkpoint, done
    if args.output:
        run_dir = Path(args.output)
        check_writable(run_dir, '--output', folder=True)
        if run_dir.is_dir():        # a run still going says so (not "continue it with --resume")
            RunLock.check_free(run_dir)
        if (run_dir / SETTINGS_FILE).exists() and checkpoint_path(run_dir).exists():
            fail(f'{run_dir} already holds a run; continue it with --resume {run_dir} or pick another --output')
        return run_dir, None, 0
    return None, None, 0


# --------------------------------------------------------------------------------------------
# starting the run
# --------------------------------------------------------------------------------------------

def new_run_dir(prefix: str, root: str | os.PathLike = 'runs') -> Path:
    """Create and return ``root/<prefix>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... if taken)."""
    root = Path(root)
    stamp = time.strftime('%Y%m%d-%H%M%S')
    for n in range(1, 1000):
        path = root / (f'{prefix}-{stamp}' if n == 1 else f'{prefix}-{stamp}-{n}')
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    fail(f'cannot create a new run folder under {root}')


def start_run_dir(args: argparse.Namespace, argv: Sequence[str] | None, run_dir: Path | None,
                  checkpoint: Path | None, *, command: str, prefix: str, root: str | os.PathLike
                  ) -> tuple[Path, RunLock]:
    """Create the run folder (``run_dir``, or a new ``root/<prefix>-<time>``) or reopen a resumed
    one, lock it, and write its settings (``args.output`` becomes the folder). Returns the
    folder and its lock (keep it: released when the process ends)."""
    if checkpoint is not None:
        lock = RunLock(run_dir).acquire()
        save_settings(run_dir, args, argv, command=command, resumed_after=checkpoint_epoch(checkpoint))
        return run_dir, lock
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        run_dir = new_run_dir(prefix, root)
    lock = RunLock(run_dir).acquire()
    if checkpoint_path(run_dir).exists():       # another run got there between our check and the lock
        lock.release()
        fail(f'{run_dir} already holds a run; continue it with --resume {run_dir} or pick another --output')
    args.output = str(run_dir)
    save_settings(run_dir, args, argv, command=command)
    return run_dir, lock


def save_settings(run_dir: str | os.PathLike, args: argparse.Namespace | dict,
                  argv: Sequence[str] | None = None, *, command: str | None = None,
                  resumed_after: int | None = None) -> Path:
    """Write ``run_dir/args.json`` (atomically): ``{"command": ..., "settings": vars(args), "argv": [...]}``.

    ``argv`` is the command line (default ``sys.argv[1:]``). With ``resumed_after`` (epochs done
    when resuming) the file is updated instead: new settings, the original ``argv`` kept, and
    ``{"argv": ..., "after_epoch": n}`` appended to its ``"resumed"`` list.
    """
    settings = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    argv = list(sys.argv[1:] if argv is None else argv)
    path = Path(run_dir) / SETTINGS_FILE
    content: dict[str, Any] = {'command': command, 'settings': settings, 'argv': argv}
    if resumed_after is not None:
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        content['argv'] = old.get('argv', argv)
        content['resumed'] = [*old.get('resumed', []), {'argv': argv, 'after_epoch': resumed_after}]
    write_json_atomic(path, content)
    return path


def _read_settings_file(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / SETTINGS_FILE
    if not Path(run_dir).is_dir():
        fail(f'{run_dir}: no such run folder')
    try:
        with open(path) as f:
            content = json.load(f)
        settings = content['settings']
    except FileNotFoundError:
        fail(f'{run_dir} is not a run folder (no {SETTINGS_FILE})')
    except (OSError, ValueError, KeyError, TypeError) as exc:
        fail(f'{path}: cannot read the run settings ({exc})')
    if not isinstance(settings, dict):
        fail(f'{path}: "settings" is not an object')
    return content


def load_settings(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``settings`` saved by :func:`save_settings` (:class:`~nni_enas.run.cli.CliError` if missing or unreadable)."""
    return _read_settings_file(run_dir)['settings']


def _command_of(content: dict[str, Any]) -> str | None:
    if content.get('command'):
        return content['command']
    settings = content['settings']       # folders written before args.json named the command
    return 'search.py' if 'search_for' in settings else 'retrain.py' if 'arc' in settings else None


def resume_settings(args: argparse.Namespace, explicit: set[str], may_change: set[str],
                    command: str) -> argparse.Namespace:
    """The settings of ``command``'s run in ``args.resume`` (it must have a checkpoint), with the
    options in ``may_change`` that the user typed (``explicit``) taken from ``args``; any other
    typed option that differs from the run's fails (:class:`~nni_enas.run.cli.CliError`)."""
    run_dir = Path(args.resume)
    content = _read_settings_file(run_dir)
    owner = _command_of(content)
    if owner != command:
        hint = (f'; to retrain what it found: python3 retrain.py --arc {run_dir / "exported.json"}'
                if owner == 'search.py' else '')
        fail(f'{run_dir} is a {owner or "unknown"} run folder, not a {command} one: resume it with python3 '
             f'{owner} --resume {run_dir}{hint}' if owner else f'{run_dir} is not a {command} run folder')
    saved = content['settings']
    last_checkpoint(run_dir, command)     # fail now if there is none
    changeable = resume_note(may_change)
    for dest in sorted(explicit - may_change):
        if dest in saved and getattr(args, dest) != saved[dest]:
            flag = '--' + dest.replace('_', '-')
            fail(f'--resume keeps the run\'s settings: {flag} {getattr(args, dest)} differs from the '
                 f'run\'s {saved[dest]} (only {changeable} may change)')
    merged = argparse.Namespace(**{**vars(args), **saved})
    for dest in explicit & may_change:
        setattr(merged, dest, getattr(args, dest))
    merged.resume = str(run_dir)
    merged.output = str(run_dir)
    return merged


def resume_note(may_change: set[str]) -> str:
    """``--device, --epochs and --export``: the options of ``may_change`` as a user types them."""
    flags = ['--' + d.replace('_', '-') for d in sorted(may_change - {'resume'})]
    return ', '.join(flags[:-1]) + ' and ' + flags[-1] if len(flags) > 1 else ''.join(flags)
