"""Tests of ``search.py``, the ENAS search command line, and through it of the shared plumbing
(``cli.py``, ``runfolder.py``, ``runcontrol.py``, ``checkpoints.py``).

Five runs are real subprocesses, started together by the ``cli_runs`` fixture so that their
start-up (importing torch, NNI and Lightning: ~10 s each) overlaps: the two spaces end to end,
one run killed with SIGKILL mid-epoch and two stopped with SIGINT and SIGTERM. The other runs call
``search.main(argv)`` in this process (same code path, exit status returned instead of exited).
All runs are tiny (synthetic or tiny written data, 2 layers of 4 channels, one thread).

Runtime: about 100 s on the 2-core dev machine (more when other jobs load it).
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import search  # noqa: E402
from nni_enas.run import cli  # noqa: E402
from nni_enas.run import control as runcontrol  # noqa: E402
from nni_enas.run.checkpoints import checkpoint_epoch  # noqa: E402
from nni_enas.architecture import load_architecture  # noqa: E402

from helpers import write_cifar, write_png  # noqa: E402

TINY = ['--dataset', 'synthetic', '--synthetic-size', '64', '--layers', '2', '--channels', '4',
        '--batch-size', '16', '--ctrl-steps', '1', '--ctrl-steps-aggregate', '2', '--num-candidates', '2',
        '--device', 'cpu']
SUMMARY = re.compile(r'^epoch (\d+)/(\d+)  child loss [\d.]+ acc [\d.]+  reward [\d.]+ baseline [\d.]+  '
                     r'entropy [\d.]+(  skip [\d.]+)?  best [\d.]+  [\d.]+s \(child [\d.]+s \d+ img/s, '
                     r'controller [\d.]+s, export [\d.]+s\)$')
NNI_TRIAL_ENV = ('NNI_PLATFORM', 'NNI_TRIAL_COMMAND_CHANNEL', 'NNI_OUTPUT_DIR', 'NNI_TRIAL_JOB_ID',
                 'NNI_EXP_ID', 'NNI_SYS_DIR', 'NNI_TRIAL_SEQ_ID')
TIMEOUT = 400
pytestmark = pytest.mark.usefixtures('one_torch_thread')


def summaries(text):
    return [m for m in (SUMMARY.match(line) for line in text.splitlines()) if m]


def checked_export(path, space, epoch):
    """The record at ``path``: loadable, of ``space``, exported after ``epoch``."""
    record = load_architecture(path)
    assert record['space'] == space
    assert record['provenance']['epoch'] == epoch
    return record


# --------------------------------------------------------------------------------------------
# subprocess runs
# --------------------------------------------------------------------------------------------

class CliRun:
    """``python3 search.py ARGS`` in a subprocess, stdout/stderr collected by threads.

    With ``send``, that signal goes to the process once epoch 1 is complete (its summary line
    printed and ``<output>/checkpoints/last.ckpt`` on disk), i.e. early in epoch 2.
    """

    def __init__(self, args, cwd, send=None, output=None):
        env = {k: v for k, v in os.environ.items() if k not in NNI_TRIAL_ENV}
        env.update(OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')])))
        self.send, self.output = send, Path(output) if output else None
        self.signalled_after = None      # summary lines seen when the signal went
        self.out_lines, self.err_lines = [], []

        def default_sigint():            # a background shell may have set SIGINT to "ignore"
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        self.proc = subprocess.Popen([sys.executable, str(REPO / 'search.py'), *args], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=default_sigint)
        self.threads = [threading.Thread(target=self._read_stdout, daemon=True),
                        threading.Thread(target=self._drain, args=(self.proc.stderr, self.err_lines), daemon=True)]
        for t in self.threads:
            t.start()

    def _read_stdout(self):
        for line in self.proc.stdout:
            self.out_lines.append(line)
            if self.send and self.signalled_after is None and line.startswith('epoch 1/'):
                checkpoint = self.output / 'checkpoints' / 'last.ckpt'
                deadline = time.monotonic() + 60
                while not checkpoint.exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
                self.signalled_after = len(summaries(''.join(self.out_lines)))
                self.proc.send_signal(self.send)

    @staticmethod
    def _drain(stream, lines):
        for line in stream:
            lines.append(line)

    def wait(self):
        try:
            rc = self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        for t in self.threads:
            t.join(10)
        return rc, ''.join(self.out_lines), ''.join(self.err_lines)


@pytest.fixture(scope='module')
def cli_runs(tmp_path_factory):
    """Start the subprocess runs at once; each test waits for its own."""
    runs = {}
    for space in ('macro', 'micro'):
        cwd = tmp_path_factory.mktemp(f'cli-{space}')
        runs[space] = (CliRun(['--search-for', space, *TINY, '--epochs', '2', '--workers', '0'], cwd), cwd)
    # Stopped runs: macro, 4 epochs of 4 steps on 256 images, so epoch 2 is still running when signalled.
    longer = ['--search-for', 'macro', *TINY, '--synthetic-size', '256', '--epochs', '4']
    for name, sig in (('sigkill', signal.SIGKILL), ('sigint', signal.SIGINT), ('sigterm', signal.SIGTERM)):
        cwd = tmp_path_factory.mktemp(f'cli-{name}')
        runs[name] = (CliRun([*longer, '--output', 'run'], cwd, send=sig, output=cwd / 'run'), cwd)
    yield runs
    for run, _ in runs.values():
        if run.proc.poll() is None:
            run.proc.kill()


@pytest.mark.parametrize('space', ['macro', 'micro'])
def test_search_end_to_end(cli_runs, space):
    run, cwd = cli_runs[space]
    rc, out, err = run.wait()
    assert rc == 0, err
    # one summary line per epoch, with every field
    lines = summaries(out)
    assert [(m[1], m[2]) for m in lines] == [('1', '2'), ('2', '2')], out
    assert all(bool(m[3]) == (space == 'macro') for m in lines)    # skip rate: macro only
    # the export, in the working folder and in the run folder, identical and loadable
    run_dir, = (cwd / 'runs').iterdir()
    assert run_dir.name.startswith(f'search-{space}-')
    record = checked_export(cwd / 'exported.json', space, epoch=2)
    assert record == json.loads((run_dir / 'exported.json').read_text())
    assert record['space_args']['num_layers'] == 2 and record['space_args']['channels'] == 4
    provenance = record['provenance']
    assert provenance['num_candidates'] == 2 and provenance['epochs'] == 2 and 0 <= provenance['reward'] <= 1
    assert provenance['greedy'].keys() == record['arch'].keys()
    # settings: given flags plus the paper's defaults for this space
    settings = json.loads((run_dir / 'args.json').read_text())['settings']
    assert settings['epochs'] == 2 and settings['batch_size'] == 16
    assert settings['ctrl_lr'] == search.SEARCH[space]['ctrl_lr']
    assert settings['weight_decay'] == search.SEARCH[space]['weight_decay']
    assert checkpoint_epoch(run_dir / 'checkpoints' / 'last.ckpt') == 2
    # the drawings: one frame per epoch, the animation, the controller's probabilities over epochs
    assert sorted(p.name for p in (run_dir / 'drawings').iterdir()) == ['epoch_001.png', 'epoch_002.png']
    assert (run_dir / 'architecture.gif').is_file() and (run_dir / 'choice_probabilities.png').is_file()
    assert [e['epoch'] for e in json.loads((run_dir / 'choice_probabilities.json').read_text())['epochs']] == [1, 2]
    # TensorBoard: per-epoch scalars and the controller's choice probabilities
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    assert list((run_dir / 'tensorboard').glob('events.out.tfevents.*'))
    events = EventAccumulator(str(run_dir / 'tensorboard'), size_guidance={'scalars': 0})
    events.Reload()
    tags = set(events.Tags()['scalars'])
    for tag in ('search/lr', 'search/seconds', 'search/export_seconds'):
        assert [e.step for e in events.Scalars(tag)] == [1, 2], tag
    for tag in ('ctrl_reward', 'ctrl_baseline', 'ctrl_entropy', 'ctrl_images_per_s', 'ctrl_export_reward'):
        assert len(events.Scalars(tag)) == 2, tag                # the module's, once per epoch
    assert {tag: [e.step for e in events.Scalars(tag)] for tag in tags} == {tag: [1, 2] for tag in tags}  # x: epoch
    # one tag per value (the module logs child_loss/child_acc and ctrl_* itself); no skip rate without skips
    assert {'child_loss', 'child_acc'} <= tags and not {t for t in tags if t.startswith('search/')} - {
        'search/lr', 'search/seconds', 'search/export_seconds'}
    assert ('ctrl_skip_rate' in tags) == (space == 'macro')      # micro has no skips: the module reports none
    hparams = (run_dir / 'tensorboard' / 'hparams.yaml').read_text()
    assert 'search_for: ' + space in hparams and 'ctrl_lr:' in hparams      # the run's settings
    label = 'layer_1/op' if space == 'macro' else 'normal/node_2/op_a'
    probs = [events.Scalars(tag)[-1].value for tag in tags if tag.startswith(f'controller/{label}/')]
    assert len(probs) == (6 if space == 'macro' else 5) and abs(sum(probs) - 1) < 1e-4   # one per op
    # no library noise on stderr (no progress bar either: stdout is not a terminal)
    for noise in ('Warning', 'GPU available', 'Tip', 'Traceback', 'it/s'):
        assert noise not in err, err


@pytest.mark.parametrize('name, status', [('sigint', 130), ('sigterm', 143)])
def test_stop_signal_leaves_checkpoint_and_export(cli_runs, name, status):
    run, cwd = cli_runs[name]
    rc, out, err = run.wait()
    assert run.signalled_after is not None, out + err
    assert rc == status, err
    assert f'{name.upper()}: stopped in epoch ' in err
    done = checkpoint_epoch(cwd / 'run' / 'checkpoints' / 'last.ckpt')
    assert run.signalled_after <= done < 4
    record = checked_export(cwd / 'run' / 'exported.json', 'macro', epoch=done)
    assert record == json.loads((cwd / 'exported.json').read_text())
    assert f'the checkpoint after epoch {done} is run/checkpoints/last.ckpt' in err
    assert 'search.py --resume run' in err
    assert not [p for p in (cwd / 'run').rglob('*.tmp')]       # nothing half-written


def test_sigkill_mid_epoch_then_resume(cli_runs, capsys, monkeypatch):
    run, cwd = cli_runs['sigkill']
    rc, out, _ = run.wait()
    assert rc == -signal.SIGKILL and run.signalled_after is not None, out
    done = checkpoint_epoch(cwd / 'run' / 'checkpoints' / 'last.ckpt')
    assert run.signalled_after <= done < 4                     # at most the running epoch is lost
    checked_export(cwd / 'run' / 'exported.json', 'macro', epoch=done)
    monkeypatch.chdir(cwd)
    rc, out, err = call_main(['--resume', 'run'], capsys)
    assert rc == 0, err
    assert f'resuming run after epoch {done} of 4' in out
    assert [int(m[1]) for m in summaries(out)] == list(range(done + 1, 5))
    checked_export(cwd / 'run' / 'exported.json', 'macro', epoch=4)
    checked_export(cwd / 'exported.json', 'macro', epoch=4)
    saved = json.loads((cwd / 'run' / 'args.json').read_text())
    assert saved['resumed'] == [{'argv': ['--resume', 'run'], 'after_epoch': done}]


# --------------------------------------------------------------------------------------------
# in-process runs
# --------------------------------------------------------------------------------------------

def call_main(argv, capsys):
    capsys.readouterr()
    rc = search.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_explains_every_option_and_default(capsys):
    rc, out, _ = call_main(['-h'], capsys)
    assert rc == 0
    text = ' '.join(out.split())
    for flag in ('--search-for', '--epochs', '--batch-size', '--layers', '--channels', '--nodes', '--dropout',
                 '--lr-max', '--lr-min', '--weight-decay', '--grad-clip', '--ctrl-lr', '--ctrl-steps',
                 '--ctrl-steps-aggregate', '--entropy-weight', '--skip-weight', '--skip-target',
                 '--baseline-decay', '--tanh-constant', '--num-candidates', '--candidate-batches', '--device',
                 '--seed', '--cuda-graphs', '--workers', '--output', '--export', '--resume', '--dataset', '--data-dir',
                 '--synthetic-size', '--valid-size'):
        assert flag in text, flag
    for expected in ('default: macro 310 / micro 150', 'default: macro 128 / micro 160',
                     'default: macro 12 / micro 6', 'default: macro 0.001 / micro 0.0035',
                     'default: macro 0.8 / micro 0.0', 'default: macro 0.05 / micro 0.05', 'default: 100', 'default: cifar10',
                     'default: ./data', 'default: 1024', 'default: 5000', 'default: auto', 'runs/search-<space>-<time>',
                     'only --cuda-graphs, --device, --epochs, --export, --progress-bar and --workers may be changed',
                     'resized to 32x32', '130 / 143 stopped by Ctrl-C / SIGTERM'):
        assert expected in text, expected
    # every paper setting is a flag whose help gives both spaces' defaults, from the table itself
    for key in search.PAPER_KEYS:
        flag = '--' + key.replace('_', '-')
        assert f'{flag} ' in text and cli.paper_default(search.SEARCH, key) in text, key


def test_resume_at_epoch_boundary_equals_uninterrupted_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ['--search-for', 'macro', *TINY, '--synthetic-size', '96', '--ctrl-steps', '2', '--num-candidates', '4']
    assert call_main([*common, '--epochs', '3', '--output', 'straight', '--export', 'a.json'], capsys)[0] == 0
    assert call_main([*common, '--epochs', '2', '--output', 'stopped', '--export', 'b.json'], capsys)[0] == 0
    checked_export('b.json', 'macro', epoch=2)
    rc, out, err = call_main(['--resume', 'stopped', '--epochs', '3'], capsys)
    assert rc == 0, err
    assert [int(m[1]) for m in summaries(out)] == [3]
    a, b = checked_export('a.json', 'macro', epoch=3), checked_export('b.json', 'macro', epoch=3)
    for key in ('reward', 'mean_reward', 'greedy'):
        assert a['provenance'][key] == b['provenance'][key], key
    assert a['arch'] == b['arch']
    # the whole training state is the same: shared weights, controller, baseline, optimizers
    sa = torch.load('straight/checkpoints/last.ckpt', weights_only=True)
    sb = torch.load('stopped/checkpoints/last.ckpt', weights_only=True)
    assert sa['state_dict'].keys() == sb['state_dict'].keys()
    assert all(torch.equal(sa['state_dict'][k], sb['state_dict'][k]) for k in sa['state_dict'])
    assert torch.equal(sa['rng_states']['torch'], sb['rng_states']['torch'])
    assert json.loads(Path('stopped/args.json').read_text())['settings']['epochs'] == 3


def test_cifar10_files(tmp_path, capsys, monkeypatch):
    write_cifar(tmp_path / 'data', per_batch=20)                    # 100 training images
    monkeypatch.chdir(tmp_path)
    rc, out, err = call_main(['--search-for', 'macro', *TINY, '--dataset', 'cifar10', '--data-dir', 'data',
                              '--valid-size', '20', '--epochs', '1'], capsys)
    assert rc == 0, err
    assert 'on cifar10 (80 train / 20 reward images, cpu)' in out and len(summaries(out)) == 1
    assert checked_export('exported.json', 'macro', epoch=1)['provenance']['dataset'] == 'cifar10'


def test_imagefolder_sets_the_number_of_classes(tmp_path, capsys, monkeypatch):
    colors = {'cat': (255, 0, 0), 'dog': (0, 255, 0), 'fox': (0, 0, 255)}
    for name, color in colors.items():
        for i in range(8):
            write_png(tmp_path / 'images' / name / f'{i}.png', (20 + i, 24), color)
    monkeypatch.chdir(tmp_path)
    rc, out, err = call_main(['--search-for', 'micro', *TINY, '--layers', '1', '--nodes', '2', '--dataset',
                              'imagefolder', '--data-dir', 'images', '--epochs', '1'], capsys)
    assert rc == 0, err
    record = checked_export('exported.json', 'micro', epoch=1)
    assert record['space_args']['num_classes'] == 3 and record['space_args']['num_nodes'] == 2


def test_nan_loss_stops_and_keeps_the_last_good_epoch(tmp_path, capsys, monkeypatch):
    # A huge learning rate (with weight decay) blows the weights up: epoch 1 ends finite, epoch 2 overflows.
    monkeypatch.chdir(tmp_path)
    rc, out, err = call_main(['--search-for', 'macro', *TINY, '--epochs', '3', '--lr-max', '1e6', '--lr-min', '0',
                              '--output', 'run'], capsys)
    assert rc == 1
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and 'NaN/inf in epoch 2/3' in errors[0] and '--lr-max' in errors[0], err
    assert len(summaries(out)) == 1
    assert checkpoint_epoch('run/checkpoints/last.ckpt') == 1
    checked_export('run/exported.json', 'macro', epoch=1)
    checked_export('exported.json', 'macro', epoch=1)


def tensorboard_steps(run_dir):
    """``{tag: [steps]}`` of a run's TensorBoard scalars, and the steps of its images."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir / 'tensorboard'), size_guidance={'scalars': 0, 'images': 0})
    events.Reload()
    scalars = {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()['scalars']}
    return scalars, {tag: [e.step for e in events.Images(tag)] for tag in events.Tags()['images']}


