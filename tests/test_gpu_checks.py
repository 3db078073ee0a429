"""The one-call GPU script's plumbing (bench/gpu_checks.sh, bench/gpu_summary.py), on the CPU.

The whole ``--cpu-dry-run`` takes minutes; these check its pieces in seconds: every part's
command is one its script accepts, the parts come in the planned order with the planned sizes,
the budget guard skips what no longer fits and stops a part at its limit while the summary still
comes back, the summary reads the logs into figures, and a shortened paper epoch is projected
to a whole one.

Runtime: about 15 s on the 2-core dev machine (most of it one bash run that starts Python).
"""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))

import gpu_summary  # noqa: E402
import retrain_loop  # noqa: E402
import rnn_search  # noqa: E402
import search_epoch  # noqa: E402

SCRIPT = ROOT / 'bench' / 'gpu_checks.sh'
ORDER = ['tests', 'search-macro', 'search-micro', 'retrain', 'rnn', 'search-macro-eager', 'search-micro-eager',
         'retrain-eager', 'peers-macro-ours', 'peers-macro-nni210', 'peers-micro-ours', 'peers-micro-nni210']


def listed(tmp_path, *flags, env=None):
    """``gpu_checks.sh --list``: {part: argv}, with a fake peer folder and NNI 2.10 site."""
    peers = tmp_path / 'peer-bench'
    (peers / 'peer_nni30').mkdir(parents=True, exist_ok=True)
    (peers / 'peer_nni210').mkdir(exist_ok=True)
    (peers / 'peer_nni210' / 'bench_epoch.py').touch()
    (tmp_path / 'site' / 'nni210').mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, ENAS_PEER_BENCH=str(peers), DEVICE_SITE=str(tmp_path / 'site'), **(env or {}))
    done = subprocess.run(['bash', str(SCRIPT), '--list', *flags], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=30)
    assert done.returncode == 0, done.stderr
    return {part: shlex.split(command) for part, command in (line.split('\t') for line in done.stdout.splitlines())}


@pytest.mark.parametrize('dry', [False, True], ids=['gpu', 'cpu_dry_run'])
def test_every_part_runs_a_command_its_script_accepts(tmp_path, dry):
    parts = listed(tmp_path, *(['--cpu-dry-run'] if dry else []))
    assert list(parts) == ORDER
    for part, argv in parts.items():
        if argv[:3] == ['python3', '-m', 'pytest']:
            k = argv[argv.index('-k') + 1]
            assert k == 'gpu or loader_on_cuda'          # not "cuda": that selects the whole module
            assert all((ROOT / f).is_file() for f in argv if f.startswith('tests/'))
        elif argv[1] == 'bench/search_epoch.py':
            args = search_epoch.parse_args(argv[2:])
            assert args.device == ('cpu' if dry else 'cuda')
            assert args.stand_in_graphs == (dry and part in ('search-macro', 'search-micro'))
        elif argv[1] == 'bench/retrain_loop.py':
            args = retrain_loop.parse_args(argv[2:])
            assert args.impls == (['ours'] if part == 'retrain-eager' else ['ours', 'hand_written'])
        elif argv[1] == 'bench/rnn_search.py':
            args = rnn_search.parse_args(argv[2:])
            assert args.device == ('cpu' if dry else 'cuda')
            assert (args.hidden_size, args.nodes, args.vocab) == ((8, 3, 50) if dry else (200, 12, 10000))
        else:
            assert argv[0] == 'env' and argv[1].startswith('PYTHONPATH=') and argv[3].endswith('bench_epoch.py')


def test_the_gpu_parts_measure_what_the_plan_says(tmp_path):
    parts = listed(tmp_path)
    macro = search_epoch.parse_args(parts['search-macro'][2:])
    micro_eager = search_epoch.parse_args(parts['search-micro-eager'][2:])
    assert macro.paper and macro.samples == 12800 and macro.plan == 'warmup,clean,instrumented'
    assert macro.cuda_graphs == 'auto' and micro_eager.cuda_graphs == 'off' and micro_eager.samples == 6400
    assert micro_eager.plan == 'warmup,clean'
    retrain = retrain_loop.parse_args(parts['retrain'][2:])
    assert retrain.steps == 30 and retrain.reps == 1 and retrain.cuda_graphs == 'auto'


def test_a_shortened_paper_epoch_is_projected_to_a_whole_one():
    # 12,800 images, a tenth for the rewards: 11,520 / 128 = 90 of macro's 352 child steps
    args = SimpleNamespace(paper=True, samples=12800, search_for='macro')
    facts = {'batch_size': 128, 'child_train_images': 11520}
    epochs = {'clean': {'seconds': 40.0, 'child_s': 9.0}}
    figures = search_epoch.paper_projection(args, facts, epochs)
    assert figures['child_steps'] == 90 and figures['paper_child_steps'] == 352
    assert figures['projected_paper_epoch_s'] == pytest.approx(40.0 + 262 * 0.1)
    assert figures['projected_paper_hours'] == pytest.approx(66.2 * 310 / 3600)
    assert search_epoch.paper_projection(SimpleNamespace(paper=True, samples=None, search_for='macro'),
                                         facts, epochs) == {}        # a whole paper epoch: nothing to project


