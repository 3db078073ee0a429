"""``Enas`` as an NNI 3.0 strategy on spaces that are not ours, through ``NasExperiment``.

Tiny spaces and synthetic tensors with NNI's own ``Classification`` / ``Regression``
evaluators: nested batches, a regression space rewarded by ``val_mse``, ``Repeat`` with a depth
choice, a ``Cell``, value choices on layer parameters and NNI's hub spaces. Plus the module's
contracts: the controller phase runs at the epoch's end (not inside the last step), no host sync
per child step, and the controller stays on the CPU (out of the module tree) through moves and
checkpoints. Everything NNI writes goes under pytest's ``tmp_path``.
"""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nni  # noqa: E402
import nni_enas  # noqa: E402,F401  (filters NNI's harmless warning)
import pytorch_lightning as pl  # noqa: E402
from nni.nas.evaluator.pytorch import Classification, Regression  # noqa: E402
from nni.nas.evaluator.pytorch import DataLoader as TracedDataLoader  # noqa: E402
from nni.nas.evaluator.pytorch.lightning import LightningModule  # noqa: E402
from nni.nas.nn.pytorch import Cell, LayerChoice, ModelSpace, MutableLinear, Repeat  # noqa: E402

from nni_enas import ArchitectureExport, Enas, EnasModule, EnasTrainer, MacroSpace  # noqa: E402
from nni_enas.search.enas import reward_direction  # noqa: E402
from nni_enas.training.classification import ChildTraining, accuracy  # noqa: E402

torch.set_num_threads(1)

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


# --------------------------------------------------------------------------- helpers

def run_experiment(tmp_path, monkeypatch, space, evaluator, strategy):
    """Run ``NasExperiment(space, evaluator, strategy)``; return the exported architecture dict."""
    from nni.nas.experiment import NasExperiment
    import nni.nas.experiment.experiment as experiment_module
    from nni.tools.nnictl.config_utils import Experiments

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('NNI_CONFIG_DIR', str(tmp_path / 'nni-config'))
    monkeypatch.setattr(experiment_module, 'Experiments', lambda: Experiments(home_dir=str(tmp_path / 'manifest')))
    experiment = NasExperiment(space, evaluator, strategy)
    experiment.config.experiment_working_directory = str(tmp_path / 'nni-experiments')
    try:
        experiment.run()
        return experiment.export_top_models(formatter='dict')[0]
    finally:
        experiment.stop()


def classification(data, num_classes, tmp_path, batch_size=4, **kwargs):
    return Classification(train_dataloaders=TracedDataLoader(data, batch_size=batch_size),
                          val_dataloaders=TracedDataLoader(data, batch_size=batch_size),
                          max_epochs=1, num_classes=num_classes, export_onnx=False, learning_rate=0.01,
                          default_root_dir=str(tmp_path), **QUIET, **kwargs)


def images(n=8, size=8, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g))


def params_of(module):
    return [p.detach().clone() for p in module.parameters()]


def assert_valid_export(space, arch):
    """Every label of the space is exported, each with one of its values."""
    spec = space.simplify()
    assert set(arch) == set(spec), (sorted(arch), sorted(spec))
    for label, mutable in spec.items():
        value = arch[label]
        if isinstance(value, list):
            assert all(v in mutable.values for v in value), (label, value)
        else:
            assert value in mutable.values, (label, value)
    return spec


class ControllerWatch:
    """Wrap a strategy's module set-up to remember the controller's initial parameters."""

    def __init__(self, monkeypatch):
        self.before = None
        self.module = None
        original = Enas.configure_oneshot_module
        watch = self

        def configure(strategy, training_module):
            module = original(strategy, training_module)
            original_set_model = module.set_model

            def set_model(model):
                original_set_model(model)
                if watch.before is None:
                    watch.before = params_of(module.controller)
                    watch.module = module
            module.set_model = set_model
            return module
        monkeypatch.setattr(Enas, 'configure_oneshot_module', configure)

    def controller_changed(self):
        after = params_of(self.module.controller)
        return any(not torch.equal(a, b) for a, b in zip(self.before, after))


