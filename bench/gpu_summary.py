"""The summary of one ``bench/gpu_checks.sh`` call: what each part did and the figures it gave.

Reads the call's folder (``parts.tsv``, ``NN-PART.log``, ``memory.csv``, ``env.txt``), prints one
block per part and writes ``summary.json`` beside them. A part stopped by its time limit still
shows the epochs it finished (the per-epoch lines of ``search_epoch.py``).

    python3 bench/gpu_summary.py bench/results/gpu
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

# README targets on one H100/H200 (the review's plan, ../shared/device/REVIEW.md)
TARGETS = {'macro_epoch_s': 11.6, 'micro_epoch_s': 24.0, 'paper-micro_img_per_s': 2400,
           'paper-macro_img_per_s': 3000, 'ours_over_hand_written': 0.9, 'nni210_over_ours': 3.0}


def json_lines(text: str) -> list[dict]:
    found = []
    for line in text.splitlines():
        if line.startswith('{'):
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return found


def read_parts(folder: Path) -> list[dict[str, Any]]:
    """The rows of ``parts.tsv`` with each part's log text."""
    rows = []
    with open(folder / 'parts.tsv', newline='') as f:
        for row in csv.DictReader(f, delimiter='\t', fieldnames=['part', 'status', 'seconds', 'limit', 'why']):
            if row['part'] == 'part':
                continue
            logs = sorted(folder.glob(f'[0-9][0-9]-{row["part"]}.log'))
            row['log'] = logs[-1].read_text(errors='replace') if logs else ''
            rows.append(row)
    return rows


def search_figures(lines: list[dict]) -> dict[str, Any]:
    """A search_epoch.py part: its epochs, the projection of a paper epoch, the graph counts."""
    epochs = {line['epoch']: line for line in lines if 'epoch' in line and 'seconds' in line}
    metrics = next((line for line in reversed(lines) if line.get('impl') == 'nni-enas'), {})
    figures: dict[str, Any] = {f'{role}_epoch_s': e['seconds'] for role, e in epochs.items()}
    if 'warmup' in epochs and 'clean' in epochs:
        figures['capture_and_warmup_s'] = epochs['warmup']['seconds'] - epochs['clean']['seconds']
    last = epochs.get('clean') or (list(epochs.values())[-1] if epochs else {})
    for key in ('child_s', 'controller_s'):
        figures[key] = last.get(key)
    for key in ('projected_paper_epoch_s', 'projected_paper_hours', 'child_step_s', 'child_steps',
                'paper_child_steps', 'projected_paper_child_img_per_s', 'overhead', 'peak_cuda_mib',
                'peak_cuda_reserved_mib', 'graphed_modules', 'graph_wrappers', 'graph_captures',
                'graph_replays', 'graph_broken', 'graph_recaptures', 'epoch_s'):
        if key in metrics:
            figures[key] = metrics[key]
    if not metrics and last:      # stopped early: the counts of its last finished epoch
        figures.update({k: v for k, v in last.items() if k.startswith('graph_')})
    figures['finished'] = bool(metrics)
    return figures


def retrain_figures(lines: list[dict]) -> dict[str, Any]:
    figures = {}
    for line in lines:
        if line.get('summary'):
            arc = line['arc']
            figures[f'{arc}_ours_img_per_s'] = line.get('ours_img_per_s')
            figures[f'{arc}_hand_written_img_per_s'] = line.get('hand_written_img_per_s')
            figures[f'{arc}_ours_over_hand_written'] = line.get('ours_over_hand_written')
    return figures


def test_figures(log: str) -> dict[str, Any]:
    counts = {}
    for line in reversed(log.splitlines()):
        if re.search(r'\d+ (passed|failed|skipped|error)', line) and ' in ' in line:
            counts = {word: int(n) for n, word in re.findall(r'(\d+) (passed|failed|skipped|errors?|deselected)', line)}
            break
    failed = [line for line in log.splitlines() if line.startswith(('FAILED', 'ERROR'))]
    notes = [line.strip() for line in log.splitlines() if 'after a failed capture on torch' in line]
    return {'counts': counts, 'failed': failed[:12], 'notes': notes[:2]}


def part_figures(row: dict[str, Any]) -> dict[str, Any]:
    part, log = row['part'], row['log']
    lines = json_lines(log)
    if part == 'tests':
        figures = test_figures(log)
    elif part.startswith('search-') or part.endswith('-ours'):
        figures = search_figures(lines)
    elif part.startswith('retrain'):
        figures = retrain_figures(lines)
    elif part == 'rnn':                # bench/rnn_search.py's metrics line: its times and rates
        figures = {k: v for k, v in lines[-1].items() if k.endswith(('_s', '_per_s'))} if lines else {}
    elif part.endswith('-nni210'):
        figures = {'epoch_s': lines[-1].get('epoch_s')} if lines and 'epoch_s' in lines[-1] else {}
    else:
        figures = {}
    figures['capture_failures'] = log.count('CUDA graph capture of')
    return figures


