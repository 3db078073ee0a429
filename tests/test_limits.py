"""Issue 21, the command line: nothing silently wrong, no traceback at any size.

One test per class of input, each asserting the exit status, exactly one line on stderr (no
traceback) and nothing written:

* every numeric flag of search.py, retrain.py and ``nni_enas.draw`` at 0, -1, nan, inf, 1e9, 1e18
  (``tests/flag_sweep.py``, in this process, stopped where work would start);
* one table of limits for the flags and the architecture format;
* sizes that cannot fit (parameters, memory) refused up front with the estimate;
* out of memory and a full disk at run time (injected: no real allocation fails);
* resuming: the run folder's copy of the architecture, checkpoints of another run;
* the default export copy of two searches in one folder; a Ctrl-C after ``done:``.

Tiny runs in this process (synthetic data, 2-3 layers of 4 channels); about a minute on the
2-core dev machine.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import flag_sweep  # noqa: E402
import retrain  # noqa: E402
import search  # noqa: E402
from nni_enas import draw  # noqa: E402
from nni_enas.run import folder as runfolder  # noqa: E402
from nni_enas.run import sizes  # noqa: E402
from nni_enas.architecture import (SPACE_ARG_RANGES, architecture_record, count_parameters,  # noqa: E402
                                   estimate_space_parameters, parameter_bound)
from nni_enas.run.checkpoints import RunIdentity, checkpoint_epoch  # noqa: E402
from nni_enas.search.controller import ReinforceController  # noqa: E402
from nni_enas.limits import FLAG_RANGES  # noqa: E402
from nni_enas.spaces.macro import MacroSpace  # noqa: E402
from nni_enas.spaces.micro import MicroSpace  # noqa: E402
from helpers import run_captured  # noqa: E402

SEARCH_TINY = ['--search-for', 'macro', '--dataset', 'synthetic', '--synthetic-size', '48', '--layers', '2',
               '--channels', '4', '--batch-size', '16', '--ctrl-steps', '1', '--ctrl-steps-aggregate', '2',
               '--num-candidates', '2', '--device', 'cpu']
RETRAIN_TINY = ['--arc', 'paper-micro', '--dataset', 'synthetic', '--synthetic-size', '32', '--batch-size', '16',
                '--channels', '4', '--layers', '3', '--device', 'cpu']
pytestmark = pytest.mark.usefixtures('one_torch_thread')


call = run_captured


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'Traceback' not in err, err
    return lines[0]


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob('*'))


# --------------------------------------------------------------------------------------------
# every numeric flag, every awkward value
# --------------------------------------------------------------------------------------------

COMMANDS = flag_sweep._commands()
FLAGS = [(command, flag, kind) for command, (_, parser) in COMMANDS.items()
         for flag, _, kind in flag_sweep.numeric_flags(parser)]


def test_every_numeric_flag_has_its_range_in_the_one_table():
    assert len(FLAGS) >= 40
    for command, flag, kind in FLAGS:
        assert kind is not None, f'{command} {flag} has no entry in limits.FLAG_RANGES'
    # the space sizes of the flags are the architecture format's
    for flag, key in [('layers', 'num_layers'), ('channels', 'channels'), ('nodes', 'num_nodes'),
                      ('dropout', 'dropout'), ('drop_path_prob', 'drop_path_prob')]:
        allowed = FLAG_RANGES[flag]
        assert (allowed.kind, allowed.low, allowed.high) == SPACE_ARG_RANGES[key], flag


@pytest.mark.parametrize('command, flag, kind', FLAGS, ids=[f'{c}{f}' for c, f, _ in FLAGS])
def test_sweep_refuses_with_one_line_or_reaches_the_work(command, flag, kind):
    cases = [flag_sweep.run_case(command, COMMANDS[command][0], flag,
                                 flag_sweep.AS_INTEGER.get(v, v) if kind is int else v) for v in flag_sweep.VALUES]
    for case in cases:
        assert case.status in (2, 'legal') and not case.wrote, case
        if case.status == 2:
            assert len(case.stderr) == 1 and case.stderr[0].startswith('error: ') and flag in case.stderr[0], case
    refused = {c.value for c in cases if c.status == 2}
    assert {'-1', 'nan', 'inf'} <= refused                  # never a value
    if kind is int:
        assert str(10**18) in refused                       # no count, size or seed that large


def test_a_skip_target_of_0_or_1_is_refused_where_the_kl_is_infinite(capsys):
    for value in ('0', '1'):
        status, _, err = call(search.main, [*SEARCH_TINY, '--skip-target', value], capsys)
        assert status == 2 and f"--skip-target: expected a number in (0, 1), got '{value}'" in one_error_line(err)


# --------------------------------------------------------------------------------------------
# one table of limits: a search cannot export what retraining refuses
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('argv, message', [
    (['--layers', '101'], "argument --layers: expected an integer from 1 to 100, got '101'"),
    (['--search-for', 'micro', '--nodes', '17'], "argument --nodes: expected an integer from 1 to 16, got '17'"),
    (['--channels', '1025'], "argument --channels: expected an integer from 2 to 1024, got '1025'"),
])
def test_search_sizes_beyond_the_architecture_format_are_refused_up_front(argv, message, tmp_path, capsys,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = call(search.main, [*SEARCH_TINY, *argv], capsys)
    assert status == 2 and message in one_error_line(err) and out == '' and files_under(tmp_path) == []


def _file_beyond_the_table(tmp_path: Path, space: str) -> Path:
    """An export as a search without the shared table wrote it: 101 layers, or 17 nodes."""
    net = MacroSpace(num_layers=101, channels=2) if space == 'macro' else MicroSpace(num_layers=1, num_nodes=17,
                                                                                    channels=2)
    arch = {label: mutable.default() for label, mutable in net.simplify().items()}
    path = tmp_path / f'{space}.json'
    path.write_text(json.dumps(architecture_record(net, arch), default=int))
    return path


@pytest.mark.parametrize('space, message', [('macro', 'num_layers must be an integer from 1 to 100, got 101'),
                                            ('micro', 'num_nodes must be an integer from 1 to 16, got 17')])
def test_retrain_and_draw_refuse_such_a_file_with_one_line(space, message, tmp_path, capsys, monkeypatch):
    path = _file_beyond_the_table(tmp_path, space)
    monkeypatch.chdir(tmp_path)
    before = files_under(tmp_path)
    for main, argv in [(retrain.main, ['--arc', path, '--dataset', 'synthetic', '--device', 'cpu']),
                       (draw.main, [path, '-o', tmp_path / 'drawing.png'])]:
        status, _, err = call(main, argv, capsys)
        assert status == 2 and message in one_error_line(err)
    assert files_under(tmp_path) == before


# --------------------------------------------------------------------------------------------
# sizes that cannot fit: refused before any work, with the estimate
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('main, argv, message', [
    (search.main, ['--layers', '100', '--channels', '1024'],
     '--layers 100 --channels 1024: the macro search space would have 4,515,906,560 parameters, more than '
     '1,000,000,000'),
    (search.main, ['--lstm-size', '20000'],
     '--lstm-size 20000: the controller would have 4,000,280,000 parameters, more than 1,000,000,000'),
    (search.main, ['--num-candidates', str(10**9)], f'--num-candidates {10**9}: sampling that many architectures'),
    (search.main, ['--ctrl-steps-aggregate', str(10**12)], f'--ctrl-steps-aggregate {10**12}: sampling'),
    (search.main, ['--synthetic-size', str(10**9)], f'--synthetic-size {10**9}: the synthetic images would take '
                                                    f'3,080 GB of memory; this machine has'),
    (retrain.main, ['--synthetic-size', str(10**9)], f'--synthetic-size {10**9}: the synthetic images would take '
                                                     f'3,696 GB of memory; this machine has'),
    (retrain.main, ['--channels', '1024', '--layers', '15'], 'parameters, more than 1,000,000,000'),
    (retrain.main, ['--devices', '1024'], '--devices 1024: more CPU processes than the'),
])
def test_what_cannot_fit_is_refused_with_the_estimate(main, argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = SEARCH_TINY if main is search.main else RETRAIN_TINY
    status, out, err = call(main, [*base, *argv, '--output', 'run'], capsys)
    assert status == 2 and message in one_error_line(err) and out == '' and files_under(tmp_path) == []


def test_the_estimates_are_the_real_counts_and_the_free_bound_is_above_them():
    for space, args in [('macro', dict(num_layers=3, channels=10)),
                        ('micro', dict(num_layers=2, num_nodes=3, channels=10))]:
        real = count_parameters(MacroSpace(**args) if space == 'macro' else MicroSpace(**args))
        assert estimate_space_parameters(space, **args) == real
        assert parameter_bound(args) >= real
    narrow = MacroSpace(num_layers=3, channels=2)
    kwargs = {'lstm_size': 48, 'tanh_constant': 1.5}
    real = count_parameters(ReinforceController(narrow, **kwargs))
    assert sizes._controller_parameters('macro', dict(num_layers=3, channels=2), kwargs) == real


# --------------------------------------------------------------------------------------------
# out of memory and a full disk at run time (injected)
# --------------------------------------------------------------------------------------------

CPU_OOM = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you "
                       "tried to allocate 4000000000000 bytes. Error code 12 (Cannot allocate memory)")
CUDA_OOM = torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of '
                                  '79.10 GiB of which 1.2 GiB is free.')


def _fail_in_epoch_2(monkeypatch, monitor_class, error):
    real = monitor_class.on_train_epoch_start

    def start(self, trainer, module):
        if trainer.current_epoch == 1:
            raise error
        real(self, trainer, module)
    monkeypatch.setattr(monitor_class, 'on_train_epoch_start', start)


def _disk_full_at_checkpoint_2(monkeypatch):
    real, saved = torch.save, []

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and 'state_dict' in obj:
            saved.append(1)
            if len(saved) == 2:
                f.write(b'half a checkpoint')
                raise OSError(errno.ENOSPC, 'No space left on device')
        return real(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, 'save', save)


@pytest.mark.parametrize('command', ['search', 'retrain'])
@pytest.mark.parametrize('failure', ['cpu-oom', 'cuda-oom', 'disk-full'])
def test_out_of_memory_or_disk_mid_run_is_one_line_exit_1_keeping_the_last_checkpoint(command, failure, tmp_path,
                                                                                       capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main, monitor = (search.main, search.SearchMonitor) if command == 'search' else (retrain.main,
                                                                                      retrain.RetrainMonitor)
    if failure == 'disk-full':
        _disk_full_at_checkpoint_2(monkeypatch)
    else:
        _fail_in_epoch_2(monkeypatch, monitor, CPU_OOM if failure == 'cpu-oom' else CUDA_OOM)
    base = SEARCH_TINY if command == 'search' else RETRAIN_TINY
    status, out, err = call(main, [*base, '--epochs', '3', '--output', 'run'], capsys)
    line = one_error_line(err)
    assert status == 1 and 'done:' not in out
    expected = {'cpu-oom': 'error: out of memory in epoch 2/3 (it asked for 4,000.0 GB)',
                'cuda-oom': 'error: out of GPU memory in epoch 2/3 (it asked for 2.00 GiB)',
                'disk-full': 'error: the disk is full in epoch'}[failure]
    assert line.startswith(expected), line
    assert 'the checkpoint after epoch 1 is' in line
    assert ('lower --batch-size' if 'oom' in failure else 'free some space on that disk, then continue with '
            '--resume run') in line
    assert checkpoint_epoch('run/checkpoints/last.ckpt') == 1                  # the last good one, whole
    assert not [p for p in files_under(tmp_path) if p.endswith('.tmp')]        # nothing half-written
    assert not (tmp_path / 'run' / 'result.json').exists()


@pytest.mark.parametrize('where, error, expected', [
    ('settings', OSError(errno.ENOSPC, 'No space left on device', 'run/args.json'),
     'error: the disk is full (No space left on device writing run/args.json); free some space on that disk and '
     'run again'),
    ('data', CPU_OOM, 'error: out of memory (it asked for 4,000.0 GB); lower --batch-size'),
])
def test_out_of_memory_or_disk_before_the_fit_is_one_line_exit_1(where, error, expected, tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)

    def fail(*args, **kwargs):
        raise error
    if where == 'settings':
        monkeypatch.setattr(runfolder, 'save_settings', fail)
    else:
        monkeypatch.setattr(search, 'load_data', fail)
    status, _, err = call(search.main, [*SEARCH_TINY, '--output', 'run'], capsys)
    assert status == 1 and one_error_line(err).startswith(expected)


# --------------------------------------------------------------------------------------------
# resuming: the run folder holds the architecture; a checkpoint of another run is refused
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def retrain_run(tmp_path_factory):
    """A one-epoch retrain of a copy of paper-micro, made once for the resume tests (each copies it)."""
    folder = tmp_path_factory.mktemp('retrain')
    arc = folder / 'mine.json'
    arc.write_text((REPO / 'nni_enas' / 'architectures' / 'paper-micro.json').read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert retrain.main([*RETRAIN_TINY, '--arc', str(arc), '--epochs', '1', '--output', str(folder / 'run')]) == 0
    finally:
        torch.set_num_threads(threads)
    return folder


def _copy_run(source: Path, target: Path) -> Path:
    import shutil
    shutil.copytree(source, target)
    settings = json.loads((target / 'run' / 'args.json').read_text())
    settings['settings']['output'] = str(target / 'run')
    (target / 'run' / 'args.json').write_text(json.dumps(settings))
    return target / 'run'


def test_resume_rebuilds_the_run_folders_copy_not_the_arc_file(retrain_run, tmp_path, capsys):
    run = _copy_run(retrain_run, tmp_path / 'copy')
    copy = json.loads((run / 'architecture.json').read_text())
    assert copy == json.loads((tmp_path / 'copy' / 'mine.json').read_text())
    # the run was started from retrain_run/mine.json: break that file, and the resume does not care
    (retrain_run / 'mine.json').write_text('{"edited": ')
    try:
        status, out, err = call(retrain.main, ['--resume', run, '--epochs', '2'], capsys)
    finally:
        (retrain_run / 'mine.json').write_text((tmp_path / 'copy' / 'mine.json').read_text())
    assert status == 0, err
    assert 'resuming' in out and 'done:' in out
    assert json.loads((run / 'result.json').read_text())['epochs'] == 2


def test_an_arc_on_resume_must_be_the_runs_own(retrain_run, tmp_path, capsys):
    run = _copy_run(retrain_run, tmp_path / 'copy')
    edited = json.loads((run / 'architecture.json').read_text())
    op = edited['arch']['normal/node_2/op_a']
    edited['arch']['normal/node_2/op_a'] = 'max_pool_3x3' if op != 'max_pool_3x3' else 'avg_pool_3x3'
    (tmp_path / 'edited.json').write_text(json.dumps(edited))
    before = {p: (run / p).stat().st_mtime_ns for p in files_under(run)}
    status, out, err = call(retrain.main, ['--resume', run, '--epochs', '2', '--arc', tmp_path / 'edited.json'], capsys)
    line = one_error_line(err)
    assert status == 2 and f'--arc {tmp_path / "edited.json"} is not the architecture this run trains' in line
    assert {p: (run / p).stat().st_mtime_ns for p in files_under(run)} == before          # nothing changed
    # the same architecture under another path is only a reminder: accepted
    args, record, _ = retrain.parse(['--resume', str(run), '--epochs', '2', '--arc', str(tmp_path / 'copy/mine.json')])
    assert record['arch'] == json.loads((run / 'architecture.json').read_text())['arch']


def _rewrite_checkpoint(path: Path, change) -> None:
    checkpoint = torch.load(path, weights_only=False)
    change(checkpoint)
    torch.save(checkpoint, path)


@pytest.mark.parametrize('what', ['identity', 'legacy-shapes'])
def test_a_checkpoint_of_another_network_is_refused_with_one_line(what, retrain_run, tmp_path, capsys):
    run = _copy_run(retrain_run, tmp_path / 'copy')
    ckpt = run / 'checkpoints' / 'last.ckpt'
    if what == 'identity':      # another run's checkpoint: a different architecture
        def change(c):
            c[RunIdentity.KEY]['arch']['normal/node_2/op_a'] = 'conv_9x9'
    else:                       # written before checkpoints said whose they are: only the shapes tell
        def change(c):
            del c[RunIdentity.KEY]
            key = next(k for k, v in c['state_dict'].items() if v.dim() == 4)
            c['state_dict'][key] = torch.zeros(1, 1, 1, 1)
    _rewrite_checkpoint(ckpt, change)
    settings = (run / 'args.json').read_text()
    status, _, err = call(retrain.main, ['--resume', run, '--epochs', '2'], capsys)
    line = one_error_line(err)
    assert status == 2
    if what == 'identity':
        assert f'{ckpt} does not belong to this run: it holds 1 of 40 choices of its architecture' in line
        assert (run / 'args.json').read_text() == settings                   # refused before any work
    else:
        assert f'{ckpt} does not fit this run: its weights have other names or shapes' in line
    assert checkpoint_epoch(ckpt) == 1 and json.loads((run / 'result.json').read_text())['epochs'] == 1


def test_a_search_checkpoint_of_another_controller_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert call(search.main, [*SEARCH_TINY, '--epochs', '1', '--output', 'run'], capsys)[0] == 0
    ckpt = tmp_path / 'run' / 'checkpoints' / 'last.ckpt'
    assert torch.load(ckpt, weights_only=False)[RunIdentity.KEY] == search.run_identity(
        search.parse(['--resume', 'run'])[0], 10)

    def change(c):
        c[RunIdentity.KEY]['lstm_size'] = 32
    _rewrite_checkpoint(ckpt, change)
    status, _, err = call(search.main, ['--resume', 'run', '--epochs', '2'], capsys)
    assert status == 2 and 'does not belong to this run: it holds lstm_size 32 (this run: 64)' in one_error_line(err)


# --------------------------------------------------------------------------------------------
# two searches in one folder; a Ctrl-C after done
# --------------------------------------------------------------------------------------------

class _Trainer:
    progress_bar_callback = None


def test_the_export_copy_is_left_alone_when_another_run_wrote_it_since(tmp_path, capsys):
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    (run_dir / 'exported.json').write_text(json.dumps({'provenance': {'run_dir': str(run_dir.resolve())}}))
    target = tmp_path / 'exported.json'
    rival = json.dumps({'provenance': {'run_dir': '/elsewhere/run-b'}})

    copy = search.ExportCopy(target, run_dir)                       # nothing there: copied
    copy.on_train_epoch_end(_Trainer, None)
    assert target.read_text() == (run_dir / 'exported.json').read_text()
    assert copy.paths() == [run_dir / 'exported.json', target]
    target.write_text(rival)                                         # another run wrote it since: left alone
    copy.on_train_epoch_end(_Trainer, None)
    copy.on_train_epoch_end(_Trainer, None)
    assert target.read_text() == rival and copy.paths() == [run_dir / 'exported.json']
    assert copy.other_writer == '/elsewhere/run-b'
    assert capsys.readouterr().out.count('note: not copying the export') == 1      # said once
    os.utime(target, (time.time() - 3600, time.time() - 3600))       # a result from before this run: replaced
    copy.on_train_epoch_end(_Trainer, None)
    assert json.loads(target.read_text())['provenance']['run_dir'] == str(run_dir.resolve())


def test_the_done_line_claims_the_export_copy_only_when_it_holds_this_runs_result(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real_init = search.ExportCopy.__init__

    def started_an_hour_ago(self, *args, **kwargs):       # as if another search wrote ./exported.json since
        real_init(self, *args, **kwargs)
        self.started -= 3600
    monkeypatch.setattr(search.ExportCopy, '__init__', started_an_hour_ago)
    rival = json.dumps({'provenance': {'run_dir': '/elsewhere/run-b'}})
    (tmp_path / 'exported.json').write_text(rival)
    status, out, err = call(search.main, [*SEARCH_TINY, '--epochs', '1', '--output', 'run'], capsys)
    assert status == 0, err
    done = [line for line in out.splitlines() if line.startswith('done:')][0]
    assert 'is in run/exported.json (exported.json holds the export of another run: /elsewhere/run-b)' in done
    assert (tmp_path / 'exported.json').read_text() == rival


def test_a_ctrl_c_after_done_cannot_change_the_exit_status(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    # in-process with argv (tests): the handlers are put back
    assert call(search.main, [*SEARCH_TINY, '--epochs', '1', '--output', 'a'], capsys)[0] == 0
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    # as a script (argv from sys.argv): after the done line, Ctrl-C and SIGTERM are ignored to the end
    monkeypatch.setattr(sys, 'argv', ['search.py', *SEARCH_TINY, '--epochs', '1', '--output', 'b'])
    try:
        assert search.main() == 0
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)              # would raise KeyboardInterrupt here otherwise
        time.sleep(0.05)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    assert 'done: 1 epoch' in capsys.readouterr().out