def test_tensorboard_plots_every_tag_against_the_epoch(tmp_path, capsys, monkeypatch):
    # before: child_* and ctrl_* at Lightning's global step (3, 7), search/* and controller/* at the epoch (1, 2)
    monkeypatch.chdir(tmp_path)
    rc, out, err = call_main(['--search-for', 'macro', *TINY, '--epochs', '2', '--output', 'run'], capsys)
    assert rc == 0, err
    scalars, images = tensorboard_steps(Path('run'))
    families = {tag.split('/')[0] if '/' in tag else tag.split('_')[0] for tag in scalars}
    assert families == {'child', 'ctrl', 'search', 'controller'}, sorted(scalars)
    assert {tag: steps for tag, steps in scalars.items() if steps != [1, 2]} == {}
    assert images == {'architecture': [1, 2]}


def test_diverging_controller_is_one_error_line(tmp_path, capsys, monkeypatch):
    # A huge controller rate blows the controller up in its first update (before: torch's RuntimeError
    # "probability tensor contains either inf, nan or element < 0" and a traceback).
    monkeypatch.chdir(tmp_path)
    rc, out, err = call_main(['--search-for', 'macro', *TINY, '--epochs', '2', '--ctrl-lr', '1e30',
                              '--output', 'run'], capsys)
    assert rc == 1, err
    assert 'Traceback' not in err
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and 'controller diverged' in errors[0] and '--ctrl-lr' in errors[0], err
    assert 'in epoch 1/2' in errors[0] and 'nothing was saved' in errors[0]
    assert not Path('run/checkpoints/last.ckpt').exists() and not Path('exported.json').exists()