def peer_ratios(results: dict[str, dict]) -> dict[str, float]:
    """NNI 2.10's epoch over ours (> 1: ours faster): against our warm-up epoch (both cold, ours
    with its captures) and against our clean epoch (flatters ours by the peer's cold start)."""
    ratios = {}
    for space in ('macro', 'micro'):
        ours = results.get(f'peers-{space}-ours', {}).get('figures', {})
        peer = results.get(f'peers-{space}-nni210', {}).get('figures', {}).get('epoch_s')
        for role in ('warmup', 'clean'):
            if peer and ours.get(f'{role}_epoch_s'):
                ratios[f'{space}_nni210_over_ours_{role}'] = peer / ours[f'{role}_epoch_s']
    return ratios


def memory_figures(folder: Path) -> dict[str, Any]:
    path = folder / 'memory.csv'
    if not path.is_file():
        return {}
    with open(path, newline='') as f:
        rows = [r for r in csv.DictReader(f) if (r.get('used_mib') or '').isdigit()]
    if not rows:
        return {}
    used = [int(r['used_mib']) for r in rows]
    return {'samples': len(used), 'first_used_mib': used[0], 'max_used_mib': max(used),
            'total_mib': int(rows[0]['total_mib']) if (rows[0].get('total_mib') or '').isdigit() else None}


def summarise(folder: Path, dry_run: bool = False) -> dict[str, Any]:
    results = {}
    for row in read_parts(folder):
        results[row['part']] = {'status': row['status'], 'seconds': int(row['seconds'] or 0),
                                'limit': int(row['limit'] or 0), 'why': row.get('why') or None,
                                'figures': part_figures(row) if row['status'] != 'skipped' else {}}
    env = (folder / 'env.txt').read_text().strip() if (folder / 'env.txt').is_file() else ''
    return {'dry_run': dry_run, 'env': env, 'parts': results, 'peer_ratios': peer_ratios(results),
            'memory': memory_figures(folder), 'targets': TARGETS,
            'total_s': sum(r['seconds'] for r in results.values())}


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f'{value:.4g}'
    return str(value)


def print_summary(summary: dict[str, Any], file=None) -> None:
    say = lambda *a: print(*a, file=file or sys.stdout)  # noqa: E731
    say('== summary' + (' (CPU dry run: the figures check the plumbing, they measure nothing)'
                        if summary['dry_run'] else ''))
    for line in summary['env'].splitlines():
        say(f'   {line}')
    for part, result in summary['parts'].items():
        status = result['status'] if result['status'] == 'skipped' else f"exit {result['status']}"
        timed_out = ' (time limit)' if result['status'] in ('124', '137') else ''
        say(f"-- {part}: {status}{timed_out}, {result['seconds']} s of {result['limit']} s"
            + (f" ({result['why']})" if result['why'] else ''))
        figures = dict(result['figures'])
        for line in figures.pop('failed', []) + figures.pop('notes', []):
            say(f'   {line}')
        shown = {k: v for k, v in figures.items() if v is not None and v != {}}
        if shown:
            say('   ' + ', '.join(f'{k} {_short(v)}' for k, v in shown.items()))
    if summary['peer_ratios']:
        say('-- NNI 2.10 epoch / ours (> 1: ours faster): '
            + ', '.join(f'{k} {_short(v)}' for k, v in summary['peer_ratios'].items()))
    if summary['memory']:
        say('-- memory (' + ('host' if summary['dry_run'] else 'GPU, nvidia-smi') + '): '
            + ', '.join(f'{k} {v}' for k, v in summary['memory'].items()))
    say(f"-- parts' seconds: {summary['total_s']}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('folder', type=Path, help="the call's output folder ($OUT)")
    p.add_argument('--dry-run', type=int, default=0, help='1: a --cpu-dry-run call')
    args = p.parse_args(argv)
    if not (args.folder / 'parts.tsv').is_file():
        print(f'error: no parts.tsv in {args.folder}', file=sys.stderr)
        return 2
    summary = summarise(args.folder, bool(args.dry_run))
    # temp file then rename (nni_enas.files would import torch: seconds, for a summary)
    tmp = args.folder / 'summary.json.tmp'
    tmp.write_text(json.dumps(summary, indent=1) + '\n')
    os.replace(tmp, args.folder / 'summary.json')
    print_summary(summary)
    return 0


if __name__ == '__main__':
    sys.exit(main())