# --------------------------------------------------------------------------- nested batches

class QKV(Dataset):
    """``((q, k, v), y)``: a batch structure that is not ``(tensor, tensor)``."""

    def __init__(self, n=8, length=3, dim=4, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.q, self.k, self.v = (torch.randn(n, length, dim, generator=g) for _ in range(3))
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return (self.q[i], self.k[i], self.v[i]), self.y[i]


class AttentionSpace(ModelSpace):
    def __init__(self, dim=4):
        super().__init__()
        self.proj = LayerChoice([nn.Linear(dim, dim), nn.Sequential(nn.Linear(dim, dim), nn.ReLU())], label='proj')
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        q, k, v = x                          # the evaluator hands the model the whole input structure
        attention = torch.softmax(q @ k.transpose(1, 2) / 2, dim=-1) @ v
        return self.head(self.proj(attention).mean(1))


@pytest.mark.parametrize('reward', ['metric', 'function'])
def test_nested_batches_reach_the_model_and_the_reward(reward, tmp_path, monkeypatch):
    torch.manual_seed(0)
    seen = []

    def reward_function(logits, target):
        seen.append((tuple(logits.shape), tuple(target.shape)))
        return accuracy(logits, target)

    kwargs = dict(reward_metric_name='val_acc') if reward == 'metric' else dict(reward_function=reward_function)
    watch = ControllerWatch(monkeypatch)
    space = AttentionSpace()
    arch = run_experiment(tmp_path, monkeypatch, space, classification(QKV(), 3, tmp_path),
                          Enas(ctrl_steps=1, ctrl_steps_aggregate=2, num_candidates=2, ctrl_lr=0.05, **kwargs))
    assert_valid_export(AttentionSpace(), arch)
    assert watch.controller_changed()
    stats = watch.module.epoch_stats
    assert stats['samples'] == 2 and 0.0 <= stats['reward'] <= 1.0 + 1e-3     # an accuracy
    if reward == 'function':
        # the reward function saw the evaluator's outputs (logits) and targets of the validation batches
        assert seen and all(s == ((4, 3), (4,)) for s in seen)


# --------------------------------------------------------------------------- regression, val_mse

class Oracle(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))     # something to train (barely moves at lr 1e-5)

    def forward(self, x):
        return 3 * self.scale * x.sum(1, keepdim=True)


class RegressionSpace(ModelSpace):
    def __init__(self):
        super().__init__()
        bad = nn.Linear(4, 1)
        nn.init.zeros_(bad.weight)
        self.op = LayerChoice({'oracle': Oracle(), 'bad': bad}, label='op')

    def forward(self, x):
        return self.op(x)


def test_regression_rewarded_by_minus_val_mse(tmp_path, monkeypatch):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 4, generator=g)
    data = TensorDataset(x, 3 * x.sum(1, keepdim=True))
    evaluator = Regression(train_dataloaders=TracedDataLoader(data, batch_size=4),
                           val_dataloaders=TracedDataLoader(data, batch_size=4), max_epochs=1, learning_rate=1e-5,
                           export_onnx=False, default_root_dir=str(tmp_path), **QUIET)
    watch = ControllerWatch(monkeypatch)
    recorded = []
    original_reward = EnasModule._reward

    def reward(self, batch, batch_idx=0):
        value = original_reward(self, batch, batch_idx)
        recorded.append((self.controller_arch_now(), float(value)))
        return value

    def arch_now(self):
        return next(m for m in self.supernet_modules() if getattr(m, 'label', None) == 'op')._sampled

    monkeypatch.setattr(EnasModule, '_reward', reward)
    monkeypatch.setattr(EnasModule, 'controller_arch_now', arch_now, raising=False)
    space = RegressionSpace()
    probs = {}
    original_set_model = EnasModule.set_model

    def set_model(self, model):
        first = self.controller is None
        original_set_model(self, model)
        if first:
            probs['before'] = self.controller.choice_probabilities()['op']
    monkeypatch.setattr(EnasModule, 'set_model', set_model)

    arch = run_experiment(tmp_path, monkeypatch, space, evaluator,
                          Enas(reward_metric_name='val_mse', ctrl_steps=4, ctrl_steps_aggregate=4,
                               num_candidates=4, ctrl_lr=0.1, baseline_decay=0.5))
    module = watch.module
    assert module.reward_metric_mode == 'min'
    # the rewards are minus the mean squared error: 0 for the oracle, about -36 for the zero line
    oracle = [r for a, r in recorded if a == 'oracle']
    bad = [r for a, r in recorded if a == 'bad']
    assert oracle and bad
    assert all(abs(r) < 1e-3 for r in oracle) and all(r < -5 for r in bad)
    assert module.epoch_stats['reward'] < 0
    # the controller moved toward the lower-mse choice, and exports it
    after = module.controller.choice_probabilities()['op']
    values = list(space.simplify()['op'].values)
    oracle_index = values.index('oracle')
    assert after[oracle_index] > probs['before'][oracle_index] + 0.05
    assert arch == {'op': 'oracle'}


