"""CUDA-graph wrapping (nni_enas/training/cuda_graphs.py) and its use by ChildTraining, on the CPU.

There is no GPU in the test suite: the wrapper's dispatch (which calls a graph serves, keys,
fallbacks, BN-statistics restore, the one warning) runs with a CPU stand-in whose "capture"
records an eager function with the same static-buffer behaviour as a CUDA graph.

Runtime: about 25 s on the 2-core dev machine.
"""

import copy
import gc
import itertools
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule  # noqa: E402
from nni.nas.oneshot.pytorch.supermodule.sampling import PathSamplingLayer  # noqa: E402

from nni_enas import MacroSpace, MicroSpace  # noqa: E402
from nni_enas.search.controller import ReinforceController  # noqa: E402
import nni_enas.training.cuda_graphs  # noqa: E402
from nni_enas.training.cuda_graphs import (WARMUP_ITERS, CudaGraphCaptureError, CudaGraphModule,  # noqa: E402
                                           _GraphSet, graph_supernet, graph_wrappers, release_graphs,
                                           use_cuda_graphs)
from nni_enas.search.enas import Enas  # noqa: E402
from nni_enas.spaces.macro import reduction_layers  # noqa: E402
from nni_enas.spaces.micro import drop_path  # noqa: E402
from nni_enas.spaces.ops import MACRO_OPS  # noqa: E402
from nni_enas.training.classification import ChildTraining, NonFiniteLossError, enas_sgd  # noqa: E402

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------
# stand-ins
# --------------------------------------------------------------------------------------------

def emulated_make_graphed_callables(module, sample_args, num_warmup_iters=3, allow_unused_input=False, **_):
    """torch.cuda.make_graphed_callables for one module, on the CPU, with its observable behaviour.

    Mirrors torch/cuda/graphs.py (2.11 and 2.14): the same checks (no hooks, no buffer requiring
    grad, no autocast cache), warm-up iterations (forward + autograd.grad, no ``.grad`` written),
    a ``torch.autograd.Function`` whose forward copies the user arguments into static inputs and
    returns detached aliases of static outputs, whose backward copies the incoming gradients
    into static buffers and returns detached aliases of static gradient buffers (which autograd
    may keep as ``param.grad``), and ``module.forward`` replaced by a function that runs the
    graph only in the capture's training mode. A "replay" re-runs the module on the static
    inputs; the backward uses the latest replay's activations, as a graph's backward would.
    """
    assert not (module._backward_hooks or module._forward_hooks or module._forward_pre_hooks), 'hooks'
    assert all(not b.requires_grad for b in module.buffers()), 'buffers require grad'
    if torch.is_autocast_enabled() and torch.is_autocast_cache_enabled():
        raise RuntimeError('make_graphed_callables does not support the autocast caching.')
    params = tuple(module.parameters())
    surface = tuple(sample_args) + params
    n = len(sample_args)
    with torch.random.fork_rng():           # warm-up draws no test randomness
        for _ in range(num_warmup_iters):
            outs = [o for o in torch.utils._pytree.tree_leaves(module(*sample_args)) if o.requires_grad]
            if outs:
                torch.autograd.grad(outs, [i for i in surface if i.requires_grad], [torch.randn_like(o) for o in outs],
                                    allow_unused=allow_unused_input)
    CpuGraphModule.captures += 1
    static = {}
    orig_forward, graph_training = module.forward, module.training

    class Graphed(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            for buffer, x in zip(surface[:n], inputs[:n]):
                if buffer.data_ptr() != x.data_ptr():
                    buffer.copy_(x)
            with torch.enable_grad():
                flat, static['spec'] = torch.utils._pytree.tree_flatten(orig_forward(*surface[:n]))
            static['live'] = flat                                   # the "graph's" saved activations
            if 'out' not in static:
                static['out'] = [torch.empty_like(t) for t in flat]
            for buffer, t in zip(static['out'], flat):
                buffer.copy_(t.detach())
            return tuple(o.detach() for o in static['out'])

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, *grads):
            live = static['live']
            wanted = [i for i in surface if i.requires_grad]
            outs = [(o, g) for o, g in zip(live, grads) if o.requires_grad]
            computed = torch.autograd.grad([o for o, _ in outs], wanted, [g for _, g in outs], allow_unused=True)
            if 'grads' not in static:
                static['grads'] = [None if c is None else torch.empty_like(c) for c in computed]
            for buffer, c in zip(static['grads'], computed):
                if buffer is not None:
                    buffer.copy_(c)
            found = iter(static['grads'])
            result = [next(found) if i.requires_grad else None for i in surface]
            return tuple(None if b is None else b.detach() for b in result)

    def graphed(*args):
        out = Graphed.apply(*(tuple(args) + params))
        return torch.utils._pytree.tree_unflatten(list(out), static['spec'])

    def new_forward(*args):
        return graphed(*args) if module.training == graph_training else orig_forward(*args)

    module.forward = new_forward
    return module


class CpuGraphModule(CudaGraphModule):
    """The real wrapper with CPU "captures": training graphs through the emulated
    make_graphed_callables above; inference graphs as warm-up calls (which move BN statistics, as
    on the GPU), then a replay function with static input and output buffers."""

    captures = 0

    def _on_device(self, args):
        return True

    def _record_training(self, args, amp):
        real = torch.cuda.make_graphed_callables
        torch.cuda.make_graphed_callables = emulated_make_graphed_callables
        try:
            return super()._record_training(args, amp)
        finally:
            torch.cuda.make_graphed_callables = real

    def _warm_up(self, args):
        with torch.random.fork_rng(), torch.no_grad():    # warm-up draws no test randomness
            for _ in range(WARMUP_ITERS):
                self.module(*(a.detach().clone() for a in args))
        type(self).captures += 1

    def _record_inference(self, args, amp):
        self._warm_up(args)
        forward = self.module.forward
        static_in = [a.detach().clone() for a in args]
        static_out = []

        def replay(*inputs):        # like a graph: the outputs are overwritten in place each replay
            for buffer, x in zip(static_in, inputs):
                buffer.copy_(x)
            flat, spec = torch.utils._pytree.tree_flatten(forward(*static_in))
            if not static_out:
                static_out.extend(torch.empty_like(t) for t in flat)
            for buffer, t in zip(static_out, flat):
                buffer.copy_(t)
            return torch.utils._pytree.tree_unflatten(list(static_out), spec)

        return replay


