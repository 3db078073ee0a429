#!/usr/bin/env python3
"""Every numeric flag of search.py, retrain.py and ``python3 -m nni_enas.draw`` at 0, -1, nan, inf, 1e9, 1e18.

    python3 tests/flag_sweep.py                    # the table (Markdown), in a few seconds
    python3 tests/flag_sweep.py --run-legal 120    # also run every legal value for real (1 epoch each)
    python3 tests/flag_sweep.py --per-flag         # one row per flag

Each case is the command's ``main(argv)`` called in this process, in an empty temporary folder,
on tiny synthetic settings with the flag appended (argparse: the last value wins). The run stops
where work would start (``run.folder.start_run_dir``, the first write; for the drawing,
``draw.cli.draw_architecture``): a value that gets there passed every check and is *legal*. Integer flags
get 1e9 and 1e18 written as integers (``1000000000``), the harder case: ``1e9`` itself is not an
integer and is refused at once. With ``--run-legal`` each legal case also runs as a subprocess
(``--epochs 1``) under a time limit, and its exit status and stderr are reported.

``tests/test_limits.py`` runs the sweep and checks every row; the README's table was made with it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VALUES = ('0', '-1', 'nan', 'inf', '1e9', '1e18')
AS_INTEGER = {'1e9': str(10**9), '1e18': str(10**18)}
COMMON = ['--dataset', 'synthetic', '--synthetic-size', '64', '--batch-size', '16', '--channels', '4',
          '--device', 'cpu', '--epochs', '1', '--output', 'run']
BASE = {
    'search.py': ['--search-for', 'macro', *COMMON, '--layers', '2', '--ctrl-steps', '1', '--ctrl-steps-aggregate', '2',
                  '--num-candidates', '2'],
    'retrain.py': ['--arc', 'paper-micro', *COMMON, '--layers', '3'],
    'draw': ['paper-micro', '-o', 'drawing.png'],
}


class _Legal(BaseException):
    """Raised where work would start: every check passed."""


@dataclass
class Case:
    command: str
    flag: str
    value: str            # as typed (integers spelled out)
    status: int | str     # exit status, or 'legal'
    stderr: list[str]
    wrote: list[str]
    ran: str = ''         # with --run-legal: how the real run ended

    @property
    def ok(self) -> bool:
        """Refused with one line and nothing written, or legal (and, if run, not a traceback)."""
        if self.status == 'legal':
            return 'Traceback' not in self.ran
        return self.status == 2 and len(self.stderr) == 1 and self.stderr[0].startswith('error: ') and not self.wrote


def _commands():
    import retrain
    import search
    from nni_enas import draw
    return {'search.py': (search.main, search.build_parser()), 'retrain.py': (retrain.main, retrain.build_parser()),
            'draw': (draw.main, draw.build_parser())}


def numeric_flags(parser: argparse.ArgumentParser) -> list[tuple[str, str, type]]:
    """``(flag, dest, kind)`` of every option with a value check (``type=``), in the help's order."""
    from nni_enas.limits import FLAG_RANGES
    found = []
    for action in parser._actions:          # noqa: SLF001 - argparse has no public list of options
        if action.type is None or not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        kind = FLAG_RANGES[action.dest].kind if action.dest in FLAG_RANGES else None
        found.append((action.option_strings[-1], action.dest, kind))
    return found


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob('*'))


def run_case(command: str, main, flag: str, value: str) -> Case:
    """``main(base + [flag, value])`` in a fresh temporary folder, stopped where work would start."""
    from nni_enas.draw import cli as draw
    from nni_enas.run import folder as runfolder
    base = list(BASE[command])
    if flag == '--nodes':
        base[1] = 'micro'
    old_cwd = os.getcwd()
    stop = lambda *args, **kwargs: (_ for _ in ()).throw(_Legal())     # noqa: E731
    saved = runfolder.start_run_dir, draw.draw_architecture
    runfolder.start_run_dir = draw.draw_architecture = stop
    err = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            os.chdir(tmp)
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    status = main([*base, flag, value])
                except _Legal:
                    status = 'legal'
            wrote = _files(Path(tmp))
        finally:
            os.chdir(old_cwd)
            runfolder.start_run_dir, draw.draw_architecture = saved
    return Case(command, flag, value, status, [line for line in err.getvalue().splitlines() if line.strip()], wrote)