def test_reward_direction_rule_and_argument_errors():
    assert [reward_direction(n) for n in ('val_mse', 'val_loss', 'test_MAE', 'top1_error', 'val_acc', 'f1')] == \
        ['min', 'min', 'min', 'min', 'max', 'max']
    assert reward_direction('val_loss', 'max') == 'max'
    with pytest.raises(ValueError, match="'max' or 'min'"):
        reward_direction('val_acc', 'up')
    with pytest.raises(ValueError, match='not both'):
        Enas(reward_metric_name='val_acc', reward_function=accuracy)
    with pytest.raises(ValueError, match='not both'):
        EnasModule(LightningModule(), reward_metric_name='val_acc', reward_function=accuracy)
    with pytest.raises(TypeError, match='reward_metric'):
        Enas(reward_metric='val_acc')
    with pytest.raises(ValueError, match='cuda_graphs'):
        EnasModule(LightningModule(), cuda_graphs='on')


def test_reward_metric_not_logged_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"reward_metric_name='val_f1' was not logged.*'val_acc'"):
        run_experiment(tmp_path, monkeypatch, AttentionSpace(), classification(QKV(), 3, tmp_path),
                       Enas(reward_metric_name='val_f1', ctrl_steps=1, ctrl_steps_aggregate=1, num_candidates=1))


# --------------------------------------------------------------------------- Repeat, Cell, value choices

class RepeatSpace(ModelSpace):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = Repeat(lambda i: LayerChoice([nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)],
                                                   label=f'block{i}'), nni.choice('depth', [1, 2, 3]))
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class CellSpace(ModelSpace):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.cell = Cell({'conv': nn.Conv2d(4, 4, 3, padding=1), 'pool': nn.AvgPool2d(3, 1, 1)},
                         num_nodes=2, num_ops_per_node=2, num_predecessors=1, merge_op='all', label='cell')
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.cell(self.stem(x)).mean((2, 3)))


class WidthSpace(ModelSpace):
    def __init__(self):
        super().__init__()
        width = nni.choice('width', [4, 8])
        self.fc1 = MutableLinear(3 * 8 * 8, width)
        self.fc2 = MutableLinear(width, 10)
        self.act = LayerChoice([nn.ReLU(), nn.Tanh()], label='act')

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x.flatten(1))))


@pytest.mark.parametrize('make_space', [RepeatSpace, CellSpace, WidthSpace], ids=['repeat', 'cell', 'width'])
def test_nni_structures(make_space, tmp_path, monkeypatch):
    torch.manual_seed(0)
    watch = ControllerWatch(monkeypatch)
    arch = run_experiment(tmp_path, monkeypatch, make_space(), classification(images(), 10, tmp_path),
                          # 2 x 6 samples: at random initialisation every child may score the same
                          # accuracy, and only samples that differ (the entropy bonus) give a gradient
                          Enas(reward_metric_name='val_acc', ctrl_steps=2, ctrl_steps_aggregate=6,
                               num_candidates=3, ctrl_lr=0.05))
    spec = assert_valid_export(make_space(), arch)
    assert watch.controller_changed()
    if make_space is RepeatSpace:
        assert {'depth', 'block0', 'block1', 'block2'} <= set(spec)
    if make_space is WidthSpace:
        assert arch['width'] in (4, 8)
    # the exported architecture builds and runs
    model = make_space().freeze(arch)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


