"""One ENAS search epoch of ours on synthetic CIFAR-shaped data, with a time breakdown.

The default epoch is the peers' (../shared/peer-bench): N samples, the first half trains the
shared weights (one sampled child per minibatch, SGD 0.05 / momentum 0.9 / wd 1e-4, clip 5), the
second half gives the controller's rewards (one sampled child per minibatch). By default the
controller aggregates all reward batches into one update (the peers, with 20 > 8 batches, make
none), and no export is made (``--num-candidates 0``).

``--paper`` is the paper's epoch instead: a 45k/5k synthetic split, the paper's batch size,
controller (50 x 20 = 1000 samples for macro, 30 x 10 = 300 for micro), SGD recipe and 100
export candidates; the metrics line then also has the projected hours of the full search (310
macro / 150 micro epochs). ``--paper --samples N`` shortens only the child phase (N images, a
tenth of them for the rewards, which the controller phase cycles through): the controller
phase and the export stay whole, and ``projected_paper_epoch_s`` is the clean epoch plus the
missing child steps at the clean epoch's time per step (352 macro / 282 micro steps in a paper
epoch), so a GPU call can measure a paper epoch in a fraction of its time.

stdout: JSON lines only; the last one is the metrics dict. Which epochs run (``--plan``, or
``--full``, the default on CUDA; on CPU only the instrumented epoch, unless ``--full``):

1. warm-up epoch (cuDNN autotuning, CUDA-graph capture), untimed;
2. clean epoch: nothing wrapped, one timer around it: ``epoch_s`` and ``projected_hours``;
3. instrumented epoch: the library's methods wrapped from here (with a device synchronisation
   around each call, so its total is a little slower): the breakdown;
4. profiled epoch (``torch.profiler``): the device's kernel time; ``gpu_busy_share`` = kernel
   time / the clean epoch's seconds (on CPU there are no device kernels: null); ``--no-profile``
   leaves it out.

``--stand-in-graphs`` (CPU only) wraps the supernet's modules as on a GPU, with stand-in "graphs"
whose replays do no arithmetic (fixed outputs and gradients): what is left of the epoch is the
CPU work of a graphed search -- routing, the wrapper's checks, autograd's bookkeeping, the
optimizer, Lightning, the controller. With a tiny ``--channels`` and ``--batch-size`` it is the
CPU floor under a graphed GPU step, which the GPU cannot hide (compare with the GPU's busy time
per step).

Each finished epoch also prints a line ``{"epoch": ROLE, "seconds": ..., "child_s": ...,
"controller_s": ..., "graph_replays": ...}`` at once, so that a run stopped by a time limit still
shows how far it got (``child_s``: the child phase after its one sync; ``controller_s``: the
controller phase, measured whole).

CUDA graphs are counted (``graph_wrappers``, ``graph_captures``, ``graph_replays``,
``graph_broken``): a silent fall-back to eager shows as a number, not only as "no speed-up".

Breakdown (``breakdown_s``): ``child_phase`` (the epoch's training steps), of which
``child_forward``, ``child_backward``, ``optimizer_step_and_clip``, ``supernet_resampling``,
``data_loading``; ``controller_sampling`` (every ``sample_batch``: child phase, controller phase
and export), ``reward_forwards`` (controller phase), ``controller_update`` (the rest of the
controller phase: reward transfer, baseline, REINFORCE backward, Adam), ``export`` (best of K),
``other`` (Lightning, logging, everything else). ``limit_s`` = child forward + backward + reward
forwards (the work ENAS cannot avoid), ``overhead`` = 1 - limit_s / epoch_s.

    python3 bench/search_epoch.py --search-for macro --samples 1024 --batch-size 64 --device cpu
    python3 bench/search_epoch.py --search-for micro --paper --device cuda
    python3 bench/search_epoch.py --search-for macro --samples 64 --batch-size 16 --layers 2 --channels 4 --full
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import env_facts, median, peak_rss_mib, print_json, stdout_to_stderr  # noqa: E402

PAPER_SAMPLES, PAPER_VALID = 50_000, 5_000       # the paper's 45k / 5k split of CIFAR-10's training set
PLAN_ROLES = ('warmup', 'clean', 'instrumented', 'profiled')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--search-for', choices=['macro', 'micro'], default='macro', help='search space')
    p.add_argument('--samples', type=int, default=None,
                   help='synthetic images (half train, half reward) (default: 1024; --paper: 50000, 45k/5k; '
                        'given with --paper: a tenth rewards, for a quick smoke test of the paper epoch)')
    p.add_argument('--batch-size', type=int, default=None,
                   help='minibatch size of both halves (default: 64; --paper: the paper\'s, unless given)')
    p.add_argument('--device', default='cpu', help='cpu, cuda or auto')
    p.add_argument('--paper', action='store_true',
                   help='the paper\'s epoch: 45k/5k split, paper batch size, controller steps and samples, '
                        '100 export candidates (explicit --batch-size, --ctrl-steps, --ctrl-steps-aggregate and '
                        '--num-candidates still win: tiny plumbing checks of the paper path on a CPU)')
    p.add_argument('--full', action=argparse.BooleanOptionalAction, default=None,
                   help='warm-up + clean + instrumented + profiled epochs (default: on for CUDA)')
    p.add_argument('--plan', default=None,
                   help='the epochs to run, comma-separated, from warmup,clean,instrumented,profiled, in that '
                        'order (overrides --full/--profile; without instrumented there is no breakdown)')
    p.add_argument('--profile', action=argparse.BooleanOptionalAction, default=True,
                   help='with --full: the fourth, profiled epoch (gpu_busy_share)')
    p.add_argument('--num-candidates', type=int, default=None,
                   help='export candidates scored after the epoch (default: 0, none; --paper: 100)')
    p.add_argument('--cuda-graphs', choices=['auto', 'off'], default='auto', help='CUDA graphs for the supernet')
    p.add_argument('--stand-in-graphs', action='store_true',
                   help='CPU only: wrap the supernet as on a GPU with replays that do no arithmetic '
                        '(the CPU floor of a graphed search)')
    p.add_argument('--network', choices=['ours', 'peers'], default='ours',
                   help="'ours': our MacroSpace/MicroSpace; 'peers': the peer benchmarks' own NNI 3.0 spaces "
                        "(../shared/peer-bench/peer_nni30/spaces.py), i.e. the very networks the peers train, "
                        "searched by our ENAS: the equal-settings comparison")
    p.add_argument('--peer-dir', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                                                        'shared', 'peer-bench'),
                   help='the peer-bench folder (for --network peers)')
    p.add_argument('--layers', type=int, default=None, help='space depth (default: the paper search setting)')
    p.add_argument('--channels', type=int, default=None, help='space width (default: the paper search setting)')
    p.add_argument('--ctrl-steps-aggregate', type=int, default=None,
                   help='samples per controller update (default: all reward batches -> one update)')
    p.add_argument('--ctrl-steps', type=int, default=None,
                   help='controller updates per epoch (default: reward batches / --ctrl-steps-aggregate; '
                        '--paper: the paper\'s)')
    p.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0: leave the default)')
    p.add_argument('--seed', type=int, default=0, help='random seed')
    p.add_argument('--sample-reps', type=int, default=20, help='controller samples timed after the epoch')
    args = p.parse_args(argv)
    if args.stand_in_graphs and args.device != 'cpu':
        p.error('--stand-in-graphs is for --device cpu (a GPU has real graphs)')
    if args.plan is not None:
        roles = args.plan.split(',')
        if any(r not in PLAN_ROLES for r in roles) or roles != sorted(set(roles), key=PLAN_ROLES.index):
            p.error(f'--plan: roles from {",".join(PLAN_ROLES)}, in that order; got {args.plan!r}')
    return args


def epoch_plan(args, device: str) -> list[str]:
    """The roles of the epochs to run, in order."""
    if args.plan is not None:
        return args.plan.split(',')
    full = args.full if args.full is not None else device.startswith('cuda')
    return list(PLAN_ROLES[:4 if args.profile else 3]) if full else ['instrumented']


# --------------------------------------------------------------------------- set-up

def resolve_device(name: str) -> str:
    import torch
    if name == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    return name


def synchronizer(device: str) -> Callable[[], None]:
    import torch
    return torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)


def build_space(args):
    """The space to search and its (layers, channels); the peers' spaces when --network peers."""
    from nni_enas import MacroSpace, MicroSpace
    from nni_enas.paper import SEARCH
    settings = SEARCH[args.search_for]
    if args.network == 'peers':
        sys.path.insert(0, os.path.join(args.peer_dir, 'peer_nni30'))
        import spaces as peer_spaces   # the peers' NNI 3.0 model spaces, used as they are
        return peer_spaces.build(args.search_for, skip_impl='inputchoice'), None, None
    layers = args.layers or settings['layers']
    channels = args.channels or settings['channels']
    cls = MacroSpace if args.search_for == 'macro' else MicroSpace
    return cls(num_layers=layers, channels=channels), layers, channels


