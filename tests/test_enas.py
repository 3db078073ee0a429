"""The ENAS alternation: EnasTrainer epochs, export, and the Enas strategy inside NNI's NasExperiment.

Everything runs on tiny spaces and synthetic tensors; the NNI experiment writes only under
pytest's ``tmp_path``.

Runtime: about 5 s on the 2-core dev machine (plus the one-off nni import).
"""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nni_enas  # noqa: E402,F401  (filters NNI's harmless warning)
from nni.nas.oneshot.pytorch.strategy import RandomOneShot  # noqa: E402

from nni_enas import Enas, EnasModule, EnasTrainer, MacroSpace, MicroSpace  # noqa: E402
from nni_enas.architecture import check_arch  # noqa: E402
from nni_enas.training.classification import ChildTraining, NonFiniteLossError, accuracy  # noqa: E402
from nni_enas.search.controller import ControllerDivergedError  # noqa: E402
from nni_enas.spaces.supernet import PathSamplingAnyInput  # noqa: E402

torch.set_num_threads(1)   # 2 threads on 2 busy cores make tiny convs ~50x slower

SPACES = {
    'macro': (MacroSpace, dict(num_layers=3, channels=4)),
    'micro': (MicroSpace, dict(num_layers=1, channels=4, num_nodes=2)),
}


def synthetic(n=32, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g))


def quiet_trainer(tmp_path):
    return dict(enable_progress_bar=False, default_root_dir=str(tmp_path))


def clone_params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    after = module.state_dict()
    return [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]


# --------------------------------------------------------------------------- EnasTrainer

@pytest.mark.parametrize('which', ['macro', 'micro'])
def test_one_epoch_trains_shared_weights_and_controller(which, tmp_path):
    torch.manual_seed(0)
    cls, args = SPACES[which]
    space = cls(**args)
    trainer = EnasTrainer(space, nn.CrossEntropyLoss(), None, accuracy,
                          torch.optim.SGD(space.parameters(), lr=0.05, momentum=0.9), 1, synthetic(),
                          batch_size=8, workers=0, device='cpu', ctrl_steps=2, ctrl_steps_aggregate=3,
                          num_candidates=3, trainer_kwargs=quiet_trainer(tmp_path))
    assert trainer.supernet is space     # the space became the supernet in place
    assert trainer.controller is trainer.module.controller
    shared = clone_params(trainer.supernet)
    controller = clone_params(trainer.controller)
    assert trainer.module.baseline.item() == 0.0
    trainer.fit()

    moved = changed(shared, trainer.supernet)
    # always-used weights moved, and so did some candidate ops (only sampled paths are trained)
    assert {'stem.0.weight', 'classifier.weight'} <= set(moved)
    assert any('.op' in k and k.endswith('weight') for k in moved)
    assert changed(controller, trainer.controller), 'the controller was not updated'
    stats = trainer.module.epoch_stats
    for key in ('reward', 'entropy', 'baseline', 'loss'):
        assert math.isfinite(stats[key]), key
    assert 0.0 <= stats['reward'] <= 1.0 + 1e-3       # accuracy + 1e-4 * entropy
    assert stats['entropy'] > 0
    assert stats['samples'] == 2 * 3
    assert stats['child_seconds'] > 0 and stats['images_per_s'] > 0
    assert trainer.module.baseline_ready.item()
    assert trainer.module.baseline.item() != 0.0 and trainer.module.baseline.item() == pytest.approx(stats['baseline'])
    if which == 'macro':
        assert 0.0 <= stats['skip_rate'] <= 1.0
    else:
        assert 'skip_rate' not in stats            # the micro space has no skip decisions: no statistic

    check_space = cls(**args)
    arch = trainer.export()
    assert check_arch(check_space, arch) == []
    best, score, greedy = trainer.module.export_candidates()
    assert check_arch(check_space, best) == [] and check_arch(check_space, greedy) == []
    assert 0.0 <= score <= 1.0
    assert greedy == trainer.controller.greedy()
    # the exported architecture builds and runs
    assert check_space.freeze(arch)(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_nan_loss_raises(tmp_path):
    space = MacroSpace(num_layers=2, channels=4)
    trainer = EnasTrainer(space, lambda logits, y: logits.sum() * float('nan'), None, accuracy,
                          torch.optim.SGD(space.parameters(), lr=0.05), 1, synthetic(16),
                          batch_size=8, workers=0, device='cpu', ctrl_steps=1, ctrl_steps_aggregate=1,
                          num_candidates=1, trainer_kwargs=quiet_trainer(tmp_path))
    before = clone_params(trainer.controller)
    with pytest.raises(NonFiniteLossError, match='nan'):
        trainer.fit()
    # checked at the epoch's end (no device sync per step), before the controller phase: the
    # controller never learns from the epoch's NaN children (the commands keep the last good epoch's files)
    assert changed(before, trainer.controller) == []


def test_nan_loss_of_any_recipe_raises(tmp_path):
    """EnasModule checks the loss itself, whatever recipe (evaluator module) computes it."""
    import pytorch_lightning as pl

    class NoCheck(ChildTraining):
        def training_step(self, batch, batch_idx):
            return self.model(batch[0]).abs().sum() * float('inf')

    supernet = Enas().mutate_model(MacroSpace(num_layers=2, channels=4))
    module = EnasModule(NoCheck(optimizer=lambda params: torch.optim.SGD(params, lr=0.1)), ctrl_steps=1,
                        ctrl_steps_aggregate=1, num_candidates=1)
    module.set_model(supernet)
    loader = DataLoader(synthetic(16), batch_size=8)
    module.reward_dataloader = loader
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path))
    with pytest.raises(NonFiniteLossError, match='child loss is inf'):
        trainer.fit(module, train_dataloaders=loader)