class FailingCapture(CpuGraphModule):
    def _record_training(self, args, amp):
        raise RuntimeError('operation not permitted when stream is capturing')

    _record_inference = _record_training


class Recorder:
    """A foreign stand-in (not a CudaGraphModule): records the calls, runs the module eagerly."""

    calls = []

    def __init__(self, module):
        self.module = module
        self.forward = module.forward

    def __call__(self, *args):
        Recorder.calls.append(self.module)
        return self.forward(*args)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def macro_supernet():
    torch.manual_seed(0)
    return Enas().mutate_model(MacroSpace(num_layers=4, channels=4))


def micro_supernet():
    torch.manual_seed(0)
    return Enas().mutate_model(MicroSpace(num_layers=1, channels=4, num_nodes=2))


def archs(supernet, n, seed=1):
    controller = ReinforceController(supernet)
    torch.manual_seed(seed)
    with torch.no_grad():
        return [controller.sample()[0] for _ in range(n)]


def apply(supernet, arch):
    for m in supernet.modules():
        if isinstance(m, BaseSuperNetModule):
            m.resample(memo=arch)


def has_params(module):
    return next(module.parameters(), None) is not None


def expected_macro(supernet):
    names = {'stem', 'classifier'}
    for i in range(len(supernet.layers)):
        names |= {f'layers.{i}.op.{op}' for op in MACRO_OPS} | {f'layers.{i}.merge'}
    for r in reduction_layers(len(supernet.layers)):
        names |= {f'reductions.{r}.{k}' for k in range(r + 2)}
    return names


def expected_micro(supernet):
    """Stem, classifier; per cell: its parametrised calibrations, every parametrised candidate op
    of every layer choice, the loose-end reductions and the BN of the loose-end merge."""
    names = {'stem', 'classifier'}
    for c, cell in enumerate(supernet.cells):
        names |= {f'cells.{c}.{pre}' for pre in ('pre0', 'pre1') if has_params(getattr(cell, pre))}
        names |= {f'cells.{c}.loose_reduce.{j}' for j in cell.loose_reduce}
        names.add(f'cells.{c}.merge.bn')
    for name, module in supernet.named_modules():
        if isinstance(module, PathSamplingLayer):
            names |= {f'{name}.{cand}' for cand, op in module.named_children() if has_params(op)}
    return names


def run(net, x, y, grad: bool, training: bool, seed: int):
    net.train(training)
    torch.manual_seed(seed)
    for p in net.parameters():
        p.grad = None
    with torch.set_grad_enabled(grad):
        out = net(x)
        if grad:
            F.cross_entropy(out, y).backward()
    return out.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


# --------------------------------------------------------------------------------------------
# switch and finder
# --------------------------------------------------------------------------------------------

def test_mode_switch_and_bad_mode():
    assert use_cuda_graphs('auto', 'cuda') and use_cuda_graphs('auto', torch.device('cuda', 1))
    assert not use_cuda_graphs('auto', 'cpu') and not use_cuda_graphs('off', 'cuda')
    with pytest.raises(ValueError, match='auto, off'):
        use_cuda_graphs('on', 'cuda')
    with pytest.raises(ValueError):
        graph_supernet(macro_supernet(), 'always', device='cuda')
    with pytest.raises(ValueError):
        ChildTraining(cuda_graphs='yes')


@pytest.mark.parametrize('mode, device', [('off', 'cuda'), ('auto', 'cpu'), ('auto', None)])
def test_off_or_cpu_wraps_nothing(mode, device):
    supernet = macro_supernet()
    assert graph_supernet(supernet, mode, device=device, wrapper=Recorder) == []
    assert not any('forward' in m.__dict__ for m in supernet.modules())


@pytest.mark.parametrize('make, expected', [(macro_supernet, expected_macro), (micro_supernet, expected_micro)])
def test_exactly_the_intended_modules_are_wrapped(make, expected):
    supernet = make()
    names = graph_supernet(supernet, 'auto', device='cuda', wrapper=Recorder)
    assert len(names) == len(set(names)) and set(names) == expected(supernet)
    wrapped = {n for n, m in supernet.named_modules() if isinstance(m.__dict__.get('forward'), Recorder)}
    assert wrapped == set(names)
    # nothing wrapped holds a choice, and parameter names (checkpoints, exports) are unchanged
    assert not any(isinstance(d, BaseSuperNetModule) for n in names for d in supernet.get_submodule(n).modules())
    assert set(dict(supernet.named_parameters())) == set(dict(make().named_parameters()))


def test_a_fixed_network_is_wrapped_whole():
    net = MicroSpace(num_layers=1, channels=4, num_nodes=2, final=True).freeze(archs(micro_supernet(), 1)[0])
    assert graph_supernet(net, 'auto', device='cuda', wrapper=Recorder) == ['']
    assert isinstance(net.__dict__['forward'], Recorder)