def test_controller_diverging_in_epoch_2_keeps_epoch_1(tmp_path, capsys, monkeypatch):
    from nni_enas.search.enas import EnasModule
    real_phase = EnasModule.train_controller

    def phase_then_poison(self):      # epoch 2's controller phase leaves NaN in the controller
        stats = real_phase(self)
        if self.current_epoch == 1:
            with torch.no_grad():
                next(self.controller.parameters()).fill_(float('nan'))
        return stats
    monkeypatch.setattr(EnasModule, 'train_controller', phase_then_poison)
    monkeypatch.chdir(tmp_path)
    rc, out, err = call_main(['--search-for', 'macro', *TINY, '--epochs', '3', '--output', 'run'], capsys)
    assert rc == 1, err
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and 'controller diverged' in errors[0] and 'in epoch 2/3' in errors[0], err
    assert len(summaries(out)) == 1
    assert checkpoint_epoch('run/checkpoints/last.ckpt') == 1
    checked_export('run/exported.json', 'macro', epoch=1)
    checked_export('exported.json', 'macro', epoch=1)


def _fake_run(folder, corrupt_checkpoint=False, checkpoint=True):
    folder.mkdir()
    settings = {**vars(search.build_parser().parse_args(['--search-for', 'macro', *TINY, '--epochs', '2'])),
                'output': str(folder)}
    (folder / 'args.json').write_text(json.dumps({'settings': settings, 'argv': []}))
    if checkpoint:
        (folder / 'checkpoints').mkdir()
        (folder / 'checkpoints' / 'last.ckpt').write_bytes(b'not a checkpoint' if corrupt_checkpoint else b'')