# --------------------------------------------------------------------------- NNI hub spaces

def hub_space(name):
    from nni.nas.hub.pytorch import DARTS, ENAS, NasBench201
    if name == 'nasbench201':
        return NasBench201(stem_out_channels=4, num_modules_per_stack=1, num_labels=10)
    cls = {'nds-enas': ENAS, 'darts': DARTS}[name]
    return cls(width=4, num_cells=3, dataset='cifar')


@pytest.mark.parametrize('name', ['nasbench201', 'nds-enas', 'darts'])
def test_hub_spaces(name, tmp_path, monkeypatch):
    torch.manual_seed(0)
    watch = ControllerWatch(monkeypatch)
    arch = run_experiment(tmp_path, monkeypatch, hub_space(name), classification(images(), 10, tmp_path),
                          Enas(reward_metric_name='val_acc', ctrl_steps=1, ctrl_steps_aggregate=2,
                               num_candidates=2, ctrl_lr=0.05))
    assert_valid_export(hub_space(name), arch)
    assert watch.controller_changed()
    assert math.isfinite(watch.module.epoch_stats['reward'])


# --------------------------------------------------------------------------- the module's contracts

def tiny_trainer(tmp_path, callbacks=(), epochs=1, trainer_kwargs=None, reward_function=accuracy, **kwargs):
    space = MacroSpace(num_layers=2, channels=4)
    data = images(16, size=8)
    return EnasTrainer(space, nn.CrossEntropyLoss(), None, reward_function,
                       torch.optim.SGD(space.parameters(), lr=0.05), epochs, (data, data), batch_size=4,
                       workers=0, device='cpu', ctrl_steps=2, ctrl_steps_aggregate=2, num_candidates=2,
                       callbacks=list(callbacks),
                       trainer_kwargs=dict(enable_progress_bar=False, default_root_dir=str(tmp_path),
                                           **(trainer_kwargs or {})), **kwargs)


def test_controller_phase_runs_at_epoch_end_before_the_checkpoint(tmp_path):
    class Watch(pl.Callback):
        def __init__(self):
            self.steps_with_controller_changed = 0
            self.at_epoch_end = None

        def on_train_epoch_start(self, trainer, module):
            self.start = params_of(module.controller)

        def on_train_batch_end(self, trainer, module, *args):
            if any(not torch.equal(a, b) for a, b in zip(self.start, params_of(module.controller))):
                self.steps_with_controller_changed += 1

        def on_train_epoch_end(self, trainer, module):
            self.at_epoch_end = dict(global_step=trainer.global_step, stats=dict(module.epoch_stats),
                                     metrics=set(trainer.callback_metrics), export=export.last,
                                     changed=any(not torch.equal(a, b)
                                                 for a, b in zip(self.start, params_of(module.controller))))

    export = ArchitectureExport()
    watch = Watch()
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / 'ckpt', filename='last', save_on_train_epoch_end=True)
    trainer = tiny_trainer(tmp_path, [export, watch, checkpoint], trainer_kwargs=dict(enable_checkpointing=True))
    trainer.fit()
    # no training step trained the controller: the phase ran after the 4 ordinary child steps
    assert watch.steps_with_controller_changed == 0
    seen = watch.at_epoch_end
    assert seen['global_step'] == 4 and seen['changed']
    assert seen['stats']['samples'] == 4 and 'ctrl_reward' in seen['metrics'] and 'ctrl_export_reward' in seen['metrics']
    assert seen['export'] is export.last and export.last.epoch == 1
    assert trainer.export() == export.last.arch       # the last epoch's export, not a new sample
    # the checkpoint written at the epoch's end holds the trained controller and its Adam state
    saved = torch.load(tmp_path / 'ckpt' / 'last.ckpt', weights_only=True)
    for key, value in trainer.controller.state_dict().items():
        assert torch.equal(saved['state_dict'][f'controller.{key}'], value), key
    assert saved['enas_controller_optimizer']['state'], 'no Adam state saved'
    assert len(saved['optimizer_states']) == 1          # Lightning's optimizers: the child's only