# --------------------------------------------------------------------------------------------
# wrapped supernets compute what eager ones do
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('make', [macro_supernet, micro_supernet], ids=['macro', 'micro'])
def test_wrapping_keeps_outputs_gradients_and_bn_statistics(make):
    supernet = make()
    reference = copy.deepcopy(supernet)
    names = graph_supernet(supernet, 'auto', device='cuda', wrapper=CpuGraphModule)
    assert names
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    for step, arch in enumerate(archs(supernet, 3)):
        apply(supernet, arch)
        apply(reference, arch)
        # child step (training graph), micro reward (train-mode BN, no grad), macro reward (eval)
        for grad, training in ((True, True), (False, True), (False, False)):
            out, grads = run(supernet, x, y, grad, training, seed=step)
            ref_out, ref_grads = run(reference, x, y, grad, training, seed=step)
            torch.testing.assert_close(out, ref_out)
            assert grads.keys() == ref_grads.keys()
            for n in grads:
                torch.testing.assert_close(grads[n], ref_grads[n], msg=n)
    # the warm-up's BN updates were undone: running statistics are those of the eager run
    for (n, b), (_, rb) in zip(supernet.named_buffers(), reference.named_buffers()):
        torch.testing.assert_close(b, rb, msg=n)
    wrappers = [supernet.get_submodule(n).__dict__['forward'] for n in names]
    # no capture failed (the emulated make_graphed_callables refuses hooks, as PyTorch's does)
    assert not any(w.broken for w in wrappers)
    assert sum(w.replays for w in wrappers) > len(names)       # graphs served most calls
    assert all(len(w.graphs) <= 3 for w in wrappers)


def test_other_shapes_non_tensors_and_eval_grad_run_eagerly():
    bn = nn.BatchNorm2d(3)
    wrapper = bn.forward = CpuGraphModule(bn)
    bn(torch.randn(4, 3, 2, 2))
    assert wrapper.replays == 1 and list(wrapper.graphs) == ['train']
    bn(torch.randn(2, 3, 2, 2))                  # a last partial batch
    bn(torch.randn(4, 3, 2, 2, requires_grad=True))     # another requires_grad
    bn.eval()
    bn(torch.randn(4, 3, 2, 2))                  # grad-enabled eval call
    assert wrapper.replays == 1
    with torch.no_grad():
        bn(torch.randn(4, 3, 2, 2))
        assert wrapper.replays == 2 and ('infer', False, False) in wrapper.graphs
        bn(torch.randn(4, 3, 2, 2).contiguous(memory_format=torch.channels_last))   # another layout
    assert wrapper.replays == 2


def test_second_call_within_one_supernet_forward_runs_eagerly():
    conv = nn.Conv2d(2, 2, 1)
    graph_set = _GraphSet(track_forwards=True)
    wrapper = conv.forward = CpuGraphModule(conv, graph_set=graph_set)
    x = torch.randn(1, 2, 3, 3)
    graph_set.next_forward()
    first, second = conv(x), conv(x)
    assert wrapper.replays == 1 and torch.equal(first, second)
    (first + second).sum().backward()
    graph_set.next_forward()
    conv(x)
    assert wrapper.replays == 2


def test_inference_outputs_survive_the_next_replay():
    lin = nn.Linear(3, 2)
    wrapper = lin.forward = CpuGraphModule(lin)
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    with torch.no_grad():
        out_a = lin(a)
        expected = out_a.clone()
        lin(b)
    assert wrapper.replays == 2 and torch.equal(out_a, expected)


def test_a_failed_capture_stops_with_one_clear_error():
    """On torch < 2.13 a failed capture leaves CUDA's generator and allocator in capture state:
    running on eagerly would crash later with an unrelated error, so the capture error says
    what to do instead (REVIEW finding 2)."""
    supernet = macro_supernet()
    reference = copy.deepcopy(supernet)
    names = graph_supernet(supernet, 'auto', device='cuda', wrapper=FailingCapture)
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 10, (2,))
    arch = archs(supernet, 1)[0]
    apply(supernet, arch)
    apply(reference, arch)
    with pytest.raises(CudaGraphCaptureError) as caught:
        run(supernet, x, y, True, True, seed=0)
    assert str(caught.value) == (
        'CUDA graph capture of stem failed (RuntimeError: operation not permitted when stream is capturing); '
        "after a failed capture the CUDA state may be unusable: rerun with --cuda-graphs off "
        "(cuda_graphs='off' in Python)")
    assert isinstance(caught.value.__cause__, RuntimeError)
    # a caller that catches it anyway gets eager PyTorch, and no other module tries a capture
    for _ in range(2):
        out, grads = run(supernet, x, y, True, True, seed=0)
        ref_out, ref_grads = run(reference, x, y, True, True, seed=0)
        torch.testing.assert_close(out, ref_out)
    wrappers = [supernet.get_submodule(n).__dict__['forward'] for n in names]
    assert sum(w.broken for w in wrappers) == 1 and all(w.replays == 0 and not w.graphs for w in wrappers)
    for n in grads:
        torch.testing.assert_close(grads[n], ref_grads[n])


def test_deepcopy_of_a_wrapped_module_starts_without_graphs():
    lin = nn.Linear(3, 2)
    lin.forward = CpuGraphModule(lin)
    lin(torch.randn(1, 3))
    twin = copy.deepcopy(lin)
    assert twin.__dict__['forward'].module is twin and not twin.__dict__['forward'].graphs
    torch.testing.assert_close(twin(torch.ones(1, 3)), lin(torch.ones(1, 3)))


# --------------------------------------------------------------------------------------------
# drop path: a device value the graph reads
# --------------------------------------------------------------------------------------------

def micro_final(**kwargs):
    arch = archs(micro_supernet(), 1)[0]
    torch.manual_seed(0)
    return MicroSpace(num_layers=1, channels=4, num_nodes=2, final=True, **kwargs).freeze(arch)


def test_drop_path_probability_is_one_tensor_updated_in_place():
    net = micro_final(drop_path_prob=0.4)
    buffers = [cell.drop_prob for cell in net.cells]
    for progress in (0.25, 0.5, 2.0):
        net.set_drop_path_progress(progress)
        for cell, buffer in zip(net.cells, buffers):
            assert cell.drop_prob is buffer and cell.uses_drop_path
            assert float(buffer) == pytest.approx(min(progress, 1) * cell.depth_fraction * 0.4)
    assert 'drop_prob' not in ''.join(net.state_dict())            # not in checkpoints
    assert not any(cell.uses_drop_path for cell in micro_final().cells)