def test_diverging_controller_raises_controller_diverged(tmp_path):
    """A controller learning rate that blows the controller up stops the fit like a NaN child loss.

    Before: torch's ``RuntimeError: probability tensor contains either inf, nan or element < 0``.
    """
    torch.manual_seed(0)
    space = MacroSpace(num_layers=2, channels=4)
    trainer = EnasTrainer(space, nn.CrossEntropyLoss(), None, accuracy, torch.optim.SGD(space.parameters(), lr=0.05),
                          1, synthetic(16), batch_size=8, workers=0, device='cpu', ctrl_steps=3, ctrl_steps_aggregate=2,
                          num_candidates=2, ctrl_lr=1e30, trainer_kwargs=quiet_trainer(tmp_path))
    with pytest.raises(ControllerDivergedError, match='controller diverged') as caught:
        trainer.fit()
    assert isinstance(caught.value, NonFiniteLossError)     # what the commands already stop on


def test_controller_phase_never_ends_with_nan_weights(tmp_path):
    """An update that leaves NaN/inf in the controller's weights stops the phase (no checkpoint can hold them)."""
    space = MacroSpace(num_layers=2, channels=4)
    trainer = EnasTrainer(space, nn.CrossEntropyLoss(), None, accuracy, torch.optim.SGD(space.parameters(), lr=0.05),
                          1, synthetic(16), batch_size=8, workers=0, device='cpu', ctrl_steps=2,
                          ctrl_steps_aggregate=2, num_candidates=1, trainer_kwargs=quiet_trainer(tmp_path))
    module = trainer.module
    real_step = module.ctrl_optimizer.step

    def step_then_poison(*args, **kwargs):        # the last update's step overflows one weight
        result = real_step(*args, **kwargs)
        if module._controller_version == 1:
            with torch.no_grad():
                module.controller.attn_v.weight[0, 0] = math.inf
        return result
    module.ctrl_optimizer.step = step_then_poison
    with pytest.raises(ControllerDivergedError, match=r'weights \(attn_v.weight\)'):
        module.train_controller()


def test_nan_controller_weights_are_caught_in_every_walk():
    from nni_enas import ReinforceController
    ctrl = ReinforceController(MacroSpace(num_layers=2, channels=4), lstm_size=8)
    arch = ctrl.greedy()
    with torch.no_grad():
        ctrl.g_emb.fill_(math.nan)
    # sampling (torch refuses NaN probabilities), and the walks without a sampler (greedy, given architectures)
    for walk in (lambda: ctrl.sample_batch(3), ctrl.greedy, ctrl.choice_probabilities, lambda: ctrl.evaluate(arch)):
        with pytest.raises(ControllerDivergedError, match='NaN/inf'):
            walk()


def test_nan_reward_is_a_nonfinite_loss_and_spares_the_controller(tmp_path):
    """A NaN reward (the child's metric) stops the phase before the controller learns from it."""
    space = MacroSpace(num_layers=2, channels=4)
    trainer = EnasTrainer(space, nn.CrossEntropyLoss(), None, lambda out, y: accuracy(out, y) * math.nan,
                          torch.optim.SGD(space.parameters(), lr=0.05), 1, synthetic(16), batch_size=8, workers=0,
                          device='cpu', ctrl_steps=1, ctrl_steps_aggregate=2, num_candidates=1,
                          trainer_kwargs=quiet_trainer(tmp_path))
    before = clone_params(trainer.controller)
    with pytest.raises(NonFiniteLossError, match='reward') as caught:
        trainer.fit()
    assert not isinstance(caught.value, ControllerDivergedError)
    assert changed(before, trainer.controller) == []


# --------------------------------------------------------------------------- InputChoice(n_chosen=None)