BAD_INPUTS = {
    'zero epochs': (['--search-for', 'macro', '--epochs', '0'], 'expected an integer from 1 to 100000'),
    'negative epochs': (['--search-for', 'macro', '--epochs', '-3'], '--epochs'),
    'zero batch size': (['--search-for', 'micro', '--batch-size', '0'], '--batch-size'),
    'unknown space': (['--search-for', 'nasnet'], "invalid choice: 'nasnet'"),
    'no space': ([], '--search-for macro|micro|rnn is required'),
    'lr min above max': (['--search-for', 'macro', '--lr-max', '0.01', '--lr-min', '0.1'], 'larger than --lr-max'),
    'nodes for macro': (['--search-for', 'macro', '--nodes', '3'], 'only for --search-for micro'),
    'cuda graphs on': (['--search-for', 'macro', '--cuda-graphs', 'on'], "invalid choice: 'on'"),
    'bad dropout': (['--search-for', 'macro', '--dropout', '1.5'], 'expected a number from 0 to 0.999'),
    'missing image folder': (['--search-for', 'macro', '--dataset', 'imagefolder', '--data-dir', '{inputs}/none'],
                             'image folder not found'),
    'image folder is a file': (['--search-for', 'macro', '--dataset', 'imagefolder',
                                '--data-dir', '{inputs}/one/cat/a.png'], 'image folder is a file, not a folder'),
    'one class': (['--search-for', 'macro', '--dataset', 'imagefolder', '--data-dir', '{inputs}/one'],
                  'need at least 2 class'),
    'resume no folder': (['--resume', '{inputs}/none'], 'no such run folder'),
    'resume no checkpoint': (['--resume', '{inputs}/nockpt'], 'has no checkpoint'),
    'resume bad checkpoint': (['--resume', '{inputs}/corrupt'], 'cannot read the checkpoint'),
    'resume changes layers': (['--resume', '{inputs}/fake', '--layers', '5'], '--layers 5 differs'),
    'output holds a run': (['--search-for', 'macro', '--output', '{inputs}/fake'], 'already holds a run'),
}


