"""The recurrent-cell search and retrain: ENAS on the language-model recipe, and the two commands.

Tiny sizes throughout (3 nodes, hidden 8, batch 4, windows of 6, a few hundred words of PTB-like
text written by the test): the hidden state through the ENAS loop with the real space, the
reward, ``search.py --search-for rnn`` -> ``exported.json`` (with its vocabulary) ->
``retrain.py --arc`` end to end, a search stopped at an epoch boundary and resumed to the same
export, a SIGTERM, a NaN, NNI's per-epoch reports, and bad input (one ``error:`` line, exit 2,
nothing written). About a minute on the 2-core development machine.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import retrain  # noqa: E402
import search  # noqa: E402
from helpers import write_text_folder  # noqa: E402
from nni_enas.architecture import load_architecture  # noqa: E402
from nni_enas.data.text import Vocabulary  # noqa: E402
from nni_enas.run.checkpoints import checkpoint_epoch  # noqa: E402
from nni_enas.search.enas import Enas  # noqa: E402
from nni_enas.search.trainer import EnasTrainer  # noqa: E402
from nni_enas.spaces.recurrent import RecurrentSpace  # noqa: E402
from nni_enas.training.language_data import RandomOrder, load_text_data  # noqa: E402
from nni_enas.training.language_model import LanguageModelTraining, PerplexityReward, cross_entropy  # noqa: E402

pytestmark = pytest.mark.usefixtures('one_torch_thread')

SIZES = ['--nodes', '3', '--hidden-size', '8', '--batch-size', '4', '--bptt', '6', '--device', 'cpu']
SEARCH = ['--search-for', 'rnn', *SIZES, '--ctrl-steps', '2', '--ctrl-steps-aggregate', '2', '--num-candidates', '3']
RETRAIN = ['--hidden-size', '8', '--batch-size', '4', '--bptt', '6', '--device', 'cpu', '--valid-batch-size', '2',
           '--averaging-patience', '1']
SEARCH_LINE = re.compile(r'^epoch (\d+)/(\d+)  child loss [\d.]+ ppl [\d.]+  reward [\d.]+ baseline [\d.]+  '
                         r'entropy [\d.]+  best [\d.]+ \(valid ppl [\d.]+\)  [\d.]+s \(child [\d.]+s \d+ tokens/s, '
                         r'controller [\d.]+s, export [\d.]+s\)$')
RETRAIN_LINE = re.compile(r'^epoch (\d+)/(\d+)  train loss [\d.]+ ppl [\d.]+  valid ppl [\d.]+ \(best [\d.]+ @\d+'
                          r'(, averaged weights)?\)  lr 20  [\d.]+s \([\d.e+]+ tokens/s\)$')


def lines(pattern, text):
    return [m for m in (pattern.match(line) for line in text.splitlines()) if m]


def call(main, argv, capsys):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope='module')
def text(tmp_path_factory):
    return write_text_folder(tmp_path_factory.mktemp('text') / 'ptb-like', train=80, valid=24, test=24)


# --------------------------------------------------------------------------------------------
# the ENAS loop on the recurrent space (library level)
# --------------------------------------------------------------------------------------------

def tiny_trainer(text_dir, epochs=2, **kwargs):
    data = load_text_data('textfolder', text_dir, batch_sizes={'train': 4, 'valid': 4})
    space = RecurrentSpace(vocab_size=len(data.vocabulary), num_nodes=3, hidden_size=8)
    recipe = LanguageModelTraining(lr=20.0, bptt=6, slowness=1.0)
    loaders = data.train_windows(6, seed=0), RandomOrder(data.windows('valid', 6))
    trainer = EnasTrainer(space, None, None, PerplexityReward(), None, epochs, None, device='cpu', grad_clip=0.1,
                          ctrl_steps=2, ctrl_steps_aggregate=2, num_candidates=2, dataloaders=loaders, recipe=recipe,
                          ctrl_kwargs=dict(lstm_size=16, temperature=5.0, tanh_constant=2.5),
                          trainer_kwargs=dict(enable_progress_bar=False), **kwargs)
    return trainer, data


def test_enas_carries_the_state_across_child_steps_and_rewards_start_from_zero(text):
    trainer, data = tiny_trainer(text)
    calls = []

    def record(net, inputs, output):
        tokens, hidden = inputs if len(inputs) == 2 else (inputs[0], None)
        calls.append((net.training, torch.is_grad_enabled(), None if hidden is None else hidden.clone(),
                      output.hidden.detach().clone()))
    trainer.supernet.register_forward_hook(record)
    trainer.fit()
    child = [c for c in calls if c[1]]                       # training steps (grad on)
    windows = data.train_windows(6, seed=0)
    counts = []
    for epoch in range(2):                                   # each epoch's random window lengths
        windows.sampler.set_epoch(epoch)
        counts.append(len(list(windows)))
    assert len(child) == sum(counts) and counts[0] != counts[1]
    for epoch in range(2):
        steps = child[counts[0] * epoch:counts[0] * epoch + counts[epoch]]
        assert steps[0][2] is None                          # zero state at the epoch's start
        for before, after in zip(steps, steps[1:]):
            assert after[0] and torch.equal(after[2], before[3])    # carried, though the cell changed
    rewards = [c for c in calls if not c[1]]
    assert len(rewards) == 2 * 2 * 2                         # per epoch: 2 updates x 2 samples (no export here)
    assert all(not training and hidden is None for training, _, hidden, _ in rewards)   # zero state, no dropout


def test_reward_is_c_over_the_validation_perplexity(text):
    trainer, data = tiny_trainer(text)
    module = trainer.module
    x, y = next(iter(data.windows('valid', 6)))
    arch = module.controller.sample()[0]
    module.apply(arch)
    module.training_module.eval()
    reward = float(module._score([(x, y)]))
    with torch.no_grad():
        logits = trainer.supernet(x, None).logits
    assert reward == pytest.approx(80 / math.exp(float(cross_entropy(logits, y))), rel=1e-5)


# --------------------------------------------------------------------------------------------
# search -> export -> retrain
# --------------------------------------------------------------------------------------------

def test_search_export_retrain_end_to_end(text, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reports = []
    monkeypatch.setattr(search.nni_report, 'report_epoch', lambda metrics, key: reports.append((key, metrics)))
    rc, out, err = call(search.main, [*SEARCH, '--dataset', 'textfolder', '--data-dir', text, '--epochs', '2',
                                      '--output', 'search'], capsys)
    assert rc == 0, err
    assert [(m[1], m[2]) for m in lines(SEARCH_LINE, out)] == [('1', '2'), ('2', '2')], out
    record = load_architecture('exported.json')
    assert record == json.loads(Path('search/exported.json').read_text())
    assert record['space'] == 'rnn' and record['provenance']['epoch'] == 2
    assert record['space_args']['num_nodes'] == 3 and record['space_args']['hidden_size'] == 8
    assert set(record['arch']) == {'node_0/act', 'node_1/prev', 'node_1/act', 'node_2/prev', 'node_2/act'}
    vocabulary = json.loads(Path('search/vocabulary.json').read_text())
    train_words = Path(text, 'train.txt').read_text().split()
    assert record['vocabulary'] == vocabulary and set(vocabulary) == set(train_words) | {'<eos>'}
    assert record['space_args']['vocab_size'] == len(vocabulary)
    settings = json.loads(Path('search/args.json').read_text())['settings']
    assert settings['lr'] == 20.0 and settings['grad_clip'] == 0.1 and settings['ctrl_lr'] == 3.5e-4
    assert settings['lr_max'] is None and settings['dataset'] == 'textfolder'
    assert checkpoint_epoch('search/checkpoints/last.ckpt') == 2
    assert [key for key, _ in reports] == ['mean_reward'] * 2
    assert all(math.isfinite(m['child_ppl']) and m['best_valid_ppl'] > 1 for _, m in reports)
    tags = scalar_tags('search/tensorboard')
    assert {'child_loss', 'child_ppl', 'ctrl_reward', 'ctrl_export_reward', 'search/lr', 'search/seconds',
            'controller/node_1/act/tanh'} <= tags

    finals = []
    monkeypatch.setattr(retrain.nni_report, 'report_epoch', lambda metrics, key: finals.append(('epoch', key)))
    monkeypatch.setattr(retrain.nni_report, 'report_final', lambda metrics, key: finals.append(('final', key, metrics)))
    rc, out, err = call(retrain.main, ['--arc', 'exported.json', *RETRAIN, '--dataset', 'textfolder',
                                       '--data-dir', text, '--epochs', '3', '--output', 'retrain'], capsys)
    assert rc == 0, err
    assert [int(m[1]) for m in lines(RETRAIN_LINE, out)] == [1, 2, 3], out
    result = json.loads(Path('retrain/result.json').read_text())
    assert result['space'] == 'rnn' and result['vocabulary_size'] == len(vocabulary)
    assert 1 < result['test_ppl'] < len(vocabulary) and math.isfinite(result['valid_ppl'])
    assert result['test_loss'] == pytest.approx(math.log(result['test_ppl']), rel=1e-4)
    assert result['parameters'] > 0 and result['epochs'] == 3 and result['test_batch_size'] == 1
    assert json.loads(Path('retrain/vocabulary.json').read_text()) == vocabulary
    assert f'test perplexity {result["test_ppl"]:.2f}' in out
    assert finals[:3] == [('epoch', 'val_ppl')] * 3 and finals[3][:2] == ('final', 'test_ppl')
    assert finals[3][2]['test_ppl'] == result['test_ppl']
    assert {'train_loss', 'train_ppl', 'val_ppl', 'val_loss', 'retrain/tokens_per_s', 'retrain/best_val_ppl',
            'test_ppl'} <= scalar_tags('retrain/tensorboard')
    assert Path('retrain/architecture.png').is_file() and Path('retrain/checkpoints/last.ckpt').is_file()


def scalar_tags(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder), size_guidance={'scalars': 0})
    events.Reload()
    return set(events.Tags()['scalars'])


def test_retrain_resumed_at_an_epoch_boundary_ends_as_an_uninterrupted_one(text, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ['--arc', 'paper-rnn', *RETRAIN, '--dataset', 'textfolder', '--data-dir', text, '--seed', '3']
    assert call(retrain.main, [*common, '--epochs', '3', '--output', 'straight'], capsys)[0] == 0
    assert call(retrain.main, [*common, '--epochs', '2', '--output', 'stopped'], capsys)[0] == 0
    rc, out, err = call(retrain.main, ['--resume', 'stopped', '--epochs', '3'], capsys)
    assert rc == 0, err
    assert [int(m[1]) for m in lines(RETRAIN_LINE, out)] == [3]
    a, b = (json.loads(Path(f'{run}/result.json').read_text()) for run in ('straight', 'stopped'))
    assert a['weights_sha256'] == b['weights_sha256'] and a['test_ppl'] == b['test_ppl']
    assert a['averaging_from_epoch'] == b['averaging_from_epoch'] and a['best_epoch'] == b['best_epoch']


def test_paper_cell_retrains_on_synthetic_text(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = call(retrain.main, ['--arc', 'paper-rnn', *RETRAIN, '--dataset', 'synthetic', '--synthetic-size',
                                       '3000', '--epochs', '1', '--test-batch-size', '3', '--output', 'run'], capsys)
    assert rc == 0, err
    result = json.loads(Path('run/result.json').read_text())
    assert result['space_args']['num_nodes'] == 12 and result['space_args']['hidden_size'] == 8
    assert result['paper'] is None              # not at the paper's width: no comparison
    assert math.isfinite(result['test_ppl']) and result['test_batch_size'] == 3


def test_search_resumed_at_an_epoch_boundary_ends_as_an_uninterrupted_one(text, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = [*SEARCH, '--dataset', 'textfolder', '--data-dir', text]
    assert call(search.main, [*common, '--epochs', '3', '--output', 'straight', '--export', 'a.json'], capsys)[0] == 0
    assert call(search.main, [*common, '--epochs', '2', '--output', 'stopped', '--export', 'b.json'], capsys)[0] == 0
    rc, out, err = call(search.main, ['--resume', 'stopped', '--epochs', '3'], capsys)
    assert rc == 0, err
    assert [int(m[1]) for m in lines(SEARCH_LINE, out)] == [3]
    a, b = load_architecture('a.json'), load_architecture('b.json')
    assert a['arch'] == b['arch'] and a['vocabulary'] == b['vocabulary']
    for key in ('reward', 'mean_reward', 'greedy', 'epoch'):
        assert a['provenance'][key] == b['provenance'][key], key
    sa = torch.load('straight/checkpoints/last.ckpt', weights_only=True)
    sb = torch.load('stopped/checkpoints/last.ckpt', weights_only=True)
    assert all(torch.equal(sa['state_dict'][k], sb['state_dict'][k]) for k in sa['state_dict'])


def test_nan_loss_stops_the_search_with_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = call(search.main, [*SEARCH, '--dataset', 'synthetic', '--synthetic-size', '2000', '--epochs', '2',
                                      '--lr', '1e30', '--grad-clip', '0', '--output', 'run'], capsys)
    assert rc == 1, out + err
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and 'NaN/inf in epoch 1/2' in errors[0] and 'try a lower --lr' in errors[0], err
    assert '--lr-max' not in errors[0]


def test_sigterm_stops_the_search_and_it_resumes(text, tmp_path):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO)}
    for key in ('NNI_PLATFORM', 'NNI_TRIAL_COMMAND_CHANNEL'):
        env.pop(key, None)
    argv = [sys.executable, str(REPO / 'search.py'), *SEARCH, '--dataset', 'textfolder', '--data-dir', str(text),
            '--epochs', '50', '--output', 'run']
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith('epoch 1/'):
            break
    checkpoint = tmp_path / 'run' / 'checkpoints' / 'last.ckpt'
    while not checkpoint.exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert 'SIGTERM: stopped in epoch' in err and 'search.py --resume run' in err
    done = checkpoint_epoch(checkpoint)
    assert 1 <= done < 50 and load_architecture(tmp_path / 'run' / 'exported.json')['provenance']['epoch'] == done


# --------------------------------------------------------------------------------------------
# the commands' help and bad input
# --------------------------------------------------------------------------------------------

def test_help_gives_the_rnn_defaults(capsys):
    rc, out, _ = call(search.main, ['-h'], capsys)
    text = ' '.join(out.split())
    assert rc == 0
    for expected in ('default: macro 310 / micro 150 / rnn 150', 'default: rnn 200', 'default: rnn 35',
                     'default: macro 0.001 / micro 0.0035 / rnn 0.00035', 'default: rnn 5.0', 'default: rnn 80.0',
                     'default: macro 5.0 / micro 5.0 / rnn 0.1', 'rnn: ptb', 'textfolder', 'wikitext2'):
        assert expected in text, expected
    rc, out, _ = call(retrain.main, ['-h'], capsys)
    text = ' '.join(out.split())
    for expected in ('default: rnn 800', 'micro 630 / rnn 3000', 'default: rnn 0.7', 'default: rnn 1)',
                     'default: macro 5.0 / micro 5.0 / rnn 0.25', 'paper-rnn'):
        assert expected in text, expected


@pytest.fixture(scope='module')
def bad(tmp_path_factory, text):
    root = tmp_path_factory.mktemp('bad')
    (root / 'no-train').mkdir()
    (root / 'no-train' / 'valid.txt').write_text(' a b \n')
    (root / 'no-train' / 'test.txt').write_text(' a b \n')
    write_text_folder(root / 'empty')
    (root / 'empty' / 'train.txt').write_text('')
    other = write_text_folder(root / 'other')
    (other / 'test.txt').write_text(' zebras graze quietly \n')
    record = {'format': 'nni-enas/1', 'space': 'rnn', 'space_args': {'vocab_size': 10, 'num_nodes': 3, 'hidden_size': 8},
              'arch': {'node_0/act': 'tanh', 'node_1/prev': 0, 'node_1/act': 'relu', 'node_2/prev': 1,
                       'node_2/act': 'tanh'}}
    good = dict(record, vocabulary=Path(text, 'train.txt').read_text().split()[:1] + ['<eos>'])
    good['space_args'] = dict(record['space_args'], vocab_size=2)
    for name, arch in (('prev', {'node_2/prev': 5}), ('act', {'node_1/act': 'swish'})):
        (root / f'{name}.json').write_text(json.dumps(dict(record, arch={**record['arch'], **arch})))
    (root / 'good.json').write_text(json.dumps(good))
    (root / 'mismatch.json').write_text(json.dumps(dict(good, space_args=dict(good['space_args'], vocab_size=3))))
    return root


BAD_SEARCHES = {
    'missing folder': (['--dataset', 'textfolder', '--data-dir', '{bad}/none'], 'none'),
    'folder without train.txt': (['--dataset', 'textfolder', '--data-dir', '{bad}/no-train'], 'train.txt'),
    'empty train.txt': (['--dataset', 'textfolder', '--data-dir', '{bad}/empty'], 'train.txt'),
    'image dataset': (['--dataset', 'cifar10'], 'needs text'),
    'hidden 1e9': (['--hidden-size', '1000000000'], 'argument --hidden-size: expected an integer from 1 to 65536'),
    'supernet too large': (['--dataset', 'textfolder', '--data-dir', '{text}', '--hidden-size', '60000', '--nodes',
                            '16'], 'shared weights'),
    'nodes 0': (['--nodes', '0'], 'argument --nodes: expected an integer from 1 to 16'),
    'controller too large': (['--lstm-size', '20000'], '--lstm-size 20000: the controller would have about'),
    'cnn option': (['--lr-max', '0.1'], '--lr-max is only for --search-for macro or micro'),
    'valid size': (['--valid-size', '10'], '--valid-size is only for --search-for macro or micro'),
}


@pytest.mark.parametrize('case', BAD_SEARCHES)
def test_bad_search_input_is_one_error_line(case, bad, text, tmp_path, capsys, monkeypatch):
    argv, expected = BAD_SEARCHES[case]
    monkeypatch.chdir(tmp_path)
    rc, out, err = call(search.main, [*SEARCH, *[a.format(bad=bad, text=text) for a in argv]], capsys)
    assert rc == 2 and out == ''
    assert err.startswith('error: ') and err.count('\n') == 1 and expected in err, err
    assert list(tmp_path.iterdir()) == []                  # nothing written


def test_rnn_options_are_refused_for_image_spaces(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = call(search.main, ['--search-for', 'macro', '--hidden-size', '8'], capsys)
    assert rc == 2 and err.count('\n') == 1 and '--hidden-size is only for --search-for rnn' in err
    rc, _, err = call(search.main, ['--search-for', 'micro', '--dataset', 'ptb'], capsys)
    assert rc == 2 and err.count('\n') == 1 and 'macro and micro need images' in err
    assert list(tmp_path.iterdir()) == []


BAD_RETRAINS = {
    'out-of-range previous node': (['--arc', '{bad}/prev.json'], 'node_2/prev'),
    'unknown activation': (['--arc', '{bad}/act.json'], 'swish'),
    'vocabulary size mismatch': (['--arc', '{bad}/mismatch.json'], 'vocab'),
    'word not in the vocabulary': (['--arc', '{bad}/good.json'], 'cat'),
    'test word unknown': (['--arc', 'paper-rnn', '--data-dir', '{bad}/other'], 'zebras'),
    'hidden 1e9': (['--arc', 'paper-rnn', '--hidden-size', '1000000000'], 'argument --hidden-size'),
    'network too large': (['--arc', 'paper-rnn', '--hidden-size', '60000'], 'parameters, more than 1,000,000,000'),
    'cnn option': (['--arc', 'paper-rnn', '--cutout', '4'], '--cutout is only for image (macro, micro) architectures'),
    'missing folder': (['--arc', 'paper-rnn', '--data-dir', '{bad}/none'], 'none'),
}


@pytest.mark.parametrize('case', BAD_RETRAINS)
def test_bad_retrain_input_is_one_error_line(case, bad, text, tmp_path, capsys, monkeypatch):
    argv, expected = BAD_RETRAINS[case]
    monkeypatch.chdir(tmp_path)
    argv = ['--dataset', 'textfolder', '--data-dir', str(text), *RETRAIN,
            *[a.format(bad=bad, text=text) for a in argv]]
    rc, out, err = call(retrain.main, argv, capsys)
    assert rc == 2 and out == ''
    assert err.startswith('error: ') and err.count('\n') == 1 and expected in err, err
    assert list(tmp_path.iterdir()) == []