def test_any_subset_input_choice_path_samples_where_nni_refuses():
    with pytest.raises(ValueError, match='n_chosen'):
        RandomOneShot().mutate_model(MacroSpace(num_layers=3, channels=4))   # NNI 3.0's own limitation
    supernet = Enas().mutate_model(MacroSpace(num_layers=3, channels=4))
    skips = [m for m in supernet.modules() if isinstance(m, PathSamplingAnyInput)]
    assert [m.label for m in skips] == ['layer_1/skip', 'layer_2/skip']
    x = torch.randn(2, 3, 16, 16)
    ops = {f'layer_{i}/op': 'conv_3x3' for i in range(3)}
    supernet.eval()
    outputs = []
    for subset in ([], [0], [1], [0, 1]):
        arch = {**ops, 'layer_1/skip': [], 'layer_2/skip': subset}
        for m in supernet.modules():
            if hasattr(m, 'resample') and hasattr(m, 'label'):
                m.resample(memo=arch)
        assert skips[1]._sampled == subset
        with torch.no_grad():
            outputs.append(supernet(x))
    # the empty subset is a real choice: it returns None and the layer adds nothing
    t = [torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)]
    skips[1].resample(memo={'layer_2/skip': []})
    assert skips[1](t) is None
    skips[1].resample(memo={'layer_2/skip': [0, 1]})
    assert torch.allclose(skips[1](t), t[0] + t[1])
    # four different subsets, four different functions
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(outputs[i], outputs[j])
    # the controller samples them all, the empty subset included
    module = EnasModule(ChildTraining())
    module.set_model(supernet)
    torch.manual_seed(0)
    seen = {tuple(module.controller.sample()[0]['layer_2/skip']) for _ in range(60)}
    assert seen == {(), (0,), (1,), (0, 1)}


# --------------------------------------------------------------------------- NNI NasExperiment

def test_enas_strategy_in_nni_nas_experiment(tmp_path, monkeypatch):
    from nni.nas.evaluator.pytorch import Classification
    from nni.nas.evaluator.pytorch import DataLoader as TracedDataLoader
    from nni.nas.experiment import NasExperiment
    import nni.nas.experiment.experiment as experiment_module
    from nni.tools.nnictl.config_utils import Experiments

    # everything NNI writes goes under tmp_path: the experiment folder, its manifest, its config dir
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('NNI_CONFIG_DIR', str(tmp_path / 'nni-config'))
    monkeypatch.setattr(experiment_module, 'Experiments', lambda: Experiments(home_dir=str(tmp_path / 'manifest')))

    # record what the controller does
    snapshots = []
    original_train_controller = EnasModule.train_controller

    def train_controller(self):
        snapshots.append(clone_params(self.controller))
        return original_train_controller(self)

    monkeypatch.setattr(EnasModule, 'train_controller', train_controller)

    torch.manual_seed(0)
    args = dict(num_layers=3, channels=4)
    space = MacroSpace(**args)
    data = synthetic(32)
    evaluator = Classification(train_dataloaders=TracedDataLoader(data, batch_size=8),
                               val_dataloaders=TracedDataLoader(data, batch_size=8),
                               max_epochs=1, num_classes=10, export_onnx=False, learning_rate=0.01,
                               default_root_dir=str(tmp_path), logger=False, enable_checkpointing=False,
                               enable_progress_bar=False, enable_model_summary=False)
    strategy = Enas(ctrl_steps=1, ctrl_steps_aggregate=2, num_candidates=2)
    experiment = NasExperiment(space, evaluator, strategy)
    experiment.config.experiment_working_directory = str(tmp_path / 'nni-experiments')
    try:
        experiment.run()
        module = strategy.oneshot_module
        assert isinstance(module, EnasModule)
        controller = module.controller
        assert len(snapshots) == 1                                 # one epoch, one controller phase
        assert changed(snapshots[0], controller), 'the controller was not trained'
        assert module.epoch_stats['samples'] == 2 and math.isfinite(module.epoch_stats['reward'])
        trained = clone_params(controller)

        sampled = []
        original_sample_batch = controller.sample_batch

        def sample_batch(n):
            result = original_sample_batch(n)
            sampled.extend(result[0])
            return result

        controller.sample_batch = sample_batch
        exported = experiment.export_top_models(formatter='dict')[0]
    finally:
        experiment.stop()

    assert check_arch(MacroSpace(**args), exported) == []
    assert all(isinstance(exported[f'layer_{i}/skip'], list) for i in (1, 2))
    # the export is one of the trained controller's candidates; the controller was kept, not rebuilt
    assert len(sampled) == 2 and exported in sampled
    assert strategy.oneshot_module.controller is controller
    assert changed(trained, controller) == []
    assert (tmp_path / 'nni-experiments' / experiment.id / 'log' / 'experiment.log').exists()
    assert (tmp_path / 'manifest' / '.experiment').exists()


def test_trainer_device_picks_the_accelerator_and_the_gpu_index():
    from nni_enas.search.trainer import _device_kwargs
    assert _device_kwargs('cpu') == dict(accelerator='cpu', devices=1)
    assert _device_kwargs(torch.device('cpu')) == dict(accelerator='cpu', devices=1)
    assert _device_kwargs('cuda') == dict(accelerator='gpu', devices=1)
    assert _device_kwargs('cuda:1') == dict(accelerator='gpu', devices=[1])     # not the first GPU
    assert _device_kwargs(None)['accelerator'] == ('gpu' if torch.cuda.is_available() else 'cpu')