def test_drop_path_with_a_tensor_probability_matches_a_float():
    x = torch.ones(4000, 1, 1, 1)
    torch.manual_seed(3)
    a = drop_path(x, torch.tensor(0.4))
    torch.manual_seed(3)
    b = drop_path(x, 0.4)
    torch.testing.assert_close(a, b)
    assert abs((a != 0).float().mean().item() - 0.6) < 0.03
    torch.testing.assert_close(drop_path(x, torch.tensor(0.0)), x)


# --------------------------------------------------------------------------------------------
# ChildTraining: graphs, no per-step syncs, NaN check
# --------------------------------------------------------------------------------------------

class StandInGraphs(ChildTraining):
    """ChildTraining as on a GPU, with the CPU stand-in capture."""

    def enable_cuda_graphs(self, device=None, wrapper=None):
        return super().enable_cuda_graphs(device='cuda', wrapper=CpuGraphModule)


def fit(module_cls, net, steps=3, epochs=1, trainer_kwargs=None, **kwargs):
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(steps * 4 + 2, 3, 32, 32, generator=g), torch.randint(0, 10, (steps * 4 + 2,), generator=g))
    module = module_cls(optimizer=lambda p: enas_sgd(p, lr_max=0.05), **kwargs)
    module.set_model(net)
    seen = []

    class Watch(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append([cell.drop_prob for cell in net.cells] if hasattr(net, 'cells') else [])

    trainer = pl.Trainer(max_epochs=epochs, accelerator='cpu', devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         gradient_clip_val=5.0, callbacks=[Watch()], **(trainer_kwargs or {}))
    torch.manual_seed(1)
    loader = DataLoader(data, batch_size=4)       # the last batch (2 images) is partial
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=DataLoader(data, batch_size=5))
    return module, trainer, seen


def test_child_training_with_graphs_trains_like_eager():
    net = micro_final(auxiliary=True, drop_path_prob=0.4)
    twin = copy.deepcopy(net)
    CpuGraphModule.captures = 0
    graphed, trainer, seen = fit(StandInGraphs, net, epochs=2, drop_path_steps=8)
    eager, eager_trainer, _ = fit(ChildTraining, twin, epochs=2, drop_path_steps=8)
    assert graphed.graphed == [''] and eager.graphed == []
    wrapper = net.__dict__['forward']
    # training graph + eval inference graph; partial batches (2 of 14 train, 4 of 14 test) eager
    assert wrapper.captured_kinds == {'train', ('infer', False, False)}   # fit-time validation: no_grad
    assert wrapper.captures == 2 and wrapper.replays == 2 * (3 + 2)
    # Lightning's teardown moved the network to the CPU: the graphs were dropped there
    assert wrapper.graphs == {} and wrapper.recaptures == 1
    for (n, p), q in zip(net.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, msg=n)
    for key in ('child_loss', 'child_acc', 'test_loss', 'test_acc'):
        torch.testing.assert_close(trainer.callback_metrics[key], eager_trainer.callback_metrics[key])
    # the drop-path probability the graph reads: the same tensors every step, on the schedule
    assert all(all(a is b for a, b in zip(s, seen[0])) for s in seen)
    torch.testing.assert_close(net.cells[-1].drop_prob, torch.tensor(0.4 * min(1.0, 8 / 8)))


class MovedByLightning(StandInGraphs):
    """As on a GPU: Lightning's teardown moves the network to the CPU and the next fit, validate
    or test moves it back, so every parameter and buffer ends up in new storage (on the CPU,
    ``.cpu()`` would keep the storage: this stand-in gives it new storage)."""

    def cpu(self):
        super().cpu()
        with torch.no_grad():
            for t in itertools.chain(self.parameters(), self.buffers()):
                t.data = t.data.clone()
        return self


def test_validate_after_fit_runs_graphed_again_after_lightnings_moves():
    """REVIEW finding 1: the old wrapper dropped its graphs for good (with a warning) when the
    storage moved, so a ``trainer.validate`` after ``fit`` ran eagerly."""
    net = micro_final(auxiliary=True)
    twin = copy.deepcopy(net)
    with warnings.catch_warnings():
        warnings.filterwarnings('error', message='CUDA graphs of', category=RuntimeWarning)   # the old code's
        graphed, trainer, _ = fit(MovedByLightning, net, steps=3)
        wrapper = net.__dict__['forward']
        before = wrapper.replays
        tested = trainer.validate(graphed, trainer.val_dataloaders, verbose=False)[0]
    eager, eager_trainer, _ = fit(ChildTraining, twin, steps=3)
    eager_tested = eager_trainer.validate(eager, eager_trainer.val_dataloaders, verbose=False)[0]
    # 14 test images in batches of 5: two full batches replay the inference_mode graph
    assert wrapper.replays - before == 2 and ('infer', False, True) in wrapper.captured_kinds
    assert not wrapper.broken and wrapper.recaptures == 2          # dropped after fit and after validate
    assert tested['test_loss'] == pytest.approx(eager_tested['test_loss'], rel=1e-5)
    assert tested['test_acc'] == eager_tested['test_acc']


def test_child_training_on_cpu_or_off_does_not_wrap():
    net = micro_final()
    module, _, _ = fit(ChildTraining, net, steps=1)
    assert module.graphed == [] and 'forward' not in net.__dict__
    module, _, _ = fit(type('Off', (StandInGraphs,), {}), micro_final(), steps=1, cuda_graphs='off')
    assert module.graphed == []


def test_child_training_leaves_a_supernet_to_the_search():
    module = ChildTraining()
    module.set_model(micro_supernet())
    assert module.enable_cuda_graphs(device='cuda', wrapper=Recorder) == []


def test_nonfinite_loss_raises_at_the_check_not_per_step():
    calls = []

    def nan_loss(logits, y):
        calls.append(1)
        return F.cross_entropy(logits, y) * float('nan')

    with pytest.raises(NonFiniteLossError, match='loss became nan/inf at epoch 0, steps 0-3'):
        fit(ChildTraining, micro_final(), steps=3, loss=nan_loss)
    assert len(calls) == 4          # every step of the epoch ran: the check waited for the last one