@pytest.mark.parametrize('recipe', ['plain', 'ours'])
def test_no_host_sync_per_child_step(recipe, tmp_path, monkeypatch):
    class Recipe(LightningModule):
        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self.model(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.model.parameters(), lr=0.05)

    supernet = Enas().mutate_model(MacroSpace(num_layers=2, channels=4))
    training = Recipe() if recipe == 'plain' else ChildTraining(optimizer=lambda p: torch.optim.SGD(p, lr=0.05))
    module = EnasModule(training, ctrl_steps=1, ctrl_steps_aggregate=2, num_candidates=2)
    module.set_model(supernet)
    loader = torch.utils.data.DataLoader(images(16), batch_size=4)
    module.reward_dataloader = loader

    calls = {'sync': 0, 'steps': 0, 'sample_batch': []}
    inside = [False]
    for name in ('item', '__bool__', '__float__', '__int__', 'tolist'):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            if inside[0]:
                calls['sync'] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    original_step = EnasModule.training_step

    def training_step(self, batch, batch_idx):
        inside[0] = True
        try:
            calls['steps'] += 1
            return original_step(self, batch, batch_idx)
        finally:
            inside[0] = False
    monkeypatch.setattr(EnasModule, 'training_step', training_step)
    original_sample_batch = type(module.controller).sample_batch
    monkeypatch.setattr(type(module.controller), 'sample_batch',
                        lambda self, n: calls['sample_batch'].append(n) or original_sample_batch(self, n))

    walks = []
    original_walk = EnasModule.supernet_modules
    monkeypatch.setattr(EnasModule, 'supernet_modules', lambda self: walks.append(1) or original_walk(self))

    trainer = pl.Trainer(max_epochs=1, default_root_dir=str(tmp_path), **QUIET)
    trainer.fit(module, train_dataloaders=loader)
    assert calls['steps'] == 4 and calls['sync'] == 0
    assert len(walks) == 1          # the supernet modules are found once, not by a tree walk per child step
    # the epoch's 4 children in one batch, then one batch per controller update and one for the export
    assert calls['sample_batch'] == [4, 2]
    module.export_epoch()
    assert calls['sample_batch'] == [4, 2, 2]


def test_nan_child_loss_stops_at_the_epoch_end_before_the_controller(tmp_path):
    class NaNRecipe(LightningModule):
        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, batch_idx):
            loss = F.cross_entropy(self.model(batch[0]), batch[1])
            return loss * float('nan') if batch_idx == 2 else loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.model.parameters(), lr=0.05)

    supernet = Enas().mutate_model(MacroSpace(num_layers=2, channels=4))
    module = EnasModule(NaNRecipe(), ctrl_steps=1, ctrl_steps_aggregate=2, num_candidates=2)
    module.set_model(supernet)
    loader = torch.utils.data.DataLoader(images(16), batch_size=4)
    module.reward_dataloader = loader
    before = params_of(module.controller)
    export = ArchitectureExport()
    trainer = pl.Trainer(max_epochs=1, default_root_dir=str(tmp_path), callbacks=[export], **QUIET)
    with pytest.raises(nni_enas.training.classification.NonFiniteLossError, match='child loss is nan at epoch 0, step 2'):
        trainer.fit(module, train_dataloaders=loader)
    assert export.last is None and not module.epoch_stats
    assert all(torch.equal(a, b) for a, b in zip(before, params_of(module.controller)))


