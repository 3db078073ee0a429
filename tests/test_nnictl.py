"""NNI integration: ``experiment.yml``, ``nni_enas.run.nni_report`` and a real ``nnictl`` run.

The end-to-end test (marked ``nnictl``) starts a private NNI experiment with
``nnictl create`` on a free port, follows it through NNI's REST API and stops
it again.  Everything it writes (experiment folder, nnictl's experiment list,
NNI's config) lives under pytest's ``tmp_path``: ``HOME`` is pointed there for
the nnictl processes, so the user's ``~/nni-experiments`` is never touched.

Environment knobs
-----------------
NNI_ENAS_TRIAL_CMD
    Trial command for the end-to-end test (default: the real, tiny
    ``search.py`` run in ``DEFAULT_TRIAL_CMD``).  ``search_for`` is *not* part
    of it: NNI's GridSearch tuner hands it to the trial.
NNI_ENAS_NNICTL_TIMEOUT
    Seconds to wait for both trials (default 600).
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

EXPERIMENT_YML = REPO / 'experiment.yml'
DEFAULT_TRIAL_CMD = (
    f'python3 {REPO / "search.py"} --dataset synthetic --synthetic-size 64 --epochs 2 --layers 2 '
    '--channels 4 --batch-size 16 --ctrl-steps 1 --ctrl-steps-aggregate 2 --num-candidates 2 '
    '--device cpu --workers 0'
)
EPOCHS = 2
SEARCH_FOR = {'macro', 'micro'}
_ANSI = re.compile(r'\x1b\[[0-9;]*m')
_NNI_TRIAL_ENV = ('NNI_PLATFORM', 'NNI_TRIAL_COMMAND_CHANNEL', 'NNI_OUTPUT_DIR', 'NNI_TRIAL_JOB_ID',
                  'NNI_EXP_ID', 'NNI_SYS_DIR', 'NNI_TRIAL_SEQ_ID')


# --------------------------------------------------------------------------- experiment.yml

def _load_config(path=EXPERIMENT_YML):
    """Load and canonicalize a config exactly like ``nnictl create`` does (v2 format)."""
    from nni.experiment.config import ExperimentConfig
    raw = yaml.safe_load(path.read_text(encoding='utf-8'))
    assert 'trainingServicePlatform' not in raw, 'experiment.yml must use the NNI v2/v3 config format'
    config = ExperimentConfig.load(path)   # what nni.tools.nnictl.launcher.create_experiment calls
    return raw, config.canonical_copy()    # what Experiment.start() sends: validates or raises


def test_experiment_yml_is_valid_nni_config():
    from nni.algorithms.hpo.gridsearch_tuner import GridSearchTuner
    import nni

    raw, canon = _load_config()
    assert canon.experiment_name
    assert canon.tuner.name == 'GridSearch'
    assert canon.search_space == {'search_for': {'_type': 'choice', '_value': ['macro', 'micro']}}
    assert canon.trial_command.split()[:2] == ['python3', 'search.py']
    assert '--dataset cifar10' in canon.trial_command and '--device auto' in canon.trial_command
    assert Path(canon.trial_code_directory) == REPO
    assert canon.trial_concurrency == 1 and canon.max_trial_number == 2
    assert raw['trialGpuNumber'] == 0
    assert canon.training_service.platform == 'local'

    # the grid is exactly {macro, micro}, and maxTrialNumber covers it
    tuner = GridSearchTuner()
    tuner.update_search_space(canon.search_space)
    grid = [tuner.generate_parameters(i) for i in range(2)]
    assert {p['search_for'] for p in grid} == SEARCH_FOR
    with pytest.raises(nni.NoMoreTrialError):
        tuner.generate_parameters(2)


def test_experiment_rnn_yml_runs_the_recurrent_search(monkeypatch):
    """The variant for the recurrent cell: valid for nnictl, and its trial command parses as an rnn search."""
    from nni.algorithms.hpo.gridsearch_tuner import GridSearchTuner
    import search

    raw, canon = _load_config(REPO / 'experiment-rnn.yml')
    assert canon.search_space == {'search_for': {'_type': 'choice', '_value': ['rnn']}}
    assert canon.tuner.name == 'GridSearch' and canon.max_trial_number == 1
    assert canon.training_service.platform == 'local' and Path(canon.trial_code_directory) == REPO
    command = canon.trial_command.split()
    assert command[:2] == ['python3', 'search.py']
    tuner = GridSearchTuner()
    tuner.update_search_space(canon.search_space)
    params = tuner.generate_parameters(0)
    # what the trial does with the tuner's parameters: the flags of the paper's rnn search
    monkeypatch.setattr(search.nni_report, 'apply_tuner_parameters',
                        lambda args, parser: vars(args).update(params) or dict(params))
    args, _ = search.parse(command[2:])
    assert (args.search_for, args.dataset) == ('rnn', 'ptb')
    assert args.hidden_size == search.SEARCH['rnn']['hidden_size'] and args.lr_max is None


def _commented_training_services(text):
    """The commented-out ``# trainingService:`` blocks of experiment.yml, uncommented."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.rstrip() == '# trainingService:':
            block = [line[2:]]
            for nxt in lines[i + 1:]:
                if not nxt.startswith('#   '):
                    break
                block.append(nxt[2:])
            blocks.append(yaml.safe_load('\n'.join(block))['trainingService'])
    return blocks