def test_epoch_means_reach_lightning_once_an_epoch_weighted_by_batch_size():
    steps, logged = [], []

    def loss(logits, y):
        value = F.cross_entropy(logits, y)
        if torch.is_grad_enabled():       # a training step, not the validation
            steps.append((value.item(), (logits.argmax(1) == y).float().mean().item(), len(y)))
        return value

    class Counting(ChildTraining):
        def log(self, name, *args, **kwargs):
            logged.append((self.current_epoch, name))
            return super().log(name, *args, **kwargs)

    _, trainer, _ = fit(Counting, micro_final(), steps=3, epochs=2, loss=loss)
    train_logs = [entry for entry in logged if entry[1].startswith('child_')]
    assert train_logs == [(0, 'child_loss'), (0, 'child_acc'), (1, 'child_loss'), (1, 'child_acc')]
    last = steps[-4:]                 # the second epoch: batches of 4, 4, 4 and 2 images
    assert [n for *_, n in last] == [4, 4, 4, 2]
    images = sum(n for *_, n in last)
    expected_loss = sum(v * n for v, _, n in last) / images
    expected_acc = sum(a * n for _, a, n in last) / images
    assert trainer.callback_metrics['child_loss'].item() == pytest.approx(expected_loss, rel=1e-5)
    assert trainer.callback_metrics['child_acc'].item() == pytest.approx(expected_acc, rel=1e-5)


def test_deepcopy_of_a_wrapped_supernet_keeps_counting_its_own_forwards():
    supernet = macro_supernet()
    names = graph_supernet(supernet, 'auto', device='cuda', wrapper=CpuGraphModule)
    twin = copy.deepcopy(supernet)
    apply(twin, archs(twin, 1)[0])
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        for _ in range(2):
            twin(x)
    wrappers = [twin.get_submodule(n).__dict__['forward'] for n in names]
    assert all(w.module is twin.get_submodule(n) for w, n in zip(wrappers, names))
    assert wrappers[0].replays == 2                     # the stem: replayed in both forwards
    assert not any(supernet.get_submodule(n).__dict__['forward'].graphs for n in names)


def test_child_training_keeps_graphs_off_under_ddp_or_compile(capsys):
    from types import SimpleNamespace
    module = ChildTraining()
    module.set_model(micro_final())
    module._trainer = SimpleNamespace(world_size=2, is_global_zero=True)
    assert module.enable_cuda_graphs(device='cuda', wrapper=Recorder) == []
    assert capsys.readouterr().err.strip() == 'note: CUDA graphs are off under data parallelism (2 processes)'
    module._trainer = None
    module.model.compile()
    assert module.enable_cuda_graphs(device='cuda', wrapper=Recorder) == []
    assert 'torch.compile' in capsys.readouterr().err
    assert 'forward' not in module.model.__dict__


# --------------------------------------------------------------------------------------------
# review of the first GPU run's hazards (each test fails without its fix)
# --------------------------------------------------------------------------------------------

def small_block():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5))


@pytest.mark.parametrize('set_to_none', [True, False])
def test_gradients_accumulated_over_backwards_match_eager(set_to_none):
    """Two backwards without clearing the gradients (accumulate_grad_batches), then a zero_grad:
    the graph's static gradient buffers kept as .grad must not be overwritten by the next replay."""
    net, reference = small_block(), small_block()
    wrapper = net.forward = CpuGraphModule(net)
    xs = [torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    for step in range(3):
        for model in (net, reference):
            model.zero_grad(set_to_none=set_to_none)
            for x in xs[2 * step:2 * step + 2]:          # two micro-batches, one optimizer step
                model(x).square().mean().backward()
        for (n, p), q in zip(net.named_parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad, q.grad, msg=n)
    assert wrapper.replays == 6 and not wrapper.broken


def test_lightning_gradient_accumulation_with_graphs_trains_like_eager():
    net = micro_final()
    twin = copy.deepcopy(net)
    graphed, _, _ = fit(StandInGraphs, net, steps=4, trainer_kwargs=dict(accumulate_grad_batches=2))
    fit(ChildTraining, twin, steps=4, trainer_kwargs=dict(accumulate_grad_batches=2))
    assert net.__dict__['forward'].replays >= 4
    for (n, p), q in zip(net.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, msg=n)


def test_no_grad_and_inference_mode_each_get_a_graph():
    bn = small_block().eval()
    reference = small_block().eval()
    wrapper = bn.forward = CpuGraphModule(bn)
    x = torch.randn(2, 3, 4, 4)
    for context in (torch.no_grad, torch.inference_mode, torch.no_grad, torch.inference_mode):
        with context():
            torch.testing.assert_close(bn(x), reference(x))
    assert {('infer', False, False), ('infer', False, True)} <= set(wrapper.graphs)
    assert wrapper.replays == 4


def test_replaced_parameters_are_captured_again_with_the_whole_graph_set(monkeypatch):
    """New storage (Lightning's move to the CPU and back, ``.data = ...``): the graphs of the
    graph set are dropped and captured again, with one garbage collection (REVIEW finding 1)."""
    net, reference = small_block(), small_block()
    graph_set = _GraphSet(track_forwards=False)
    wrapper = net.forward = CpuGraphModule(net, graph_set=graph_set)
    other = nn.Linear(3, 3)
    other_wrapper = other.forward = CpuGraphModule(other, graph_set=graph_set)
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('error')                  # no warning either: re-arming is routine
        net.eval(), reference.eval()
        net(x), other(torch.randn(2, 3))
        collections = []
        monkeypatch.setattr(nni_enas.training.cuda_graphs.gc, 'collect', lambda *a: collections.append(1))
        net[0].weight.data = net[0].weight.data + 1        # new storage: the graph would read the old one
        reference[0].weight.data += 1
        for _ in range(2):
            torch.testing.assert_close(net(x), reference(x))
    assert wrapper.replays == 3 and wrapper.captures == 2 and wrapper.recaptures == 1 and not wrapper.broken
    assert other_wrapper.recaptures == 1 and not other_wrapper.graphs     # its set was dropped too
    assert collections == [1]


def test_no_garbage_collection_during_a_capture_one_before_the_first_and_one_per_release(monkeypatch):
    """A collection during a capture could free a dropped graph mid-capture (REVIEW finding 3)."""
    seen = []

    class Watching(CpuGraphModule):
        def _capture(self, kind, args, amp):
            seen.append(('before', gc.isenabled()))
            return super()._capture(kind, args, amp)

        def _record_training(self, args, amp):
            seen.append(('capture', gc.isenabled()))
            return super()._record_training(args, amp)

        def _record_inference(self, args, amp):
            seen.append(('capture', gc.isenabled()))
            return super()._record_inference(args, amp)

    collections = []
    monkeypatch.setattr(nni_enas.training.cuda_graphs.gc, 'collect', lambda *a: collections.append(len(seen)))
    supernet = macro_supernet()
    names = graph_supernet(supernet, 'auto', device='cuda', wrapper=Watching)
    apply(supernet, archs(supernet, 1)[0])
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 10, (2,))
    assert gc.isenabled()
    run(supernet, x, y, True, True, seed=0)
    run(supernet, x, y, False, False, seed=0)
    captures = [enabled for what, enabled in seen if what == 'capture']
    assert len(captures) > 4 and not any(captures) and gc.isenabled()
    assert collections == [1]           # once, at the set's first capture, before it started
    assert release_graphs(supernet) == len([w for w in graph_wrappers(supernet) if w.recaptures]) > 4
    assert collections == [1, len(seen)]        # once for the whole set
    assert release_graphs(supernet) == 0 and len(collections) == 2     # nothing left: no collection
    assert len(graph_wrappers(supernet)) == len(names)