def test_controller_stays_on_the_cpu_out_of_the_module_tree(tmp_path):
    trainer = tiny_trainer(tmp_path)
    trainer.fit()
    module, controller = trainer.module, trainer.controller
    ids = {id(p) for p in controller.parameters()}
    assert not ids & {id(p) for p in module.parameters()}            # not a submodule: .to() leaves it
    child_optimizer = trainer.trainer.optimizers
    assert len(child_optimizer) == 1
    assert not ids & {id(p) for group in child_optimizer[0].param_groups for p in group['params']}
    values = params_of(controller)
    adam = {k: v.clone() for k, v in module.ctrl_optimizer.state_dict()['state'][0].items()}
    module.to(torch.float64)                                          # a cast every registered tensor follows
    module.to('meta')                                                 # stand-in for a CUDA device
    assert next(module.training_module.parameters()).device.type == 'meta'
    assert all(p.device.type == 'cpu' and p.dtype == torch.float32 for p in controller.parameters())
    assert all(torch.equal(a, b) for a, b in zip(values, params_of(controller)))
    assert module.baseline.device.type == 'cpu' and module.baseline_ready.item()
    state = module.ctrl_optimizer.state_dict()['state'][0]
    assert all(torch.equal(adam[k], state[k]) and state[k].device.type == 'cpu' for k in adam)

    # a checkpoint round trip into a fresh module restores controller, baseline and Adam, on the CPU
    saved = {'state_dict': {k: v for k, v in trainer.module.state_dict().items() if k.startswith(('controller.',
                                                                                                 'baseline'))}}
    module.on_save_checkpoint(saved)
    fresh = tiny_trainer(tmp_path / 'fresh').module
    assert not all(torch.equal(a, b) for a, b in zip(values, params_of(fresh.controller)))
    fresh.on_load_checkpoint(saved)
    missing, unexpected = fresh.load_state_dict(saved['state_dict'], strict=False)
    assert not unexpected and not [k for k in missing if k.startswith(('controller.', 'baseline'))]
    assert all(torch.equal(a, b) for a, b in zip(values, params_of(fresh.controller)))
    assert fresh.baseline.item() == module.baseline.item() and fresh.baseline_ready.item()
    restored = fresh.ctrl_optimizer.state_dict()['state'][0]
    assert all(torch.equal(adam[k], restored[k]) and restored[k].device.type == 'cpu' for k in adam)


def test_export_writes_our_exported_json(tmp_path):
    from nni_enas.architecture import load_architecture
    trainer = tiny_trainer(tmp_path, epochs=2, export_path=str(tmp_path / 'exported.json'))
    trainer.fit()
    record = load_architecture(tmp_path / 'exported.json')
    exported = trainer.trainer.callbacks[0].last
    assert record['arch'] == exported.arch == trainer.export()
    assert record['provenance']['epoch'] == 2 and record['provenance']['epochs'] == 2
    assert record['provenance']['reward'] == exported.reward and record['provenance']['greedy'] == exported.greedy
    assert set(exported.probabilities) == set(exported.arch)


def test_export_provenance_may_name_any_field(tmp_path):
    """Provenance fields merge into the record: epochs is the user's, the export's own facts stay."""
    from nni_enas.architecture import load_architecture
    path = tmp_path / 'exported.json'
    export = ArchitectureExport(path, space=MacroSpace(num_layers=2, channels=4),
                                provenance=lambda trainer: dict(epochs=7, epoch=99, reward=-1.0, seed=3))
    trainer = tiny_trainer(tmp_path, [export])
    trainer.fit()
    provenance = load_architecture(path)['provenance']
    assert provenance['epochs'] == 7 and provenance['seed'] == 3
    assert provenance['epoch'] == 1 and provenance['reward'] == export.last.reward != -1.0


