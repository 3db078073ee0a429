#!/usr/bin/env python3
"""Our ENAS search epoch vs. the two peers (NNI 2.10 EnasTrainer, NNI 3.0 strategy.ENAS), alternately.

One invocation runs, for every repetition and every search space, one search epoch of each
implementation, each in its own subprocess, one after the other (never two at once):

    ours    -- the command given by --ours-cmd (default: bench/search_epoch.py with this project's python)
    nni210  -- <peer dir>/peer_nni210/bench_epoch.py in the NNI 2.10 venv
    nni30   -- <peer dir>/peer_nni30/bench_epoch.py in the NNI 3.0 venv
               (macro with --skip-impl gates: NNI 3.0 cannot path-sample InputChoice(n_chosen=None))

The order of the implementations is rotated by one position every repetition (rep 1: ours, nni210,
nni30; rep 2: nni210, nni30, ours; ...) so that none of them always runs first/last.  The LAST JSON
line of every run's stdout is its result; it is printed on stdout as one JSON line tagged with
impl/space/rep as soon as the run ends, and a summary table of medians and ours/theirs ratios
follows at the end.  Each run's stdout and stderr are kept in --out (stderr never reaches the console).

The peer dir (the peer scripts, not part of this repository) is --peer-dir, else $ENAS_PEER_BENCH,
else bench/peer-bench/ in this repository (a copy or a link). Build the peer venvs first (once,
~5 minutes):  bash <peer dir>/setup_peers.sh
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import signal
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)

from common import env_facts, last_json_line, median, median_batch_img_per_s, print_json  # noqa: E402

IMPLS = ('ours', 'nni210', 'nni30')
THEIRS = ('nni210', 'nni30')
LABELS = {'ours': 'ours (NNI 3.0 plugin)', 'nni210': 'NNI 2.10 EnasTrainer', 'nni30': 'NNI 3.0 strategy.ENAS'}
# Where the peer scripts are when --peer-dir is not given.
PEER_DIR_ENV = 'ENAS_PEER_BENCH'
DEFAULT_PEER_DIR = os.path.join(BENCH_DIR, 'peer-bench')
# Our ENAS on the peers' own NNI 3.0 spaces: the very networks the peers train (equal settings).
DEFAULT_OURS_CMD = ('{python} bench/search_epoch.py --network peers --search-for {space} --samples {samples} '
                    '--batch-size {batch_size} --device cpu')


def _default_venv_python(env_var: str, name: str) -> str:
    venv = os.environ.get(env_var) or os.path.join(os.path.expanduser('~'), '.cache', 'enas-peers', name)
    return os.path.join(venv, 'bin', 'python')


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Placeholders in --ours-cmd: {python} {space} {samples} {batch_size} {rep} {out} '
               '(out = the results folder).  The command is split with shlex and run from the repository '
               'root without a shell.  Example with a different interpreter and more reps:\n'
               '  python3 bench/peers.py --reps 3 --spaces micro --ours-cmd '
               '"{python} bench/search_epoch.py --network peers --search-for {space} --samples {samples} --batch-size {batch_size} --device cpu"')
    p.add_argument('--spaces', default='macro,micro',
                   help='comma-separated search spaces, each in {macro, micro} (default: %(default)s)')
    p.add_argument('--samples', type=int, default=1024,
                   help='synthetic samples per epoch, half child training, half controller (default: %(default)s, '
                        'as the peers)')
    p.add_argument('--batch-size', type=int, default=64, help='batch size of every run (default: %(default)s, as the peers)')
    p.add_argument('--reps', type=int, default=2,
                   help='repetitions; each rep runs every impl once per space (default: %(default)s)')
    p.add_argument('--impls', default=','.join(IMPLS),
                   help='comma-separated subset of {ours, nni210, nni30} to run (default: %(default)s)')
    p.add_argument('--ours-cmd', default=DEFAULT_OURS_CMD,
                   help='command template for our benchmark; its last stdout line must be a JSON metrics dict '
                        'with at least epoch_s, child_train_s, child_train_img_per_s (default: "%(default)s")')
    p.add_argument('--python', default=sys.executable,
                   help='interpreter substituted for {python} in --ours-cmd (default: this one, %(default)s)')
    p.add_argument('--nni210-python', default=_default_venv_python('VENV_NNI210', 'nni210'),
                   help='interpreter of the NNI 2.10 peer venv (default: $VENV_NNI210/bin/python or '
                        '~/.cache/enas-peers/nni210/bin/python, here %(default)s)')
    p.add_argument('--nni30-python', default=_default_venv_python('VENV_NNI30', 'nni30'),
                   help='interpreter of the NNI 3.0 peer venv (default: $VENV_NNI30/bin/python or '
                        '~/.cache/enas-peers/nni30/bin/python, here %(default)s)')
    p.add_argument('--peer-dir', default=os.environ.get(PEER_DIR_ENV) or DEFAULT_PEER_DIR,
                   help=f'folder holding peer_nni210/, peer_nni30/ and setup_peers.sh (default: ${PEER_DIR_ENV} if '
                        f'set, else bench/peer-bench in this repository; here %(default)s)')
    p.add_argument('--nni30-macro-skip-impl', choices=['gates', 'inputchoice'], default='gates',
                   help='--skip-impl passed to the NNI 3.0 peer for macro; "inputchoice" is the faithful space '
                        'and is known to fail on NNI 3.0 (default: %(default)s)')
    p.add_argument('--threads', type=int, default=0,
                   help='if > 0: pass --threads N to the peers and set OMP_NUM_THREADS/MKL_NUM_THREADS=N for every '
                        'run, ours included (default: %(default)s = leave torch\'s default, 2 on this VM)')
    p.add_argument('--timeout', type=float, default=1800,
                   help='seconds after which one run is killed and reported as an error (default: %(default)s)')
    p.add_argument('--out', default=None,
                   help='results folder: results.jsonl, summary.md, meta.json and <impl>_<space>_r<rep>.{jsonl,err} '
                        'per run (default: bench/results/<YYYYmmdd-HHMMSS>/)')
    p.add_argument('--dry-run', action='store_true', help='print the commands that would run and exit')
    args = p.parse_args(argv)

    args.spaces = [s.strip() for s in args.spaces.split(',') if s.strip()]
    bad = [s for s in args.spaces if s not in ('macro', 'micro')]
    if bad or not args.spaces:
        p.error(f'--spaces: unknown space(s) {bad}; choose from macro, micro')
    args.impls = [s.strip() for s in args.impls.split(',') if s.strip()]
    bad = [s for s in args.impls if s not in IMPLS]
    if bad or not args.impls:
        p.error(f'--impls: unknown impl(s) {bad}; choose from {", ".join(IMPLS)}')
    if args.reps < 1 or args.samples < 2 or args.batch_size < 1:
        p.error('--reps, --samples (>= 2) and --batch-size must be positive')
    if args.out is None:
        args.out = os.path.join(BENCH_DIR, 'results', _dt.datetime.now().strftime('%Y%m%d-%H%M%S'))
    return args


# --------------------------------------------------------------------------- commands

def build_command(impl: str, space: str, rep: int, args: argparse.Namespace) -> list:
    if impl == 'ours':
        try:
            text = args.ours_cmd.format(python=shlex.quote(args.python), space=space, samples=args.samples,
                                        batch_size=args.batch_size, rep=rep, out=shlex.quote(args.out))
        except (KeyError, IndexError) as e:
            raise SystemExit(f'--ours-cmd: unknown placeholder {e}; allowed: python space samples batch_size rep out')
        return shlex.split(text)
    py = args.nni210_python if impl == 'nni210' else args.nni30_python
    script = os.path.join(args.peer_dir, 'peer_' + impl, 'bench_epoch.py')
    cmd = [py, script, '--search-for', space, '--samples', str(args.samples), '--batch-size', str(args.batch_size)]
    if impl == 'nni30' and space == 'macro':
        cmd += ['--skip-impl', args.nni30_macro_skip_impl]
    if args.threads > 0:
        cmd += ['--threads', str(args.threads)]
    return cmd


def peer_missing(impl: str, args: argparse.Namespace) -> str | None:
    """A one-line reason why this peer cannot run, or None."""
    if impl == 'ours':
        return None
    py = args.nni210_python if impl == 'nni210' else args.nni30_python
    script = os.path.join(args.peer_dir, 'peer_' + impl, 'bench_epoch.py')
    if not os.path.isfile(script):
        return (f'{impl}: peer script {script} not found (pass --peer-dir or set ${PEER_DIR_ENV}); '
                f'skipping {impl}')
    if not (os.path.isfile(py) and os.access(py, os.X_OK)):
        setup = os.path.join(args.peer_dir, 'setup_peers.sh')
        return (f'{impl}: peer venv interpreter {py} not found -- build it with `bash {setup}` '
                f'or pass --{impl}-python; skipping {impl}')
    return None


def schedule(args: argparse.Namespace, impls: list) -> list:
    """(rep, space, impl) in run order: per rep, per space, the impls rotated by (rep - 1)."""
    runs = []
    for rep in range(1, args.reps + 1):
        k = (rep - 1) % len(impls) if impls else 0
        order = impls[k:] + impls[:k]
        for space in args.spaces:
            for impl in order:
                runs.append((rep, space, impl))
    return runs


# --------------------------------------------------------------------------- running

def _tail(path: str, n: int = 3, width: int = 300) -> str:
    try:
        with open(path, errors='replace') as f:
            lines = [ln.rstrip() for ln in f.read().splitlines() if ln.strip()]
    except OSError:
        return ''
    return ' / '.join(lines[-n:])[-width:]


def run_one(impl: str, space: str, rep: int, cmd: list, args: argparse.Namespace, env: dict) -> dict:
    stem = os.path.join(args.out, f'{impl}_{space}_r{rep}')
    out_path, err_path = stem + '.jsonl', stem + '.err'
    rec = {'impl': impl, 'space': space, 'rep': rep}
    t0 = time.perf_counter()
    rc = None
    timed_out = False
    with open(out_path, 'wb') as fo, open(err_path, 'wb') as fe:
        try:
            proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, cwd=REPO_ROOT, env=env,
                                    start_new_session=True)
        except OSError as e:
            rec.update({'error': f'could not start: {e}', 'rc': None, 'wall_s': 0.0})
            return rec
        try:
            rc = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            rc = proc.wait()
        except BaseException:  # Ctrl-C: do not leave the child running
            _kill_group(proc)
            proc.wait()
            raise
    rec['rc'] = rc
    rec['wall_s'] = round(time.perf_counter() - t0, 3)
    with open(out_path, errors='replace') as f:
        metrics = last_json_line(f.read())
    if metrics is not None:
        # our tags win over keys of the same name in the metrics line
        rec = {**rec, **{k: v for k, v in metrics.items() if k not in rec}}
    if timed_out:
        rec['error'] = f'timeout after {args.timeout:g} s'
    elif metrics is None:
        rec['error'] = f'exit {rc}, no JSON line on stdout' + (f'; stderr: {_tail(err_path)}' if _tail(err_path) else '')
    elif 'error' in metrics:
        rec['error'] = str(metrics['error'])
    elif rc != 0:
        rec['error'] = f'exit {rc}' + (f'; stderr: {_tail(err_path)}' if _tail(err_path) else '')
    elif not isinstance(metrics.get('epoch_s'), (int, float)):
        rec['error'] = 'metrics line has no numeric epoch_s'
    return rec


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


# --------------------------------------------------------------------------- summary

def _fmt(x, nd=2) -> str:
    if x is None:
        return '-'
    if isinstance(x, float):
        return f'{x:.{nd}f}'
    return str(x)


def _cell(text: str, width: int = 200) -> str:
    """Text safe inside one markdown table cell."""
    return ' '.join(str(text).replace('|', '/').split())[:width]


def _ratio(a, b):
    return a / b if a is not None and b else None


def summarize(records: list, args: argparse.Namespace, skipped: dict) -> str:
    """Markdown tables: per space and impl the medians over successful runs, then ours/theirs ratios."""
    lines = []
    stats = {}
    for space in args.spaces:
        for impl in args.impls:
            recs = [r for r in records if r['space'] == space and r['impl'] == impl]
            ok = [r for r in recs if 'error' not in r]
            mb = [median_batch_img_per_s(r.get('child_train_batch_s') or [], r.get('batch_size') or args.batch_size)
                  for r in ok if r.get('child_train_batch_s')]
            stats[space, impl] = {
                'runs': len(recs), 'ok': len(ok),
                'errors': sorted({r['error'] for r in recs if 'error' in r}),
                'epoch_s': median(r.get('epoch_s') for r in ok),
                'child_train_s': median(r.get('child_train_s') for r in ok),
                'img_per_s': median(r.get('child_train_img_per_s') for r in ok),
                'mb_img_per_s': median(x for x in mb if x is not None),
                'peak_rss_mib': median(r.get('peak_rss_mib') for r in ok),
            }

    lines.append(f'samples={args.samples} batch_size={args.batch_size} reps={args.reps} '
                 f'(medians over successful runs; "median-batch img/s" = batch size / median child-training batch time)')
    lines.append('')
    lines.append('| space | impl | ok/runs | epoch s | child-train s | child-train img/s | median-batch img/s | peak RSS MiB |')
    lines.append('| --- | --- | --- | --- | --- | --- | --- | --- |')
    for space in args.spaces:
        for impl in args.impls:
            s = stats[space, impl]
            name = LABELS[impl] + (' (macro gates)' if impl == 'nni30' and space == 'macro'
                                   and args.nni30_macro_skip_impl == 'gates' else '')
            if impl in skipped:
                lines.append(f'| {space} | {name} | skipped | {skipped[impl]} | | | | |')
                continue
            if s['ok'] == 0:
                err = _cell('; '.join(s['errors'])) or 'no runs'
                lines.append(f'| {space} | {name} | 0/{s["runs"]} | ERROR: {err} | | | | |')
                continue
            note = f' ({len(s["errors"])} error kind(s): {_cell("; ".join(s["errors"]), 120)})' if s['errors'] else ''
            lines.append(f'| {space} | {name} | {s["ok"]}/{s["runs"]}{note} | {_fmt(s["epoch_s"])} | '
                         f'{_fmt(s["child_train_s"])} | {_fmt(s["img_per_s"], 1)} | {_fmt(s["mb_img_per_s"], 1)} | '
                         f'{_fmt(s["peak_rss_mib"], 0)} |')

    if 'ours' in args.impls and any(t in args.impls for t in THEIRS):
        lines.append('')
        lines.append('Ratios ours/theirs of child-training throughput (> 1: ours faster), and theirs/ours of epoch s '
                     '(> 1: ours faster):')
        lines.append('')
        lines.append('| space | vs | img/s ratio | median-batch img/s ratio | epoch-time ratio |')
        lines.append('| --- | --- | --- | --- | --- |')
        for space in args.spaces:
            o = stats[space, 'ours']
            for t in THEIRS:
                if t not in args.impls:
                    continue
                th = stats[space, t]
                if t in skipped or 'ours' in skipped:
                    lines.append(f'| {space} | {LABELS[t]} | skipped | skipped | skipped |')
                    continue
                if o['ok'] == 0 or th['ok'] == 0:
                    who = 'ours' if o['ok'] == 0 else t
                    lines.append(f'| {space} | {LABELS[t]} | error ({who}) | error ({who}) | error ({who}) |')
                    continue
                lines.append(f'| {space} | {LABELS[t]} | {_fmt(_ratio(o["img_per_s"], th["img_per_s"]))} | '
                             f'{_fmt(_ratio(o["mb_img_per_s"], th["mb_img_per_s"]))} | '
                             f'{_fmt(_ratio(th["epoch_s"], o["epoch_s"]))} |')
    return '\n'.join(lines)


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    args = parse_args(argv)
    skipped = {}
    for impl in args.impls:
        why = peer_missing(impl, args)
        if why:
            print(why, file=sys.stderr, flush=True)
            skipped[impl] = 'venv missing' if 'venv' in why else 'script missing'
    runnable = [i for i in args.impls if i not in skipped]
    plan = [(rep, space, impl, build_command(impl, space, rep, args)) for rep, space, impl in schedule(args, runnable)]

    if args.dry_run:
        for rep, space, impl, cmd in plan:
            print(f'rep {rep} {space:5s} {impl:6s}: {shlex.join(cmd)}')
        return 0

    os.makedirs(args.out, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    if args.threads > 0:
        env['OMP_NUM_THREADS'] = env['MKL_NUM_THREADS'] = str(args.threads)
    meta = {'argv': sys.argv, 'args': {k: v for k, v in vars(args).items()}, 'skipped': skipped,
            'started': _dt.datetime.now().isoformat(timespec='seconds'), 'harness_env': env_facts(),
            'commands': [{'rep': r, 'space': s, 'impl': i, 'cmd': c} for r, s, i, c in plan]}
    with open(os.path.join(args.out, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=1)
    print(f'{len(plan)} runs -> {args.out} (stderr of each run in <impl>_<space>_r<rep>.err)', file=sys.stderr, flush=True)

    records = []
    interrupted = False
    with open(os.path.join(args.out, 'results.jsonl'), 'a') as results:
        for n, (rep, space, impl, cmd) in enumerate(plan, 1):
            print(f'[{n}/{len(plan)}] rep {rep} {space} {impl} ...', file=sys.stderr, flush=True)
            try:
                rec = run_one(impl, space, rep, cmd, args, env)
            except KeyboardInterrupt:
                print('interrupted: summarising the runs finished so far', file=sys.stderr, flush=True)
                interrupted = True
                break
            records.append(rec)
            print_json(rec)
            print_json(rec, file=results)

    table = summarize(records, args, skipped)
    with open(os.path.join(args.out, 'summary.md'), 'w') as f:
        f.write(table + '\n')
    print()
    print(table, flush=True)
    print(f'\nresults in {args.out}', file=sys.stderr, flush=True)
    return 130 if interrupted else 0


if __name__ == '__main__':
    sys.exit(main())