@pytest.mark.parametrize('change', ['bn_eval', 'frozen'])
def test_parts_in_another_mode_or_frozen_parameters_run_eagerly(change):
    net, reference = small_block(), small_block()
    wrapper = net.forward = CpuGraphModule(net)
    x, y = torch.randn(2, 3, 4, 4), torch.randn(2, 5)
    net(x), reference(x)                        # training graph captured, all parts in training mode
    if change == 'bn_eval':                     # a frozen BN: the graph would update its statistics
        net[1].eval(), reference[1].eval()
    else:                                       # a frozen weight: the graph would still give it a gradient
        net[0].weight.requires_grad_(False), reference[0].weight.requires_grad_(False)
    for model in (net, reference):
        model.zero_grad()
        F.mse_loss(model(x), y).backward()
    assert wrapper.replays == 1
    assert (net[0].weight.grad is None) == (change == 'frozen')
    for (n, p), q in zip(net.named_parameters(), reference.parameters()):
        if q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, msg=n)
    for (n, b), rb in zip(net.named_buffers(), reference.buffers()):
        torch.testing.assert_close(b, rb, msg=n)


def test_two_forwards_then_one_backward_match_eager():
    """loss = f(a) + f(b): the second call must not replay over the first call's activations."""
    net, reference = small_block(), small_block()
    wrapper = net.forward = CpuGraphModule(net)
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    for step in range(2):
        for model in (net, reference):
            model.zero_grad()
            (model(a).square().mean() + model(b).exp().mean()).backward()
        for (n, p), q in zip(net.named_parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad, q.grad, msg=n)
    assert wrapper.replays == 2         # the first call of each step; the second ran eagerly


def test_after_a_caught_capture_failure_nothing_new_is_captured():
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    graph_set = _GraphSet(track_forwards=False)
    wa = a.forward = CpuGraphModule(a, name='a', graph_set=graph_set)
    wb = b.forward = FailingCapture(b, name='b', graph_set=graph_set)
    x = torch.randn(2, 3)
    with torch.no_grad():
        a(x)                            # a captured
        with pytest.raises(CudaGraphCaptureError, match='capture of b failed'):
            b(x)
        torch.testing.assert_close(b(x), F.linear(x, b.weight, b.bias))    # eager from now on
        a.eval()
        torch.testing.assert_close(a(x), F.linear(x, a.weight, a.bias))    # a new kind: no capture
    assert wa.replays == 1 and list(wa.graphs) == [('infer', True, False)] and wb.broken and gc.isenabled()


# --------------------------------------------------------------------------------------------
# on a GPU only (skipped here): the real captures against eager PyTorch, as users run them
#   python3 -m pytest -q -rs tests/test_cuda_graphs.py tests/test_search_graphs.py tests/test_data.py \
#       -k "gpu or loader_on_cuda"
# --------------------------------------------------------------------------------------------

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


@pytest.fixture(autouse=True)
def _gpu_isolation(request):
    """One GPU test's garbage (dropped graphs and their pools) is freed before the next test's
    captures, and its queued work is done (REVIEW finding 3, T9)."""
    if 'gpu' in request.node.name and torch.cuda.is_available():
        gc.collect()
        torch.cuda.synchronize()
    yield


def _gpu_space(space):
    torch.manual_seed(0)
    if space == 'macro':
        return MacroSpace(num_layers=6, channels=16, dropout=0.0)
    return MicroSpace(num_layers=3, channels=8, num_nodes=3, dropout=0.0)