def test_cuda_graphs_wiring_calls_graph_supernet_once_per_module(tmp_path, monkeypatch):
    """The module hands its supernet to nni_enas.training.cuda_graphs once, when the first fit starts on its device."""
    import nni_enas.search.enas
    calls = []

    def graph_supernet(supernet, mode='auto', *, device=None, wrapper=None):
        calls.append((supernet, mode, torch.device(device)))
        return ['stem'] if mode == 'auto' else []
    monkeypatch.setattr(nni_enas.search.enas, 'graph_supernet', graph_supernet)
    trainer = tiny_trainer(tmp_path, epochs=1, cuda_graphs='off')
    trainer.fit()
    assert calls == [(trainer.supernet, 'off', torch.device('cpu'))] and trainer.module.graphed_modules == []
    trainer.trainer.fit_loop.max_epochs = 2
    trainer.fit()                                   # a second fit of the same module: not wrapped again
    assert len(calls) == 1
    trainer = tiny_trainer(tmp_path / 'auto', epochs=1)
    trainer.fit()
    assert calls[-1][1] == 'auto' and trainer.module.graphed_modules == ['stem']


def test_statistics_are_logged_inside_a_fit_and_export_works_outside_one(tmp_path, monkeypatch):
    """ctrl_* go to Lightning's log during a fit; export_epoch before or after a fit just returns its result."""
    logged = []
    original_log = EnasModule.log

    def log(self, name, value, *args, **kwargs):
        logged.append(name)
        return original_log(self, name, value, *args, **kwargs)
    monkeypatch.setattr(EnasModule, 'log', log)
    trainer = tiny_trainer(tmp_path, [ArchitectureExport()])
    module = trainer.module
    before = module.export_epoch()                    # never attached to a Trainer
    assert before.epoch is None and before.controller_version == 0 and logged == []
    trainer.fit()
    assert {'ctrl_reward', 'ctrl_baseline', 'ctrl_export_reward'} <= set(logged)
    assert 'ctrl_export_reward' in trainer.trainer.callback_metrics
    logged.clear()
    stats = module.train_controller()                 # after the fit: the trainer is attached but finished
    after = module.export_epoch()
    assert after is not before and after.controller_version == module._controller_version > 0
    assert stats['samples'] == 4 and logged == []


def test_reward_metric_recording_restores_the_recipes_log(tmp_path):
    """The recipe's log is shadowed only while its validation_step runs, and put back if that raises."""
    trainer = tiny_trainer(tmp_path, reward_function=None, reward_metric_name='test_acc')
    module, recipe = trainer.module, trainer.module.training_module
    original_step = type(recipe).validation_step

    def failing_step(batch, batch_idx):
        recipe.log('test_acc', torch.tensor(1.0))
        raise RuntimeError('validation_step failed')

    assert 'log' not in recipe.__dict__               # before a fit: the class's method
    recipe.validation_step = failing_step
    with pytest.raises(RuntimeError, match='validation_step failed'):
        module.export_candidates()
    assert 'log' not in recipe.__dict__
    del recipe.validation_step
    trainer.fit()                                     # rewards read test_acc from what validation_step logs
    assert math.isfinite(module.epoch_stats['reward'])
    routed = recipe.__dict__['log']                   # NNI routes the recipe's log to the ENAS module's
    assert routed == module.log and type(recipe).validation_step is original_step
    recipe.validation_step = failing_step
    with pytest.raises(RuntimeError, match='validation_step failed'):
        module.export_candidates()
    assert recipe.__dict__['log'] is routed


def test_loading_a_controller_makes_the_last_export_stale(tmp_path):
    """export() returns the last epoch's export only while the controller it came from is still there."""
    trainer = tiny_trainer(tmp_path, [ArchitectureExport()])
    trainer.fit()
    module = trainer.module
    sampled = []
    original = module.export_candidates
    module.export_candidates = lambda: sampled.append(1) or original()
    assert module.export() == module.last_export.arch and sampled == []
    other = tiny_trainer(tmp_path / 'other').module
    module.load_state_dict(other.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(params_of(module.controller), params_of(other.controller)))
    module.export()
    assert sampled == [1]                             # the loaded controller's choice, not the old export
