"""Run folders, result files and run control shared by both commands (issue 14's gaps, one test each).

Fast: no training except one tiny search epoch; the commands fail before any work elsewhere.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import retrain  # noqa: E402
import search  # noqa: E402
from nni_enas.run import cli  # noqa: E402
from nni_enas.run import control as runcontrol  # noqa: E402
from nni_enas.run import folder as runfolder  # noqa: E402
from nni_enas.run.checkpoints import AtomicCheckpointIO  # noqa: E402
from nni_enas.files import atomic_write, write_json_atomic  # noqa: E402
from helpers import run_captured  # noqa: E402

TINY = ['--dataset', 'synthetic', '--synthetic-size', '32', '--layers', '2', '--channels', '4', '--batch-size', '8',
        '--ctrl-steps', '1', '--ctrl-steps-aggregate', '2', '--num-candidates', '2', '--device', 'cpu',
        '--epochs', '1']
pytestmark = pytest.mark.usefixtures('one_torch_thread')


run = run_captured


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    return lines[0]


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob('*'))


# --------------------------------------------------------------------------------------------
# 14.6: results keep the user's umask (or the replaced file's mode)
# --------------------------------------------------------------------------------------------

def test_atomic_writes_get_the_umask_mode_or_keep_the_old_one(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / 'new.json', {'a': 1})
        assert (tmp_path / 'new.json').stat().st_mode & 0o777 == 0o644
        (tmp_path / 'shared.json').write_text('{}')
        os.chmod(tmp_path / 'shared.json', 0o664)
        write_json_atomic(tmp_path / 'shared.json', {'b': 2})
        assert (tmp_path / 'shared.json').stat().st_mode & 0o777 == 0o664
        assert json.loads((tmp_path / 'shared.json').read_text()) == {'b': 2}
        AtomicCheckpointIO().save_checkpoint({'w': torch.ones(2)}, tmp_path / 'c' / 'last.ckpt')
        assert (tmp_path / 'c' / 'last.ckpt').stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        write_json_atomic(tmp_path / 'private.json', {})
        assert (tmp_path / 'private.json').stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    with pytest.raises(RuntimeError):                      # a failed write keeps the old file
        with atomic_write(tmp_path / 'shared.json') as f:
            f.write('half')
            raise RuntimeError('disk full')
    assert json.loads((tmp_path / 'shared.json').read_text()) == {'b': 2}
    assert not list(tmp_path.rglob('*.tmp'))


# --------------------------------------------------------------------------------------------
# 14.5: one run per folder
# --------------------------------------------------------------------------------------------

def test_a_locked_run_folder_refuses_a_second_run_naming_the_holder(tmp_path, capsys, monkeypatch):
    folder = tmp_path / 'run'
    folder.mkdir()
    lock = runfolder.RunLock(folder).acquire()
    holder = (folder / runfolder.LOCK_FILE).read_text()
    assert f'pid {os.getpid()} on ' in holder and ' since 20' in holder
    with pytest.raises(cli.CliError, match=f'{folder} is in use by another run \\(pid {os.getpid()} on .* since '):
        runfolder.RunLock(folder).acquire()
    monkeypatch.chdir(tmp_path)
    status, out, err = run(search.main, ['--search-for', 'macro', *TINY, '--output', folder], capsys)
    assert status == 2 and 'is in use by another run (pid' in one_error_line(err) and out == ''
    assert files_under(folder) == [runfolder.LOCK_FILE] and not (tmp_path / 'exported.json').exists()
    lock.release()
    runfolder.RunLock(folder).acquire().release()          # free again


def test_a_running_run_with_a_checkpoint_is_in_use_not_something_to_resume(tmp_path, capsys):
    # A second command on the --output of a run past its first epoch is told the run is going on
    # (and by whom), not "continue it with --resume" (which the lock would then refuse too).
    folder = tmp_path / 'run'
    (folder / 'checkpoints').mkdir(parents=True)
    (folder / 'checkpoints' / 'last.ckpt').write_bytes(b'x')
    (folder / runfolder.SETTINGS_FILE).write_text('{"command": "search.py", "settings": {}}')
    lock = runfolder.RunLock(folder).acquire()
    try:
        for main, argv in ((search.main, ['--search-for', 'macro', *TINY]),
                           (retrain.main, ['--arc', 'paper-micro', *TINY[:8], '--device', 'cpu'])):
            status, out, err = run(main, [*argv, '--output', folder], capsys)
            line = one_error_line(err)
            assert status == 2 and f'is in use by another run (pid {os.getpid()}' in line and '--resume' not in line
    finally:
        lock.release()
    status, out, err = run(search.main, ['--search-for', 'macro', *TINY, '--output', folder], capsys)
    assert status == 2 and 'already holds a run; continue it with --resume' in one_error_line(err)


def test_the_lock_is_held_by_another_process_until_it_ends(tmp_path):
    folder = tmp_path / 'run'
    folder.mkdir()
    code = textwrap.dedent(f'''
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from nni_enas.run.folder import RunLock
        lock = RunLock({str(folder)!r}).acquire()   # held while referenced
        print('locked', flush=True)
        time.sleep(60)
    ''')
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == 'locked'
        with pytest.raises(cli.CliError, match=f'pid {proc.pid} on '):
            runfolder.RunLock.check_free(folder)
    finally:
        proc.kill()
        proc.wait()
    runfolder.RunLock.check_free(folder)                    # the kernel dropped it with the process


# --------------------------------------------------------------------------------------------
# 14.1: outputs that cannot be written are refused before any work
# --------------------------------------------------------------------------------------------

@pytest.fixture
def places(tmp_path):
    (tmp_path / 'a-file').write_text('x')
    (tmp_path / 'a-folder').mkdir()
    (tmp_path / 'read-only').mkdir()
    return tmp_path


@pytest.mark.parametrize('main, argv, message', [
    (search.main, ['--output', '{p}/a-file'], '--output {p}/a-file: it is a file, not a folder'),
    (search.main, ['--output', '{p}/a-file/run'], '--output {p}/a-file/run: {p}/a-file is a file, not a folder'),
    (search.main, ['--output', '{p}/read-only/run'], 'cannot write in {p}/read-only (permission denied)'),
    (search.main, ['--export', '{p}/a-folder'], '--export {p}/a-folder: it is a folder; name a file'),
    (search.main, ['--export', '{p}/a-file/x.json'], '{p}/a-file is a file, not a folder'),
    (search.main, ['--export', '{p}/read-only/x.json'], 'cannot write in {p}/read-only (permission denied)'),
    (retrain.main, ['--output', '{p}/a-file'], '--output {p}/a-file: it is a file, not a folder'),
    (retrain.main, ['--output', '{p}/read-only/deep/run'], 'cannot write in {p}/read-only (permission denied)'),
    # no --output, in a folder where runs/ cannot be made: the line says the folder is the default one
    (search.main, ['--export', '{p}/x.json', '@read-only'], '--output (not given: the default) runs: cannot write in .'),
    (retrain.main, ['@read-only'], '--output (not given: the default) runs: cannot write in . (permission denied)'),
])
def test_unwritable_outputs_are_one_error_line_and_exit_2(main, argv, message, places, capsys, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, 'access',
                        lambda path, mode: 'read-only' not in os.path.abspath(path) and real_access(path, mode))
    monkeypatch.chdir(places / ('read-only' if '@read-only' in argv else 'a-folder'))
    argv = [a for a in argv if a != '@read-only']
    before = files_under(places)
    what = ['--search-for', 'macro', *TINY] if main is search.main else ['--arc', 'paper-micro', *TINY[:4], '--device', 'cpu']
    status, out, err = run(main, [*what, *[a.format(p=places) for a in argv]], capsys)
    assert status == 2 and message.format(p=places) in one_error_line(err) and out == ''
    assert files_under(places) == before                    # nothing written, not even runs/


# --------------------------------------------------------------------------------------------
# 14.2 and 14.4: resuming the other command's folder; a run stopped before its first epoch
# --------------------------------------------------------------------------------------------

def fake_run(folder, command, settings):
    (folder / 'checkpoints').mkdir(parents=True)
    (folder / 'checkpoints' / 'last.ckpt').write_bytes(b'')
    content = {'settings': settings, 'argv': []}
    if command:
        content['command'] = command
    (folder / 'args.json').write_text(json.dumps(content))


@pytest.mark.parametrize('command', ['search.py', None])      # None: written before args.json named it
def test_resuming_the_other_commands_run_folder_says_what_it_is(tmp_path, capsys, command):
    search_run, retrain_run = tmp_path / 'search-run', tmp_path / 'retrain-run'
    fake_run(search_run, command and 'search.py', {'search_for': 'macro', 'epochs': 2})
    fake_run(retrain_run, command and 'retrain.py', {'arc': 'paper-micro', 'epochs': 2})
    status, _, err = run(retrain.main, ['--resume', search_run], capsys)
    line = one_error_line(err)
    assert status == 2 and f'{search_run} is a search.py run folder, not a retrain.py one' in line
    assert f'python3 search.py --resume {search_run}' in line and f'--arc {search_run}/exported.json' in line
    status, _, err = run(search.main, ['--resume', retrain_run], capsys)
    assert status == 2 and f'{retrain_run} is a retrain.py run folder, not a search.py one' in one_error_line(err)


def test_a_run_stopped_before_its_first_epoch_can_be_started_again(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / 'run'
    folder.mkdir()
    (folder / 'args.json').write_text(json.dumps({'command': 'search.py', 'settings': {'search_for': 'macro'}}))
    status, _, err = run(search.main, ['--resume', folder], capsys)
    line = one_error_line(err)
    assert status == 2 and 'nothing to resume; start it again with: python3 search.py ... --output' in line
    status, out, err = run(search.main, ['--search-for', 'macro', *TINY, '--output', folder], capsys)
    assert status == 0, err
    assert json.loads((folder / 'args.json').read_text())['settings']['epochs'] == 1
    assert (folder / 'checkpoints' / 'last.ckpt').is_file() and 'for 1 epoch on' in out and 'done: 1 epoch;' in out


def test_the_stop_message_is_true_when_nothing_was_saved(tmp_path, capsys):
    stop = runcontrol.StopWatcher()
    stop.stopped_by, stop.epoch = 'SIGINT', 1
    status = runcontrol.fit_ending('SIGINT', stop, command='search.py', run_dir=tmp_path, epoch=1, epochs=3,
                                   loss='child loss')
    err = capsys.readouterr().err
    assert status == 130 and 'no epoch was completed, so nothing was saved' in err
    assert f'Nothing to resume: start it again with the same options and --output {tmp_path}' in err
    assert '--resume' not in err


# --------------------------------------------------------------------------------------------
# 14.11: progress bar
# --------------------------------------------------------------------------------------------

def test_progress_bar_only_on_a_terminal_erased_at_the_end_without_lightning_extras(monkeypatch):
    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty
    for out_tty, err_tty, expected in [(True, True, True), (True, False, False), (False, True, False)]:
        monkeypatch.setattr(sys, 'stdout', Stream(out_tty))
        monkeypatch.setattr(sys, 'stderr', Stream(err_tty))
        assert runcontrol.want_progress_bar(None) is expected
    monkeypatch.undo()
    assert runcontrol.want_progress_bar(True) and not runcontrol.want_progress_bar(False)
    bar = runcontrol.EpochProgressBar()
    assert bar.init_train_tqdm().leave is False
    # the bar shows what the module logs, without Lightning's version and the TensorBoard x-axis (EpochAxis)
    from pytorch_lightning.callbacks import TQDMProgressBar
    monkeypatch.setattr(TQDMProgressBar, 'get_metrics', lambda self, trainer, module: {'v_num': 0, 'step': 2.0,
                                                                                      'train_loss': 1.5})
    assert bar.get_metrics(None, None) == {'train_loss': 1.5}