@gpu
@pytest.mark.parametrize('space', ['macro', 'micro'])
@pytest.mark.parametrize('amp', [False, True], ids=['fp32', 'bf16'])
def test_gpu_supernet_graphs_match_eager(space, amp):
    """Child steps with the search's optimizer (foreach Nesterov SGD, in place: the graphs must
    read the updated weights), then the rewards in both BN modes (T2)."""
    supernet = Enas().mutate_model(_gpu_space(space))
    chosen = archs(supernet, 3)
    supernet = supernet.cuda()
    reference = copy.deepcopy(supernet)
    optimizers = [enas_sgd(net.parameters(), lr_max=0.05)[0] for net in (supernet, reference)]
    names = graph_supernet(supernet)
    x = torch.randn(16, 3, 32, 32, device='cuda')
    y = torch.randint(0, 10, (16,), device='cuda')
    tol = dict(atol=5e-2, rtol=5e-2) if amp else dict(atol=1e-4, rtol=1e-3)
    for step, arch in enumerate(chosen * 2):
        apply(supernet, arch)
        apply(reference, arch)
        for grad, training in ((True, True), (False, True), (False, False)):
            with torch.autocast('cuda', torch.bfloat16, enabled=amp):
                out, grads = run(supernet, x, y, grad, training, seed=step)
                ref_out, ref_grads = run(reference, x, y, grad, training, seed=step)
            torch.testing.assert_close(out.float(), ref_out.float(), **tol)
            assert grads.keys() == ref_grads.keys()
            for n in grads:
                torch.testing.assert_close(grads[n], ref_grads[n], msg=n, **tol)
            if grad:
                for optimizer in optimizers:
                    optimizer.step()
    for (n, p), q in zip(supernet.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, msg=n, **tol)
    for (n, b), rb in zip(supernet.named_buffers(), reference.buffers()):
        torch.testing.assert_close(b.float(), rb.float(), msg=n, **tol)
    wrappers = [supernet.get_submodule(n).__dict__['forward'] for n in names]
    assert not any(w.broken for w in wrappers) and sum(w.replays for w in wrappers) > 2 * len(names)


@gpu
@pytest.mark.parametrize('space', ['macro', 'micro'])
def test_gpu_reward_logits_of_several_forwards_survive_later_replays(space):
    """Batched rewards keep the logits of several forwards: the shared inference pool and the
    static outputs must not overwrite them (T6)."""
    supernet = Enas().mutate_model(_gpu_space(space))
    chosen = archs(supernet, 4, seed=2)
    supernet = supernet.cuda().train(space == 'micro')      # micro rewards: training-mode BN
    reference = copy.deepcopy(supernet)
    names = graph_supernet(supernet)
    x = torch.randn(16, 3, 32, 32, device='cuda')
    kept, expected = [], []
    with torch.no_grad():
        for arch in chosen * 2:
            apply(supernet, arch)
            apply(reference, arch)
            kept.append(supernet(x))
            expected.append(reference(x).clone())
    for a, b in zip(kept, expected):            # compared only now, after every later replay
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
    assert sum(supernet.get_submodule(n).__dict__['forward'].replays for n in names) > len(names)


def _graph_keys_callback():
    """A Lightning callback keeping the wrapper's graph keys before Lightning's teardown drops them."""
    import pytorch_lightning as pl

    class GraphKeys(pl.Callback):
        def __init__(self):
            self.keys = {}

        def snap(self, pl_module):
            wrapper = pl_module.model.__dict__.get('forward')
            if isinstance(wrapper, CudaGraphModule):
                self.keys.update({kind: key for kind, (key, _) in wrapper.graphs.items()})

        def on_train_end(self, trainer, pl_module):
            self.snap(pl_module)

        def on_validation_end(self, trainer, pl_module):
            self.snap(pl_module)

    return GraphKeys()


def _gpu_retrain(net, cuda_graphs, precision, steps=10, **trainer_kwargs):
    """Fit with fit-time validation, then ``trainer.validate``: retrain.py's batches
    (ShardedBatches, channels-last, augmented on the GPU: T3), its precision and clipping."""
    import pytorch_lightning as pl
    from nni_enas.data.images import CIFAR10_CLASSES, ImageTensors
    from nni_enas.training.retraining import ShardedBatches
    g = torch.Generator().manual_seed(0)
    data = ImageTensors(torch.randint(0, 256, (steps * 8, 3, 32, 32), dtype=torch.uint8, generator=g),
                        torch.randint(0, 10, (steps * 8,), generator=g), CIFAR10_CLASSES)
    train = ShardedBatches(data, 8, shuffle=True, augment=True, device='cuda', channels_last=True)
    test = ShardedBatches(data, 8, shuffle=False, augment=False, device='cuda', channels_last=True)
    net = net.cuda().to(memory_format=torch.channels_last)
    module = ChildTraining(optimizer=lambda p: enas_sgd(p, lr_max=0.05), cuda_graphs=cuda_graphs)
    module.set_model(net)
    keys = _graph_keys_callback()
    trainer = pl.Trainer(max_epochs=1, accelerator='gpu', devices=1, precision=precision, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, gradient_clip_val=5.0, callbacks=[keys], **trainer_kwargs)
    trainer.fit(module, train_dataloaders=train, val_dataloaders=test)     # validation: no_grad
    tested = trainer.validate(module, test, verbose=False)[0]              # inference_mode, after Lightning's moves
    return module, tested, keys.keys


@gpu
@pytest.mark.parametrize('accumulate, precision', [(1, 'bf16-mixed'), (2, 'bf16-mixed'), (1, '16-mixed')])
def test_gpu_retraining_matches_eager(accumulate, precision):
    """bf16 and 16-mixed (GradScaler unscales the static gradient buffers in place: T8), with
    and without gradient accumulation; ``trainer.validate`` after the fit is graphed again.
    (16-mixed skips its first steps while GradScaler finds its scale: 10 steps leave some.)"""
    net = micro_final(auxiliary=True, dropout=0.0).cuda()      # no random masks: graphed vs eager comparable
    before = copy.deepcopy(net)
    twin = copy.deepcopy(net)
    graphed, tested, keys = _gpu_retrain(net, 'auto', precision, accumulate_grad_batches=accumulate)
    eager, eager_tested, _ = _gpu_retrain(twin, 'off', precision, accumulate_grad_batches=accumulate)
    wrapper = net.__dict__['forward']
    assert graphed.graphed == [''] and not wrapper.broken and wrapper.replays >= 3 * 10    # fit, its validation, validate
    assert {'train', ('infer', False, False), ('infer', False, True)} <= wrapper.captured_kinds
    assert wrapper.recaptures == 2 and not wrapper.graphs       # dropped at each teardown
    channels_last = torch.empty(8, 3, 32, 32).contiguous(memory_format=torch.channels_last).stride()
    assert keys['train'][1][0][3] == channels_last                 # the captured input's strides
    # the update of every parameter tensor, graphed vs eager: rounding, not a doubled gradient
    num = den = 0.0
    for p, q, p0 in zip(net.parameters(), twin.parameters(), before.parameters()):
        num += float((p - q).float().norm() ** 2)
        den += float((q - p0).float().norm() ** 2)
    assert den > 0 and num ** 0.5 <= 0.05 * den ** 0.5
    assert abs(tested['test_loss'] - eager_tested['test_loss']) < 0.05 * abs(eager_tested['test_loss'])


