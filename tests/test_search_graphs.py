"""The whole ENAS search with the supernet's modules wrapped for CUDA graphs, on the CPU.

Two ``EnasTrainer`` searches from the same seed, one eager and one whose choice-free modules
are wrapped by ``graph_supernet`` with the CPU stand-in of ``tests/test_cuda_graphs.py``
(``CpuGraphModule``: the real wrapper's dispatch, keys, BN-statistics restore and static
buffers, with a CPU "capture"), must give the same shared weights, controller, baseline, epoch
statistics and exported architecture, and the wrapped run must really replay its "graphs" in
the child steps, the controller's rewards and the export.

Runtime: about 10 s on the 2-core dev machine.
"""

import math
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nni_enas.search.enas  # noqa: E402
from nni_enas import ArchitectureExport, EnasModule, EnasTrainer, MacroSpace, MicroSpace  # noqa: E402
from nni_enas.training.cuda_graphs import CudaGraphModule, graph_supernet  # noqa: E402
from nni_enas.training.classification import accuracy  # noqa: E402
from test_cuda_graphs import CpuGraphModule  # noqa: E402  (the one CPU stand-in; pytest puts tests/ on sys.path)

torch.set_num_threads(1)

# micro rewards in training mode (batch-statistics BN), as TF's micro search; macro in eval mode
SPACES = {
    'macro': (MacroSpace, dict(num_layers=3, channels=4), False),
    'micro': (MicroSpace, dict(num_layers=1, channels=4, num_nodes=2), True),
}
PHASES = {'training_step': 'child steps', 'train_controller': 'rewards', 'export_candidates': 'export'}


def wrappers(module):
    return [m.__dict__['forward'] for m in module.modules() if isinstance(m.__dict__.get('forward'), CudaGraphModule)]


def total_replays(module):
    return sum(w.replays for w in wrappers(module))


def count_replays(monkeypatch, replays):
    """Add each ENAS phase's graph replays to ``replays[phase]`` (PHASES: method -> phase)."""
    for name, phase in PHASES.items():
        def counted(self, *a, _method=getattr(EnasModule, name), _phase=phase, **k):
            before = total_replays(self.model)
            try:
                return _method(self, *a, **k)
            finally:
                replays[_phase] += total_replays(self.model) - before
        monkeypatch.setattr(EnasModule, name, counted)


def images(n, seed):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))


def search(which, tmp_path, monkeypatch, graphed):
    """Two epochs of ENAS; returns everything the two runs must agree on, and the replays per phase."""
    cls, args, reward_train_mode = SPACES[which]
    replays = dict.fromkeys(PHASES.values(), 0)
    epochs = []

    class Stats(pl.Callback):           # after ArchitectureExport: sees the finished epoch
        def on_train_epoch_end(self, trainer, module):
            epochs.append(dict(module.epoch_stats, export=export.last))

    with monkeypatch.context() as m:
        if graphed:
            # what on_fit_start would do on a CUDA device, with the CPU stand-in as the wrapper
            m.setattr(nni_enas.search.enas, 'graph_supernet', lambda supernet, mode, device=None:
                      graph_supernet(supernet, mode, device='cuda', wrapper=CpuGraphModule))
        count_replays(m, replays)

        torch.manual_seed(0)
        space = cls(**args)
        export = ArchitectureExport()
        # 18 training images in batches of 4: the last partial batch takes the wrapper's eager fallback
        trainer = EnasTrainer(space, nn.CrossEntropyLoss(), None, accuracy,
                              torch.optim.SGD(space.parameters(), lr=0.05, momentum=0.9), 2,
                              (images(18, 1), images(12, 2)), batch_size=4, workers=0, device='cpu',
                              ctrl_steps=2, ctrl_steps_aggregate=3, num_candidates=4,
                              reward_train_mode=reward_train_mode, callbacks=[export, Stats()],
                              trainer_kwargs=dict(enable_progress_bar=False, default_root_dir=str(tmp_path)))
        trainer.fit()
        final = trainer.export()
    return dict(shared=trainer.supernet.state_dict(), controller=trainer.controller.state_dict(),
                baseline=trainer.module.baseline.item(), epochs=epochs, export=final,
                graphed=trainer.module.graphed_modules, wrappers=wrappers(trainer.supernet)), replays


@pytest.mark.parametrize('which', ['macro', 'micro'])
def test_graphed_search_matches_eager_search(which, tmp_path, monkeypatch):
    eager, eager_replays = search(which, tmp_path / 'eager', monkeypatch, graphed=False)
    graphed, graphed_replays = search(which, tmp_path / 'graphed', monkeypatch, graphed=True)

    assert eager['graphed'] == [] and eager['wrappers'] == [] and set(eager_replays.values()) == {0}
    assert graphed['graphed'] and len(graphed['wrappers']) == len(graphed['graphed'])
    for phase, count in graphed_replays.items():
        assert count > 0, f'no wrapped module replayed in the {phase}'
    # both kinds of "graph" were captured: training (child steps) and inference (rewards, export:
    # no_grad, in the space's reward mode; not inference_mode)
    kinds = set().union(*(w.captured_kinds for w in graphed['wrappers']))
    assert 'train' in kinds and ('infer', SPACES[which][2], False) in kinds
    # dropped when Lightning tore the fit down (it moves the supernet to the CPU)
    assert not any(w.graphs for w in graphed['wrappers'])

    for part in ('shared', 'controller'):
        assert eager[part].keys() == graphed[part].keys()
        for key, value in eager[part].items():
            other = graphed[part][key]
            if value.is_floating_point():
                assert torch.allclose(value, other, rtol=1e-5, atol=1e-6), f'{part} {key}'
            else:
                assert torch.equal(value, other), f'{part} {key}'     # e.g. BN's num_batches_tracked
    assert graphed['baseline'] == pytest.approx(eager['baseline'], rel=1e-5, abs=1e-7)
    assert len(eager['epochs']) == len(graphed['epochs']) == 2
    for a, b in zip(eager['epochs'], graphed['epochs']):
        for key in ('reward', 'baseline', 'entropy', 'loss', 'samples'):
            assert math.isfinite(a[key]) and b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
        assert b['export'].arch == a['export'].arch and b['export'].greedy == a['export'].greedy
        assert b['export'].reward == pytest.approx(a['export'].reward, rel=1e-5, abs=1e-7)
    assert graphed['export'] == eager['export'] == eager['epochs'][-1]['export'].arch