@pytest.fixture(scope='module')
def bad_inputs(tmp_path_factory):
    inputs = tmp_path_factory.mktemp('inputs')
    write_png(inputs / 'one' / 'cat' / 'a.png', (5, 5), (1, 2, 3))
    write_png(inputs / 'one' / 'cat' / 'b.png', (5, 5), (1, 2, 3))
    _fake_run(inputs / 'nockpt', checkpoint=False)
    _fake_run(inputs / 'corrupt', corrupt_checkpoint=True)
    _fake_run(inputs / 'fake')
    return inputs


@pytest.mark.parametrize('case', BAD_INPUTS)
def test_bad_input_is_one_error_line_and_exit_2(case, bad_inputs, tmp_path, capsys, monkeypatch):
    argv, expected = BAD_INPUTS[case]
    before = sorted(p.relative_to(bad_inputs) for p in bad_inputs.rglob('*'))
    monkeypatch.chdir(tmp_path)
    rc, out, err = call_main([a.format(inputs=bad_inputs) for a in [*TINY[:4], *argv]], capsys)
    assert rc == 2
    assert err.startswith('error: ') and err.count('\n') == 1 and expected in err, err
    assert out == ''
    assert list(tmp_path.iterdir()) == []                                   # nothing written
    assert sorted(p.relative_to(bad_inputs) for p in bad_inputs.rglob('*')) == before