@gpu
def test_gpu_dropout_and_drop_path_draw_fresh_masks_per_replay():
    net = micro_final(drop_path_prob=0.5, dropout=0.5).cuda()
    net.set_drop_path_progress(1.0)
    wrapper = net.forward = CudaGraphModule(net)
    x = torch.randn(64, 3, 32, 32, device='cuda')
    outs = [net(x).detach().clone() for _ in range(3)]      # training graph (outputs freed: no backward needed)
    with torch.no_grad():
        outs += [net(x).clone() for _ in range(2)]          # inference graph, training mode
    assert wrapper.replays == 5 and not wrapper.broken
    for a, b in zip(outs, outs[1:]):
        assert not torch.equal(a, b)


class _DropPathBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)
        self.register_buffer('drop_prob', torch.zeros(()), persistent=False)

    def forward(self, x):
        return drop_path(self.conv(x), self.drop_prob)


@gpu
@pytest.mark.parametrize('grad', [True, False], ids=['training_graph', 'inference_graph'])
def test_gpu_drop_path_probability_is_read_at_every_replay(grad):
    """Captured at probability 0, replayed at 0.75: a probability frozen at capture would drop
    nothing (T5). Then micro's own cells: captured at progress 0 (exactly eager), changed at 1."""
    block = _DropPathBlock().cuda()
    wrapper = block.forward = CudaGraphModule(block)
    x = torch.randn(4096, 8, 1, 1, device='cuda')
    with torch.set_grad_enabled(grad):
        first = block(x).detach().clone()
        block.drop_prob.fill_(0.75)
        out = block(x).detach().clone()
        plain = block.conv(x).detach()
    torch.testing.assert_close(first, plain, atol=1e-4, rtol=1e-3)
    dropped = (out.flatten(1) == 0).all(1)
    assert abs(dropped.float().mean().item() - 0.75) < 0.03 and wrapper.replays == 2
    torch.testing.assert_close(out[~dropped], 4 * plain[~dropped], atol=1e-4, rtol=1e-3)

    net = micro_final(drop_path_prob=0.9, dropout=0.0).cuda()
    reference = copy.deepcopy(net)
    net.set_drop_path_progress(0.0)
    reference.set_drop_path_progress(0.0)
    net.forward = CudaGraphModule(net)
    x = torch.randn(16, 3, 32, 32, device='cuda')
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(net(x).detach(), reference(x).detach(), atol=1e-4, rtol=1e-3)
        net.set_drop_path_progress(1.0)
        assert not torch.allclose(net(x).detach(), reference(x).detach(), atol=1e-3)


_FAILED_CAPTURE = r"""
import sys
import torch
import torch.nn as nn
sys.path.insert(0, sys.argv[1])
from nni_enas.training.cuda_graphs import CudaGraphCaptureError, CudaGraphModule, _GraphSet


class HostSync(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x) * float(x.abs().sum() > 0)        # a host read: the capture fails


bad, good = HostSync().cuda(), nn.Linear(4, 4).cuda()
graph_set = _GraphSet(track_forwards=False)
good.forward = CudaGraphModule(good, name='good', graph_set=graph_set)
wrapper = bad.forward = CudaGraphModule(bad, name='bad', graph_set=graph_set)
x = torch.randn(8, 4, device='cuda')
with torch.no_grad():
    good(x)                                                   # captured before the failure
stream = torch.cuda.current_stream()
try:
    bad(x)
    print('NO ERROR', flush=True)
except CudaGraphCaptureError as error:
    print('ERROR', error, flush=True)
print('STREAM', torch.cuda.current_stream() == stream, 'BROKEN', wrapper.broken, flush=True)
# what this torch does after a failed capture: the reason the run stops (for the log only)
for name, probe in (('eager_rng', lambda: torch.rand(10, device='cuda')), ('replay', lambda: good(x)),
                    ('empty_cache', torch.cuda.empty_cache)):
    try:
        probe()
        torch.cuda.synchronize()
        print('STATE', name, 'ok', flush=True)
    except Exception as error:  # noqa: BLE001
        print('STATE', name, type(error).__name__, (str(error).splitlines() or [''])[0][:100], flush=True)
"""


@gpu
def test_gpu_failed_capture_stops_with_one_clear_error_and_restores_the_stream():
    """In its own process: on torch < 2.13 a failed capture leaves the process's CUDA generator
    and allocator unusable (REVIEW finding 2, T9). What the state is afterwards is reported as a
    warning in the test summary, for the record."""
    import subprocess
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, '-c', _FAILED_CAPTURE, root], capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    errors = [line for line in lines if line.startswith('ERROR ')]
    assert len(errors) == 1 and 'CUDA graph capture of bad failed' in errors[0] and '--cuda-graphs off' in errors[0], \
        done.stdout[-2000:] + done.stderr[-2000:]
    assert 'STREAM True BROKEN True' in lines
    # the probes after the failure may crash the process on some versions: that is the finding, not a failure
    warnings.warn(f'after a failed capture on torch {torch.__version__} (exit {done.returncode}): '
                  + '; '.join(line[6:] for line in lines if line.startswith('STATE ')), UserWarning)