def test_commented_training_services_are_valid(tmp_path):
    from nni.experiment.config import ExperimentConfig, utils

    text = EXPERIMENT_YML.read_text(encoding='utf-8')
    raw = yaml.safe_load(text)
    blocks = _commented_training_services(text)
    assert {b['platform'] for b in blocks} >= {'remote', 'kubeflow', 'frameworkcontroller'}
    key = tmp_path / 'id_rsa'
    key.write_text('not a real key')
    for ts in blocks:
        for machine in ts.get('machineList', []):
            machine['sshKeyFile'] = str(key)  # validation checks that the key file exists
        utils.set_base_path(REPO)
        try:
            config = ExperimentConfig(**dict(raw, trainingService=ts, nniManagerIp='10.0.0.1'))
        finally:
            utils.unset_base_path()
        assert config.canonical_copy().training_service.platform == ts['platform']


# --------------------------------------------------------------------------- nni_report unit tests

def _parser():
    p = argparse.ArgumentParser(prog='search.py')
    p.add_argument('--search-for', choices=['macro', 'micro'], default='macro')
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--lr', type=float, default=0.1)
    p.add_argument('--export', default=None)
    p.add_argument('--fast', action='store_true')
    return p


def test_nni_report_outside_trial_is_silent_noop(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in _NNI_TRIAL_ENV}
    # load the module file on its own: the package __init__ may import nni/torch itself
    code = textwrap.dedent('''
        import argparse, importlib.util, sys
        spec = importlib.util.spec_from_file_location('nni_report', MODULE_PATH)
        r = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(r)
        p = argparse.ArgumentParser(); p.add_argument('--epochs', type=int, default=3)
        a = p.parse_args([])
        assert r.in_trial() is False and r.trial_output_dir() is None
        assert r.apply_tuner_parameters(a, p) == {} and a.epochs == 3
        r.report_epoch({'x': 1.0}, 'missing-key-is-fine-outside')
        r.report_final({'x': 1.0}, 'x')
        assert 'nni' not in sys.modules, 'nni must not be imported outside a trial'
    ''').replace('MODULE_PATH', repr(str(REPO / 'nni_enas' / 'run' / 'nni_report.py')))
    res = subprocess.run([sys.executable, '-c', code], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout == '' and res.stderr == ''


@pytest.fixture
def nni_report():
    """The module under test, imported lazily (the package pulls in torch and nni.nas)."""
    from nni_enas.run import nni_report as module
    return module


@pytest.fixture
def fake_trial(monkeypatch):
    """Pretend to be an NNI trial; capture what would be sent to NNI."""
    import nni
    for key in _NNI_TRIAL_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv('NNI_PLATFORM', 'local')
    monkeypatch.setenv('NNI_OUTPUT_DIR', '/tmp/trial-out')
    sent = {'params': {}, 'intermediate': [], 'final': []}
    monkeypatch.setattr(nni, 'get_next_parameter', lambda: sent['params'])
    monkeypatch.setattr(nni, 'report_intermediate_result', sent['intermediate'].append)
    monkeypatch.setattr(nni, 'report_final_result', sent['final'].append)
    return sent


def test_apply_tuner_parameters_in_trial(fake_trial, nni_report):
    assert nni_report.in_trial() and nni_report.trial_output_dir() == '/tmp/trial-out'
    fake_trial['params'] = {'search_for': 'micro', 'batch-size': 32.0, 'lr': '0.05', 'fast': True}
    p = _parser()
    args = p.parse_args([])
    applied = nni_report.apply_tuner_parameters(args, p)
    assert applied == {'search_for': 'micro', 'batch_size': 32, 'lr': 0.05, 'fast': True}
    assert (args.search_for, args.batch_size, args.lr, args.fast) == ('micro', 32, 0.05, True)


@pytest.mark.parametrize('params, message', [
    ({'search_for': 'mezzo'}, "invalid choice: 'mezzo'"),
    ({'batch_size': 'big'}, 'invalid int value'),
    ({'batch_size': 16.5}, 'invalid int value'),
    ({'nope': 1, 'search_for': 'macro'}, "unknown tuner parameter(s) 'nope'"),
    ({'batch_size': 8, 'batch-size': 16}, 'given twice'),
])
def test_apply_tuner_parameters_rejects_bad_values(fake_trial, nni_report, capsys, params, message):
    fake_trial['params'] = params
    p = _parser()
    args = p.parse_args([])
    with pytest.raises(SystemExit) as exc:
        nni_report.apply_tuner_parameters(args, p)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and 'error:' in err
    assert args.batch_size == 128 and args.search_for == 'macro'  # nothing applied


def test_report_shapes(fake_trial, nni_report):
    np = pytest.importorskip('numpy')
    nni_report.report_epoch({'mean_reward': np.float32(0.25), 'epoch': 1, 'loss': float('nan'),
                             'arch': 'x', 'ok': True}, 'mean_reward')
    nni_report.report_final({'mean_reward': 0.5, 'export': Path('/a/exported.json'), 'n': 3}, 'mean_reward')
    assert fake_trial['intermediate'] == [{'default': 0.25, 'epoch': 1}]
    assert fake_trial['final'] == [{'default': 0.5, 'export': '/a/exported.json', 'n': 3}]
    assert type(fake_trial['intermediate'][0]['default']) is float
    with pytest.raises(KeyError, match='mean_reward'):
        nni_report.report_epoch({'loss': 1.0}, 'mean_reward')


def test_readme_names_the_trial_files_and_the_web_ui_column_nni_really_has():
    """What the README tells a user to look for exists in the installed NNI (issue 21).

    NNI 3.0 writes ``trial.log`` (its trial runtime, where the local training service's stdout
    goes), ``trial.stdout`` and ``trial.stderr`` (its trial keeper); its web UI titles a column per
    field of the final result ``<field> (metric)``, so the final result's ``export`` is the
    ``export (metric)`` column of *Trials detail* (Add/Remove columns).
    """
    import nni
    import nni_node
    runtime = (Path(nni.__file__).parent / 'runtime' / 'log.py').read_text()
    keeper = (Path(nni_node.__file__).parent / 'common' / 'trial_keeper' / 'process.js').read_text()
    assert "'trial.log'" in runtime and "'trial.stdout'" in keeper and "'trial.stderr'" in keeper
    web_ui = ''.join(p.read_text(errors='replace')
                     for p in (Path(nni_node.__file__).parent / 'static' / 'static' / 'js').glob('main.*.js'))
    assert "(metric)" in web_ui and 'Add/Remove columns' in ''.join(
        p.read_text(errors='replace') for p in (Path(nni_node.__file__).parent / 'static').rglob('*.chunk.js'))
    readme = ' '.join((REPO / 'README.md').read_text().split())
    for name in ('`trial.log`', '`trial.stdout`', '`trial.stderr`', '`export (metric)`', '*Add/Remove columns*'):
        assert name in readme, name


# --------------------------------------------------------------------------- real nnictl run

def _free_port():
    """A TCP port free on every interface (NNI's web server listens on all of them)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('', 0))
        return sock.getsockname()[1]


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _rest(port, path, timeout=5.0):
    with _NO_PROXY.open(f'http://127.0.0.1:{port}/api/v1/nni/{path}', timeout=timeout) as resp:
        return json.loads(resp.read().decode('utf-8'))


def _port_open(port):
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(('127.0.0.1', port)) == 0


def _metric_value(data):
    """NNI stores metric values JSON-encoded twice (trial's nni.dump + manager)."""
    value = data
    for _ in range(3):
        if not isinstance(value, str):
            break
        value = json.loads(value)
    return value


def _tail(path, n=4000):
    try:
        return Path(path).read_text(errors='replace')[-n:]
    except OSError as err:
        return f'<{err}>'


def _trial_logs(trial):
    folder = Path(trial.get('logPath') or '')
    return '\n'.join(f'--- {name} ({folder})\n{_tail(folder / name)}'
                     for name in ('trial.stderr', 'trial.stdout', 'trial.log'))


def _nnictl(args, env, timeout):
    res = subprocess.run([shutil.which('nnictl'), *args], env=env, capture_output=True, text=True,
                         timeout=timeout, stdin=subprocess.DEVNULL)
    return res.returncode, _ANSI.sub('', res.stdout + res.stderr)


def _experiment_processes(exp_id, node_pid):
    """Processes still alive that belong to the experiment (node, dispatcher, trials)."""
    import psutil
    found = []
    for proc in psutil.process_iter(['pid', 'cmdline']):
        try:
            if proc.pid == os.getpid():
                continue
            cmdline = ' '.join(proc.info['cmdline'] or [])
            try:
                environ = proc.environ()
            except (psutil.AccessDenied, psutil.ZombieProcess):
                environ = {}
            try:
                pgid = os.getpgid(proc.pid)
            except OSError:
                pgid = None
            if (exp_id in cmdline or environ.get('NNI_EXP_ID') == exp_id
                    or exp_id in environ.get('NNI_LOG_DIRECTORY', '')
                    or (node_pid and (proc.pid == node_pid or pgid == node_pid))):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def _summary(trials, metrics):
    out = []
    for t in sorted(trials, key=lambda t: t.get('sequenceId', 0)):
        params = _metric_value(t['hyperParameters'][0])['parameters']
        mine = [m for m in metrics if m['trialJobId'] == t['trialJobId']]
        inter = [_metric_value(m['data']) for m in mine if m['type'] == 'PERIODICAL']
        final = [_metric_value(m['data']) for m in mine if m['type'] == 'FINAL']
        out.append(f"trial {t['trialJobId']} #{t.get('sequenceId')} {t['status']} params={params}\n"
                   f"  intermediate={inter}\n  final={final}")
    return '\n'.join(out)


@pytest.mark.nnictl
def test_nnictl_end_to_end(tmp_path):
    if shutil.which('nnictl') is None:
        pytest.skip('nnictl is not on PATH')
    trial_cmd = os.environ.get('NNI_ENAS_TRIAL_CMD') or DEFAULT_TRIAL_CMD
    if trial_cmd == DEFAULT_TRIAL_CMD and not (REPO / 'search.py').is_file():
        pytest.fail(f'{REPO / "search.py"} does not exist (set NNI_ENAS_TRIAL_CMD to test another script)')
    deadline_s = float(os.environ.get('NNI_ENAS_NNICTL_TIMEOUT', '600'))

    work = tmp_path / 'nni-work'
    home = tmp_path / 'home'        # private nnictl experiment list + NNI config
    home.mkdir()
    config = yaml.safe_load(EXPERIMENT_YML.read_text(encoding='utf-8'))
    config.update(
        experimentName='nni-enas-pytest',
        trialCommand=trial_cmd,
        trialCodeDirectory=str(REPO),
        trialConcurrency=1,
        trialGpuNumber=0,
        maxTrialNumber=2,
        experimentWorkingDirectory=str(work),
        trainingService={'platform': 'local'},
    )
    config.pop('maxExperimentDuration', None)
    config_path = tmp_path / 'tiny.yml'
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding='utf-8')

    import site
    env = dict(os.environ, HOME=str(home), PYTHONUSERBASE=site.getuserbase(),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])),
               NO_PROXY='localhost,127.0.0.1', no_proxy='localhost,127.0.0.1')
    for key in _NNI_TRIAL_ENV:
        env.pop(key, None)

    t0 = time.monotonic()
    exp_id = node_pid = port = None
    create_out = ''
    try:
        for _attempt in range(3):  # a port can be grabbed between picking it and nnictl binding it
            port = _free_port()
            rc, create_out = _nnictl(['create', '--config', str(config_path), '--port', str(port)],
                                     env, timeout=180)
            match = re.search(r'Experiment ID: (\w+)', create_out)
            exp_id = match.group(1) if match else None
            if rc == 0 or 'is not idle' not in create_out:
                break
        assert rc == 0 and exp_id, f'nnictl create failed (rc={rc}):\n{create_out}'
        registry = json.loads((home / 'nni-experiments' / '.experiment').read_text())
        node_pid = registry[exp_id]['pid']
        assert _rest(port, 'experiment')['id'] == exp_id
        print(f'\nnnictl create: experiment {exp_id} on port {port} after {time.monotonic() - t0:.1f}s')

        trials, metrics = [], []
        deadline = time.monotonic() + deadline_s
        while True:
            status = _rest(port, 'check-status')
            trials = _rest(port, 'trial-jobs')
            metrics = _rest(port, 'metric-data')
            if status.get('status') == 'ERROR':
                pytest.fail(f'NNI experiment error: {status}\n'
                            f'{_tail(work / exp_id / "log" / "nnimanager.log")}\n'
                            f'{_tail(work / exp_id / "log" / "dispatcher.log")}')
            for t in trials:
                if t['status'] in ('FAILED', 'USER_CANCELED', 'SYS_CANCELED', 'EARLY_STOPPED'):
                    pytest.fail(f"trial {t['trialJobId']} {t['status']} "
                                f"(params {t.get('hyperParameters')}):\n{_trial_logs(t)}")
            succeeded = [t for t in trials if t['status'] == 'SUCCEEDED']
            finals = {m['trialJobId'] for m in metrics if m['type'] == 'FINAL'}
            if len(succeeded) >= 2 and all(t['trialJobId'] in finals for t in succeeded):
                break
            if time.monotonic() > deadline:
                pytest.fail(f'timeout after {deadline_s:.0f}s waiting for 2 SUCCEEDED trials; status={status}\n'
                            f'{_summary(trials, metrics)}\n'
                            + '\n'.join(_trial_logs(t) for t in trials))
            time.sleep(0.5)

        summary = _summary(trials, metrics)
        print(f'check-status: {status}\n{summary}')
        print(f'both trials done after {time.monotonic() - t0:.1f}s')

        assert len(trials) == 2 and all(t['status'] == 'SUCCEEDED' for t in trials), summary
        seen = set()
        for t in trials:
            seen.add(_metric_value(t['hyperParameters'][0])['parameters']['search_for'])
            mine = [m for m in metrics if m['trialJobId'] == t['trialJobId']]
            inter = [_metric_value(m['data']) for m in mine if m['type'] == 'PERIODICAL']
            final = [_metric_value(m['data']) for m in mine if m['type'] == 'FINAL']
            assert len(inter) == EPOCHS, f'expected {EPOCHS} intermediate results (one per epoch)\n{summary}'
            assert len(final) == 1, summary
            for value in inter + final:
                assert isinstance(value, dict) and isinstance(value.get('default'), (int, float)) \
                    and not isinstance(value['default'], bool) and math.isfinite(value['default']), summary
            export = Path(final[0].get('export') or '')
            assert final[0].get('export') and export.is_file(), f'final export missing on disk\n{summary}'
            trial_dir = Path(t['logPath']).resolve()
            assert trial_dir in export.resolve().parents, \
                f'export {export} should be written into the trial folder {trial_dir}'
        assert seen == SEARCH_FOR, summary
    finally:
        stop_out = ''
        if exp_id or (home / 'nni-experiments' / '.experiment').exists():
            # HOME is private, so `--all` can only reach this test's experiment
            _rc, stop_out = _nnictl(['stop', exp_id] if exp_id else ['stop', '--all'], env, timeout=120)
        if port is not None:
            gone_by = time.monotonic() + 30
            while _port_open(port) and time.monotonic() < gone_by:
                time.sleep(0.2)
            port_still_open = _port_open(port)
        else:
            port_still_open = False
        leftovers, described = [], []
        if exp_id:
            gone_by = time.monotonic() + 15
            while True:
                leftovers = _experiment_processes(exp_id, node_pid)
                if not leftovers or time.monotonic() > gone_by:
                    break
                time.sleep(0.2)
            described = [f'{p.pid}: {" ".join(p.cmdline())[:200]}' for p in leftovers]
            for proc in leftovers:  # clean up what this test started, then report it
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
        print(f'nnictl stop done; total {time.monotonic() - t0:.1f}s')
    assert not port_still_open, f'REST server still answers on port {port} after nnictl stop:\n{stop_out}'
    assert not leftovers, 'processes of the experiment survived nnictl stop:\n' + '\n'.join(described)