def test_bad_options_are_one_error_line_and_exit_2():
    for flags, message in ((['--parts', 'tests,warp'], "unknown part 'warp'"), (['--budget', 'soon'], 'whole seconds'),
                           (['--fast'], "unknown option '--fast'")):
        done = subprocess.run(['bash', str(SCRIPT), *flags], capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert done.returncode == 2 and done.stderr.startswith('error:') and message in done.stderr


def test_the_budget_guard_stops_and_skips_parts_and_the_summary_comes_back(tmp_path):
    """A 2-second budget: the first part is stopped at its limit (pytest cannot even collect in
    2 s), the second is skipped, and the summary still comes back with exit status 0."""
    out = tmp_path / 'out'
    done = subprocess.run(['bash', str(SCRIPT), '--cpu-dry-run', '--budget', '2', '--min-part', '1',
                           '--parts', 'tests,search-macro'], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, OUT=str(out)), timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line.split('\t') for line in (out / 'parts.tsv').read_text().splitlines()[1:]]
    assert [(r[0], r[1]) for r in rows] in ([('tests', '124'), ('search-macro', 'skipped')],
                                            [('tests', '137'), ('search-macro', 'skipped')])
    assert rows[1][4].startswith('budget:')
    assert (out / '01-tests.log').is_file() and (out / 'memory.csv').read_text().startswith('time_s,used_mib')
    assert '-- tests: exit 124 (time limit)' in done.stdout or '-- tests: exit 137 (time limit)' in done.stdout
    assert '-- search-macro: skipped' in done.stdout
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['dry_run'] is True and summary['parts']['search-macro']['status'] == 'skipped'


def _log(folder, n, part, *lines):
    (folder / f'{n:02d}-{part}.log').write_text('\n'.join([f'== {part}: ...', *lines, '']))


def test_the_summary_reads_figures_from_the_logs(tmp_path, capsys):
    folder = tmp_path
    rows = [('tests', '1', '50', '110'), ('search-macro', '0', '70', '80'), ('search-micro', '124', '110', '110'),
            ('retrain', '0', '60', '100'), ('peers-macro-ours', '0', '30', '45'), ('peers-macro-nni210', '0', '20', '45'),
            ('rnn', '0', '40', '90')]
    (folder / 'parts.tsv').write_text('part\tstatus\tseconds\tlimit\n' + ''.join('\t'.join(r) + '\n' for r in rows))
    _log(folder, 1, 'tests', 'FAILED tests/test_cuda_graphs.py::test_gpu_x - AssertionError',
         '1 failed, 7 passed, 59 deselected in 48.1s')
    metrics = {'impl': 'nni-enas', 'epoch_s': 12.0, 'projected_paper_epoch_s': 30.0, 'graph_replays': 900,
               'graph_broken': 0, 'peak_cuda_mib': 3000.5}
    _log(folder, 2, 'search-macro', json.dumps({'epoch': 'warmup', 'seconds': 20.0, 'child_s': 8.0, 'controller_s': 9.0}),
         json.dumps({'epoch': 'clean', 'seconds': 12.0, 'child_s': 3.0, 'controller_s': 8.0}), json.dumps(metrics))
    _log(folder, 3, 'search-micro', json.dumps({'epoch': 'warmup', 'seconds': 50.0, 'child_s': 30.0,
                                                'controller_s': 15.0, 'graph_replays': 40, 'graph_broken': 2}))
    _log(folder, 4, 'retrain', json.dumps({'arc': 'paper-micro', 'summary': True, 'ours_img_per_s': 2000.0,
                                           'hand_written_img_per_s': 2200.0, 'ours_over_hand_written': 0.909}))
    _log(folder, 5, 'peers-macro-ours', json.dumps({'epoch': 'warmup', 'seconds': 4.0}),
         json.dumps({'epoch': 'clean', 'seconds': 2.0}), json.dumps({'impl': 'nni-enas', 'epoch_s': 2.0}))
    _log(folder, 6, 'peers-macro-nni210', json.dumps({'export': {}}), json.dumps({'epoch_s': 6.0}))
    _log(folder, 7, 'rnn', json.dumps({'part': 'search', 'child_step_s': 0.05}),
         json.dumps({'child_step_s': 0.04, 'reward_s': 0.01, 'retrain_tokens_per_s': 90000.0, 'device': 'cuda'}))
    (folder / 'memory.csv').write_text('time_s,used_mib,total_mib\n1,500,143000\n2,9000,143000\n3,700,143000\n')
    assert gpu_summary.main([str(folder)]) == 0
    text = capsys.readouterr().out
    summary = json.loads((folder / 'summary.json').read_text())
    parts = summary['parts']
    assert parts['tests']['figures']['counts'] == {'failed': 1, 'passed': 7, 'deselected': 59}
    assert 'FAILED tests/test_cuda_graphs.py::test_gpu_x - AssertionError' in text
    macro = parts['search-macro']['figures']
    assert macro['capture_and_warmup_s'] == 8.0 and macro['controller_s'] == 8.0 and macro['finished']
    assert macro['projected_paper_epoch_s'] == 30.0 and macro['graph_replays'] == 900
    micro = parts['search-micro']['figures']          # stopped by its limit after the warm-up epoch
    assert not micro['finished'] and micro['warmup_epoch_s'] == 50.0 and micro['graph_broken'] == 2
    assert '-- search-micro: exit 124 (time limit), 110 s of 110 s' in text
    assert parts['retrain']['figures']['paper-micro_ours_over_hand_written'] == 0.909
    assert summary['peer_ratios'] == {'macro_nni210_over_ours_warmup': 1.5, 'macro_nni210_over_ours_clean': 3.0}
    assert summary['memory'] == {'samples': 3, 'first_used_mib': 500, 'max_used_mib': 9000, 'total_mib': 143000}
    rnn = parts['rnn']['figures']                     # the metrics line of bench/rnn_search.py
    assert rnn['child_step_s'] == 0.04 and rnn['retrain_tokens_per_s'] == 90000.0 and 'device' not in rnn