def test_cuda_graphs_flag_reaches_the_library(tmp_path, capsys, monkeypatch):
    import nni_enas.search.enas
    modes, real = [], nni_enas.search.enas.graph_supernet
    monkeypatch.setattr(nni_enas.search.enas, 'graph_supernet',
                        lambda net, mode, **kwargs: modes.append(mode) or real(net, mode, **kwargs))
    monkeypatch.chdir(tmp_path)
    rc, _, err = call_main(['--search-for', 'macro', *TINY, '--epochs', '1', '--cuda-graphs', 'off',
                            '--output', 'run'], capsys)
    assert rc == 0, err
    assert modes == ['off']                  # once, when the fit starts
    assert json.loads(Path('run/args.json').read_text())['settings']['cuda_graphs'] == 'off'


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_cuda_without_gpu_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = call_main([*TINY[:4], '--search-for', 'macro', '--device', 'cuda'], capsys)
    assert rc == 2 and err.startswith('error: --device cuda: CUDA is not available') and err.count('\n') == 1
    assert list(tmp_path.iterdir()) == []


def test_stop_watcher_finds_a_signal_behind_a_lock_error():
    """A SIGTERM raised inside ``with lock:`` surfaces as the lock's RuntimeError; it is still a stop."""

    class Trainer:
        current_epoch = 2

    def raised_inside_lock(interrupt):
        try:
            try:
                raise interrupt
            except BaseException:
                raise RuntimeError('release unlocked lock')
        except RuntimeError as error:
            return error

    for interrupt, name, status in [(runcontrol.TerminateRequest('signal 15'), 'SIGTERM', 143),
                                    (KeyboardInterrupt(), 'SIGINT', 130)]:
        watcher = runcontrol.StopWatcher()
        watcher.on_exception(Trainer, None, raised_inside_lock(interrupt))
        assert (watcher.stopped_by, watcher.exit_status, watcher.epoch) == (name, status, 3)
    watcher = runcontrol.StopWatcher()
    watcher.on_exception(Trainer, None, ValueError('a real error'))
    assert watcher.stopped_by is None