def sweep(values=VALUES) -> list[Case]:
    """Every numeric flag of the three commands at every value."""
    cases = []
    for command, (main, parser) in _commands().items():
        for flag, _, kind in numeric_flags(parser):
            for value in values:
                typed = AS_INTEGER.get(value, value) if kind is int else value
                cases.append(run_case(command, main, flag, typed))
    return cases


def run_for_real(case: Case, timeout: float) -> str:
    """Run a legal case as a subprocess (one epoch); ``'exit 0'``, ``'exit 1: error: ...'``, ``'timeout'``..."""
    script = {'search.py': [str(ROOT / 'search.py')], 'retrain.py': [str(ROOT / 'retrain.py')],
              'draw': ['-m', 'nni_enas.draw']}[case.command]
    base = list(BASE[case.command])
    if case.flag == '--nodes':
        base[1] = 'micro'
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            proc = subprocess.run([sys.executable, *script, *base, case.flag, case.value], cwd=tmp, env=env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f'still running after {timeout:g} s (stopped)'
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if 'Traceback' in proc.stderr:
        return f'exit {proc.returncode}: Traceback ... {lines[-1][:100]}'
    errors = [line for line in lines if line.startswith('error:')]
    return f'exit {proc.returncode}' + (f': {errors[0][:100]}' if errors else '')


def table(cases: list[Case]) -> str:
    rows = ['| command | flag | value | exit | stderr lines | wrote anything | first stderr line / real run |',
            '| --- | --- | --- | --- | --- | --- | --- |']
    for c in cases:
        note = c.ran if c.status == 'legal' else (c.stderr[0] if c.stderr else '')
        note = note.replace(' (see search.py -h)', '').replace(' (see retrain.py -h)', '')
        note = note.replace(' (see python3 -m nni_enas.draw -h)', '').replace('|', '\\|')
        rows.append(f'| {c.command} | {c.flag} | {c.value} | {c.status} | {len(c.stderr)} | '
                    f'{"yes" if c.wrote else "no"} | {note} |')
    return '\n'.join(rows)


def table_per_flag(cases: list[Case]) -> str:
    """One row per flag: each value's exit status (``legal``, or how the real run ended), and one refusal."""
    rows = ['| command | flag | ' + ' | '.join(VALUES)
            + ' | stderr lines of refusals | wrote anything | refusal at the largest value |',
            '| --- | --- | ' + ' | '.join('---' for _ in VALUES) + ' | --- | --- | --- |']
    groups: dict[tuple[str, str], list[Case]] = {}
    for c in cases:
        groups.setdefault((c.command, c.flag), []).append(c)
    for (command, flag), group in groups.items():
        cells = [str(c.status) if c.status != 'legal' else ('legal: ' + c.ran.split(':')[0] if c.ran else 'legal')
                 for c in group]
        refused = [c for c in group if c.status != 'legal']
        lines = sorted({len(c.stderr) for c in refused})
        note = refused[-1].stderr[0] if refused and refused[-1].stderr else ''
        for suffix in (' (see search.py -h)', ' (see retrain.py -h)', ' (see python3 -m nni_enas.draw -h)'):
            note = note.replace(suffix, '')
        rows.append(f'| {command} | {flag} | ' + ' | '.join(cells) + f' | {",".join(map(str, lines))} | '
                    f'{"yes" if any(c.wrote for c in group) else "no"} | {note.replace("|", "/")} |')
    return '\n'.join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--run-legal', type=float, metavar='SECONDS', default=None,
                   help='also run each legal case for real, each under this time limit')
    p.add_argument('--per-flag', action='store_true', help='one row per flag instead of one per case')
    args = p.parse_args()
    import torch
    torch.set_num_threads(1)
    cases = sweep()
    if args.run_legal:
        for case in cases:
            if case.status == 'legal':
                case.ran = run_for_real(case, args.run_legal)
    print(table_per_flag(cases) if args.per_flag else table(cases))
    bad = [c for c in cases if not c.ok]
    legal = sum(c.status == 'legal' for c in cases)
    print(f'\n{len(cases)} cases: {len(cases) - legal - len(bad)} refused with one line and nothing written, '
          f'{legal} legal, {len(bad)} not clean')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