def build_search(args, device: str, epochs: int):
    """``(trainer, train_loader, reward_loader, space facts)``: our EnasTrainer on synthetic data."""
    import torch
    from nni_enas import EnasTrainer
    from nni_enas.data.images import BatchLoader, load_data
    from nni_enas.paper import SEARCH, controller_kwargs
    from nni_enas.training.classification import accuracy, enas_sgd

    settings = SEARCH[args.search_for]
    space, layers, channels = build_space(args)
    if args.paper:
        samples = args.samples or PAPER_SAMPLES
        valid_size = PAPER_VALID if args.samples is None else max(1, samples // 10)
        batch_size = args.batch_size or settings['batch_size']
    else:
        samples = args.samples or 1024
        valid_size, batch_size = samples // 2, args.batch_size or 64
    train, valid = load_data('synthetic', None, split='search', synthetic_size=samples, valid_size=valid_size,
                             seed=args.seed)
    train_loader = BatchLoader(train, batch_size, shuffle=True, augment=True, device=device)
    reward_loader = BatchLoader(valid, batch_size, shuffle=True, augment=False, device=device)
    if args.paper:
        aggregate = args.ctrl_steps_aggregate or settings['ctrl_steps_aggregate']
        ctrl_steps = args.ctrl_steps or settings['ctrl_steps']
        optimizer = lambda params: enas_sgd(params, lr_max=settings['lr_max'], lr_min=settings['lr_min'],  # noqa: E731
                                            weight_decay=settings['weight_decay'])
    else:
        aggregate = args.ctrl_steps_aggregate or len(reward_loader)
        ctrl_steps = args.ctrl_steps or max(1, len(reward_loader) // aggregate)
        # foreach=True with --stand-in-graphs: the optimizer step as on CUDA (PyTorch's CPU default
        # is a Python loop over the parameters)
        optimizer = torch.optim.SGD(space.parameters(), 0.05, momentum=0.9, weight_decay=1e-4,
                                    foreach=True if args.stand_in_graphs else None)
    num_candidates = args.num_candidates if args.num_candidates is not None else (100 if args.paper else 0)
    trainer = EnasTrainer(
        space, torch.nn.CrossEntropyLoss(), None, accuracy, optimizer, epochs, None,
        dataloaders=(train_loader, reward_loader), device=device, grad_clip=5.0,
        ctrl_lr=settings['ctrl_lr'], ctrl_steps_aggregate=aggregate, ctrl_steps=ctrl_steps,
        ctrl_kwargs=controller_kwargs(settings), reward_train_mode=settings['reward_train_mode'],
        num_candidates=max(1, num_candidates), cuda_graphs=args.cuda_graphs,
        trainer_kwargs=dict(enable_progress_bar=False))
    facts = dict(samples=samples, batch_size=batch_size, layers=layers, channels=channels,
                 model_params=sum(p.numel() for p in space.parameters()), ctrl_steps=ctrl_steps,
                 ctrl_steps_aggregate=aggregate, num_candidates=num_candidates)
    return trainer, train_loader, facts


def free_replay_wrapper():
    """A :class:`CudaGraphModule` for the CPU whose "graphs" return fixed outputs and gradients.

    The real wrapper's dispatch and checks run; a training replay is one autograd Function node
    (as ``make_graphed_callables``' is) that returns the first call's outputs and, backwards,
    zero gradients; an inference replay returns the first call's outputs (the wrapper clones
    them, as on the GPU). Numbers are meaningless; the CPU time is the point.
    """
    import torch
    from torch.utils._pytree import tree_flatten, tree_unflatten
    from nni_enas.training.cuda_graphs import CudaGraphModule

    class FreeReplay(CudaGraphModule):
        def _on_device(self, args):
            return True

        def _record_training(self, args, amp):
            params = tuple(self._params)
            with torch.no_grad():
                flat, spec = tree_flatten(self.module(*args))
            outputs = [t.detach() for t in flat]
            grads = [torch.zeros_like(t) if t.requires_grad else None for t in (*args, *params)]

            class Replay(torch.autograd.Function):
                @staticmethod
                def forward(ctx, *inputs):
                    return tuple(o.detach() for o in outputs)

                @staticmethod
                def backward(ctx, *_):
                    return tuple(None if g is None else g.detach() for g in grads)

            return lambda *inputs: tree_unflatten(list(Replay.apply(*inputs, *params)), spec)

        def _record_inference(self, args, amp):
            with torch.no_grad():
                out = self.module(*args)
            return lambda *inputs: out

    return FreeReplay


# --------------------------------------------------------------------------- measuring

class Timers:
    """Totals of wrapped calls, per phase ('child', 'ctrl', 'export'), each call synchronised."""

    def __init__(self, sync):
        self.sync = sync
        self.total: dict[str, float] = {}
        self.phase = 'child'
        self.enabled = False

    def add(self, key: str, seconds: float) -> None:
        self.total[key] = self.total.get(key, 0.0) + seconds

    def get(self, key: str) -> float:
        return self.total.get(key, 0.0)

    def wrap(self, owner, name, key, per_phase=False, phase=None):
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if not self.enabled:
                return fn(*args, **kwargs)
            previous = self.phase
            if phase is not None:
                self.phase = phase
            self.sync()
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                self.add(f'{key}_{self.phase}' if per_phase else key, time.perf_counter() - t)
                self.phase = previous
        setattr(owner, name, timed)


def instrument(trainer, train_loader, timers: Timers) -> None:
    """Wrap the library's methods (from here: the library is not changed for benchmarking)."""
    module = trainer.module
    model = module.training_module.model
    timers.wrap(model, 'forward', 'forward', per_phase=True)
    timers.wrap(module, 'manual_backward', 'backward')
    timers.wrap(module.training_module, 'optimizer_step', 'optimizer')
    timers.wrap(module.training_module, 'configure_gradient_clipping', 'optimizer')
    timers.wrap(trainer.controller, 'sample_batch', 'sample', per_phase=True)
    timers.wrap(module, 'apply', 'resample', per_phase=True)
    timers.wrap(module, 'train_controller', 'controller_phase', phase='ctrl')
    timers.wrap(module, 'export_candidates', 'export', phase='export')
    timers.wrap(module, 'finish_epoch', 'epoch_end')

    iter_fn = type(train_loader).__iter__

    def timed_iter(loader):
        it = iter_fn(loader)
        while True:
            enabled = timers.enabled
            if enabled:
                timers.sync()
            t = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            if enabled:
                timers.sync()
                timers.add('data', time.perf_counter() - t)
            yield batch
    train_loader.__class__ = type('TimedLoader', (type(train_loader),), {'__iter__': timed_iter})


def epoch_timer(sync, export: bool):
    """A Lightning callback timing every epoch (and every training batch), export included."""
    import pytorch_lightning as pl

    class EpochTimer(pl.Callback):
        def __init__(self):
            self.epoch_s: list[float] = []
            self.batch_s: list[list[float]] = []

        def on_train_epoch_start(self, trainer_, pl_module):
            sync()
            self.t0 = time.perf_counter()
            self.batch_s.append([])

        def on_train_batch_start(self, trainer_, pl_module, batch, batch_idx):
            self.tb = time.perf_counter()

        def on_train_batch_end(self, trainer_, pl_module, outputs, batch, batch_idx):
            self.batch_s[-1].append(time.perf_counter() - self.tb)

        def on_train_epoch_end(self, trainer_, pl_module):
            # as search.py's ArchitectureExport: controller phase, then the export, before the checkpoint
            pl_module.export_epoch() if export else pl_module.finish_epoch()
            sync()
            self.epoch_s.append(time.perf_counter() - self.t0)

    return EpochTimer()


def breakdown(T: Timers, epoch_s: float) -> dict[str, float]:
    """The instrumented epoch's time by what it did (see the module docstring); the parts but
    ``child_phase`` (an aggregate) sum to ``epoch_s``."""
    ctrl = T.get('controller_phase')
    reward_forwards = T.get('forward_ctrl')
    parts = {
        'child_forward': T.get('forward_child'), 'child_backward': T.get('backward'),
        'optimizer_step_and_clip': T.get('optimizer'), 'data_loading': T.get('data'),
        'supernet_resampling': T.get('resample_child') + T.get('resample_ctrl'),
        'controller_sampling': T.get('sample_child') + T.get('sample_ctrl'),
        'reward_forwards': reward_forwards,
        'controller_update': ctrl - reward_forwards - T.get('sample_ctrl') - T.get('resample_ctrl'),
        'export': T.get('export'),
    }
    parts['other'] = epoch_s - sum(parts.values())
    parts['child_phase'] = epoch_s - T.get('epoch_end') - T.get('export')
    return parts


def time_controller_samples(trainer, sync, reps: int) -> list[float]:
    import torch
    sample_ms = []
    with torch.no_grad():
        for _ in range(reps):
            sync()
            t = time.perf_counter()
            trainer.module.apply(trainer.controller.sample_batch(1)[0][0])
            sync()
            sample_ms.append((time.perf_counter() - t) * 1000)
    return sample_ms


# --------------------------------------------------------------------------- main

def graph_counts(model) -> dict[str, int]:
    """How the CUDA-graph wrappers of ``model`` fared (zeros when nothing is wrapped)."""
    from nni_enas.training.cuda_graphs import graph_wrappers
    wrappers = graph_wrappers(model)
    return {'graph_wrappers': len(wrappers), 'graph_captures': sum(w.captures for w in wrappers),
            'graph_replays': sum(w.replays for w in wrappers), 'graph_broken': sum(w.broken for w in wrappers),
            'graph_recaptures': sum(w.recaptures for w in wrappers)}


def plan_callback(plan, timer, timers, device, epochs: dict, profiled: dict):
    """Sets each epoch's role at its start; prints its line at its end (after ``timer``'s)."""
    import pytorch_lightning as pl

    class Plan(pl.Callback):
        def on_train_epoch_start(self, trainer_, pl_module):
            role = plan[trainer_.current_epoch]
            timers.enabled = role == 'instrumented'
            if role == 'profiled':
                self.profiler = _start_profiler(device)

        def on_train_epoch_end(self, trainer_, pl_module):
            role = plan[trainer_.current_epoch]
            if timer.epoch_s:
                stats = pl_module.epoch_stats
                line = {'epoch': role, 'seconds': timer.epoch_s[-1], 'child_s': stats.get('child_seconds'),
                        'controller_s': stats.get('seconds'),
                        **graph_counts(pl_module.training_module.model)}
                epochs[role] = line
                print_json(line)
            if role == 'profiled':
                profiled.update(_stop_profiler(self.profiler))
            timers.enabled = False

    return Plan()


def paper_projection(args, facts, epochs: dict) -> dict[str, Any]:
    """A paper epoch from a shortened one (``--paper --samples N``): the clean epoch plus the
    missing child steps at its time per step; the controller phase and export are whole."""
    import math
    from nni_enas.paper import SEARCH
    clean = epochs.get('clean')
    if not (args.paper and args.samples and clean and clean.get('child_s')):
        return {}
    batch = facts['batch_size']
    steps = math.ceil(facts['child_train_images'] / batch)
    paper_steps = math.ceil((PAPER_SAMPLES - PAPER_VALID) / batch)
    step_s = clean['child_s'] / steps
    epoch_s = clean['seconds'] + (paper_steps - steps) * step_s
    epochs_total = SEARCH[args.search_for]['epochs']
    return {'child_steps': steps, 'paper_child_steps': paper_steps, 'child_step_s': step_s,
            'projected_paper_epoch_s': epoch_s, 'projected_paper_child_img_per_s': batch / step_s,
            'projected_paper_hours': epoch_s * epochs_total / 3600}


def run(args) -> dict[str, Any]:
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    sync = synchronizer(device)
    plan = epoch_plan(args, device)

    with stdout_to_stderr():
        trainer, train_loader, facts = build_search(args, device, epochs=len(plan))
        facts['child_train_images'] = len(train_loader.dataset)
        module = trainer.module
        if args.stand_in_graphs:
            from nni_enas.training.cuda_graphs import graph_supernet
            graph_supernet(module.training_module.model, device='cuda', wrapper=free_replay_wrapper())
        ctrl_before = [p.detach().clone() for p in trainer.controller.parameters()]
        timers = Timers(sync)
        instrument(trainer, train_loader, timers)
        timer = epoch_timer(sync, export=facts['num_candidates'] > 0)
        epochs: dict[str, dict] = {}
        profiled: dict[str, Any] = {}
        # Lightning runs the plan's epochs in one fit; each epoch's role is set at its start.
        trainer.trainer.callbacks += [timer, plan_callback(plan, timer, timers, device, epochs, profiled)]
        wall0 = time.perf_counter()
        trainer.fit()
        fit_s = time.perf_counter() - wall0
        sample_ms = time_controller_samples(trainer, sync, args.sample_reps)
    changed = any(not torch.equal(a, b) for a, b in zip(ctrl_before, trainer.controller.parameters()))
    metrics = epoch_metrics(args, device, plan, facts, timer, timers, module, epochs)
    metrics.update(fit_s=fit_s, sample_arch_ms=sum(sample_ms) / max(1, len(sample_ms)),
                   controller_params_changed=changed,
                   controller_device=str(next(trainer.controller.parameters()).device))
    if profiled:
        metrics.update(profiled)
        metrics['gpu_busy_share'] = profiled['kernel_s'] / metrics['epoch_s'] if device.startswith('cuda') else None
    return metrics


def instrumented_breakdown(timers: Timers, instrumented_s: float, images: int) -> dict[str, Any]:
    """The instrumented epoch's figures: its breakdown, the limit and the overhead."""
    parts = breakdown(timers, instrumented_s)
    child_s = parts.pop('child_phase')
    limit_s = parts['child_forward'] + parts['child_backward'] + parts['reward_forwards']
    return {'child_train_s': child_s, 'child_phase_s': child_s, 'child_train_img_per_s': images / child_s,
            'controller_s': timers.get('controller_phase'), 'limit_s': limit_s,
            'overhead': 1 - limit_s / instrumented_s, 'breakdown_s': parts,
            'breakdown_share': {k: v / instrumented_s for k, v in parts.items()}}


def epoch_metrics(args, device, plan, facts, timer, timers, module, epochs) -> dict[str, Any]:
    """The metrics dict of the finished plan (see the module docstring)."""
    import torch
    import nni_enas
    from nni_enas.paper import SEARCH
    roles = dict(zip(plan, timer.epoch_s))
    # the figures of the epoch the breakdown timed, or else of the last epoch (its own phases)
    measured = 'instrumented' if 'instrumented' in roles else plan[-1]
    measured_s = roles[measured]
    epoch_s = roles.get('clean', measured_s)
    images = facts['child_train_images']
    batches = timer.batch_s[plan.index(measured)]
    cuda = device.startswith('cuda')
    metrics = {
        'impl': 'nni-enas', 'space': args.search_for, 'paper': args.paper, 'device': device, 'network': args.network,
        **facts, 'plan': plan, 'cuda_graphs': args.cuda_graphs, 'stand_in_graphs': args.stand_in_graphs,
        'graphed_modules': len(module.graphed_modules),
        **graph_counts(module.training_module.model),
        'epoch_s': epoch_s, 'instrumented_epoch_s': roles.get('instrumented'), 'epochs': epochs,
        'child_train_batch_s': batches, 'child_train_batch_median_s': median(batches),
        'controller_samples': module.epoch_stats.get('samples'),
        'epoch_img_per_s': facts['samples'] / epoch_s,
        'peak_rss_mib': peak_rss_mib(),
        'peak_cuda_mib': torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None,
        'peak_cuda_reserved_mib': torch.cuda.max_memory_reserved() / 2 ** 20 if cuda else None,
        'nni_enas': nni_enas.__version__, **env_facts(device),
    }
    if measured == 'instrumented':
        metrics.update(instrumented_breakdown(timers, measured_s, images))
    else:
        child_s, ctrl_s = epochs[measured]['child_s'], epochs[measured]['controller_s']
        metrics.update(child_train_s=child_s, child_phase_s=child_s, child_train_img_per_s=images / child_s,
                       controller_s=ctrl_s)
    if 'clean' in roles:
        total = SEARCH[args.search_for]['epochs']
        metrics.update(projected_hours=epoch_s * total / 3600, projected_for_epochs=total)
    metrics.update(paper_projection(args, facts, epochs))
    return metrics


def _start_profiler(device: str):
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith('cuda') else [])
    prof = profile(activities=activities, record_shapes=False)
    prof.__enter__()
    prof.t0 = time.perf_counter()
    return prof


def _stop_profiler(prof) -> dict[str, Any]:
    wall = time.perf_counter() - prof.t0
    prof.__exit__(None, None, None)
    kernel_us = 0.0
    for event in prof.key_averages():
        kernel_us += getattr(event, 'self_device_time_total', getattr(event, 'self_cuda_time_total', 0.0)) or 0.0
    return {'profiled_epoch_s': wall, 'kernel_s': kernel_us / 1e6}


def main(argv=None):
    print_json(run(parse_args(argv)))


if __name__ == '__main__':
    main()