def test_an_export_after_the_fit_scores_on_the_fit_device(tmp_path, monkeypatch):
    """Lightning leaves the supernet on the CPU after a fit: ``trainer.export()`` then must score
    the candidates on the fit's device, not silently on the CPU (REVIEW finding 1). The CPU
    stand-in of a GPU fit: the fit's device says cuda, and the module's moves are recorded."""
    torch.manual_seed(0)
    space = MacroSpace(num_layers=2, channels=4)
    trainer = EnasTrainer(space, nn.CrossEntropyLoss(), None, accuracy, torch.optim.SGD(space.parameters(), lr=0.05),
                          1, (images(8, 1), images(8, 2)), batch_size=4, workers=0, device='cpu', ctrl_steps=1,
                          ctrl_steps_aggregate=2, num_candidates=3,
                          trainer_kwargs=dict(enable_progress_bar=False, default_root_dir=str(tmp_path)))
    trainer.fit()
    module = trainer.module
    where, moves, scored_on = ['cpu'], [], []

    def to(device):
        moves.append(str(torch.device(device)))
        where[0] = moves[-1]
        return module

    real_score = module._score
    monkeypatch.setattr(module, 'to', to)
    monkeypatch.setattr(module, '_score', lambda batches: scored_on.append(where[0]) or real_score(batches))
    state = torch.get_rng_state()
    on_cpu = trainer.export()                   # a CPU fit: scored where it is, nothing moved
    assert moves == [] and scored_on == ['cpu'] * 3
    monkeypatch.setattr(module, '_fit_device', torch.device('cuda', 0))     # as after a GPU fit
    scored_on.clear()
    torch.set_rng_state(state)
    assert trainer.export() == on_cpu
    assert scored_on == ['cuda:0'] * 3 and moves == ['cuda:0', 'cpu']      # there, then back as Lightning left it


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_gpu_tiny_search_with_graphs_matches_eager(tmp_path, monkeypatch):
    """T4: what search.py runs, on the GPU: lazy captures mid-epoch, NNI's advance_optimization,
    the controller phase, the export during and after the fit, a last partial batch. The
    controller (CPU) does not change during the child phase, so both runs train the same
    children on the same batches: their child losses agree."""
    from nni_enas.data.images import BatchLoader, load_data
    runs = {}
    for mode in ('off', 'auto'):
        replays = dict.fromkeys(PHASES.values(), 0)
        with monkeypatch.context() as m:
            count_replays(m, replays)
            torch.manual_seed(0)
            space = MacroSpace(num_layers=4, channels=8, dropout=0.0)
            # 200 training images in batches of 32: the last batch (8) runs eagerly
            train, valid = load_data('synthetic', None, split='search', synthetic_size=264, valid_size=64, seed=0)
            loaders = (BatchLoader(train, 32, shuffle=True, augment=True, device='cuda'),
                       BatchLoader(valid, 32, shuffle=True, augment=False, device='cuda'))
            export = ArchitectureExport()
            trainer = EnasTrainer(space, nn.CrossEntropyLoss(), None, accuracy,
                                  torch.optim.SGD(space.parameters(), lr=0.05, momentum=0.9), 1, None,
                                  dataloaders=loaders, device='cuda', ctrl_steps=2, ctrl_steps_aggregate=3,
                                  num_candidates=4, cuda_graphs=mode, callbacks=[export],
                                  trainer_kwargs=dict(enable_progress_bar=False, default_root_dir=str(tmp_path / mode)))
            trainer.fit()
            trainer.module.last_export = None           # score again after the fit: back on the GPU
            before = total_replays(trainer.supernet)
            trainer.export()
        runs[mode] = dict(losses=torch.stack(trainer.module._child_losses).float().cpu(), replays=replays,
                          wrappers=wrappers(trainer.supernet), after_fit=total_replays(trainer.supernet) - before)
    eager, graphed = runs['off'], runs['auto']
    assert eager['wrappers'] == [] and len(graphed['losses']) == 7
    torch.testing.assert_close(graphed['losses'], eager['losses'], atol=1e-3, rtol=1e-3)
    for phase, count in graphed['replays'].items():
        assert count > 0, f'no graph replayed in the {phase}'
    assert graphed['after_fit'] > 0
    assert not any(w.broken for w in graphed['wrappers'])
