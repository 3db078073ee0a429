"""One ENAS search epoch of ours on synthetic CIFAR-shaped data, with a time breakdown.

The epoch is the peers' (../shared/peer-bench): N samples, the first half trains the shared
weights (one sampled child per minibatch, SGD 0.05 / momentum 0.9 / wd 1e-4, clip 5), the second
half gives the controller's rewards (one sampled child per minibatch). By default the controller
aggregates all reward batches into one update (the peers, with 20 > 8 batches, make none).

stdout: JSON lines only; the last one is the metrics dict. The breakdown times are measured by
wrapping the library's methods from here (the library is not changed for benchmarking):

* ``limit_s``: child forward + backward of the sampled networks (child phase) plus the child
  forwards that compute rewards (controller phase): the work ENAS cannot avoid;
* ``optimizer_s`` (shared-weight SGD step + gradient clipping), ``sample_s`` (controller sampling),
  ``resample_s`` (routing the supernet), ``data_s`` (loader ``next``), ``controller_update_s``
  (REINFORCE backward + Adam), ``other_s`` (Lightning, logging, everything else);
* ``overhead`` = 1 - limit_s / epoch_s.

    python3 bench/search_epoch.py --search-for macro --samples 1024 --batch-size 64 --device cpu
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import env_facts, median, peak_rss_mib, print_json, stdout_to_stderr  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--search-for', choices=['macro', 'micro'], default='macro', help='search space')
    p.add_argument('--samples', type=int, default=1024, help='synthetic images (half train, half reward)')
    p.add_argument('--batch-size', type=int, default=64, help='minibatch size of both halves')
    p.add_argument('--device', default='cpu', help='cpu, cuda or auto')
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
    p.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0: leave the default)')
    p.add_argument('--seed', type=int, default=0, help='random seed')
    p.add_argument('--sample-reps', type=int, default=20, help='controller samples timed after the epoch')
    return p.parse_args()


class Timers:
    def __init__(self, sync):
        self.sync = sync
        self.total: dict[str, float] = {}
        self.phase = 'child'

    def wrap(self, owner, name, key, per_phase=False):
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self.sync()
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                k = f'{key}_{self.phase}' if per_phase else key
                self.total[k] = self.total.get(k, 0.0) + time.perf_counter() - t
        setattr(owner, name, timed)


def main():
    args = parse_args()
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    with stdout_to_stderr():
        import pytorch_lightning as pl
        import nni_enas
        from nni_enas import EnasTrainer, MacroSpace, MicroSpace
        from nni_enas.data import BatchLoader, load_data
        from nni_enas.paper import SEARCH, controller_kwargs
        from nni_enas.recipe import accuracy

        device = 'cuda' if args.device == 'auto' and torch.cuda.is_available() else args.device
        device = 'cpu' if device == 'auto' else device
        sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
        settings = SEARCH[args.search_for]
        layers = args.layers or settings['layers']
        channels = args.channels or settings['channels']
        if args.network == 'peers':
            sys.path.insert(0, os.path.join(args.peer_dir, 'peer_nni30'))
            import spaces as peer_spaces   # the peers' NNI 3.0 model spaces, used as they are
            space = peer_spaces.build(args.search_for, skip_impl='inputchoice')
            layers = channels = None
        else:
            space = (MacroSpace if args.search_for == 'macro' else MicroSpace)(num_layers=layers, channels=channels)
        n_params = sum(p.numel() for p in space.parameters())
        train, valid = load_data('synthetic', None, split='search', synthetic_size=args.samples,
                                 valid_size=args.samples // 2, seed=args.seed)
        train_loader = BatchLoader(train, args.batch_size, shuffle=True, augment=True, device=device)
        reward_loader = BatchLoader(valid, args.batch_size, shuffle=True, augment=False, device=device)
        aggregate = args.ctrl_steps_aggregate or len(reward_loader)
        optimizer = torch.optim.SGD(space.parameters(), 0.05, momentum=0.9, weight_decay=1e-4)
        trainer = EnasTrainer(
            space, torch.nn.CrossEntropyLoss(), None, accuracy, optimizer, 1, None,
            dataloaders=(train_loader, reward_loader), device=device, grad_clip=5.0,
            ctrl_lr=settings['ctrl_lr'], ctrl_steps_aggregate=aggregate,
            ctrl_steps=max(1, len(reward_loader) // aggregate), ctrl_kwargs=controller_kwargs(settings),
            reward_train_mode=settings['reward_train_mode'],
            trainer_kwargs=dict(enable_progress_bar=False))
        module = trainer.module
        ctrl_before = [p.detach().clone() for p in trainer.controller.parameters()]

        timers = Timers(sync)
        model = module.training_module.model
        timers.wrap(model, 'forward', 'forward', per_phase=True)
        timers.wrap(module, 'manual_backward', 'backward')
        timers.wrap(module.training_module, 'optimizer_step', 'optimizer')
        timers.wrap(module.training_module, 'configure_gradient_clipping', 'optimizer')
        timers.wrap(trainer.controller, 'sample', 'sample', per_phase=True)
        timers.wrap(module, 'apply', 'resample', per_phase=True)
        timers.wrap(module, 'train_controller', 'controller_phase')
        original_train_controller = module.train_controller

        def train_controller():
            timers.phase = 'ctrl'
            try:
                return original_train_controller()
            finally:
                timers.phase = 'child'
        module.train_controller = train_controller

        batch_times: list[float] = []

        class EpochTimer(pl.Callback):
            def on_train_epoch_start(self, trainer_, pl_module):
                sync()
                self.t0 = time.perf_counter()

            def on_train_batch_start(self, trainer_, pl_module, batch, batch_idx):
                sync()
                self.tb = time.perf_counter()

            def on_train_batch_end(self, trainer_, pl_module, outputs, batch, batch_idx):
                sync()
                batch_times.append(time.perf_counter() - self.tb)

            def on_train_epoch_end(self, trainer_, pl_module):
                sync()
                self.epoch_s = time.perf_counter() - self.t0

        timer = EpochTimer()
        trainer.trainer.callbacks.append(timer)

        # data loading: time spent getting each training batch
        iter_fn = type(train_loader).__iter__

        def timed_iter(loader):
            it = iter_fn(loader)
            while True:
                sync()
                t = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    return
                sync()
                timers.total['data'] = timers.total.get('data', 0.0) + time.perf_counter() - t
                yield batch
        train_loader.__class__ = type('TimedLoader', (type(train_loader),), {'__iter__': timed_iter})

        wall0 = time.perf_counter()
        trainer.fit()
        fit_s = time.perf_counter() - wall0

        sample_ms = []
        with torch.no_grad():
            for _ in range(args.sample_reps):
                sync()
                t = time.perf_counter()
                module.apply(trainer.controller.sample()[0])
                sync()
                sample_ms.append((time.perf_counter() - t) * 1000)

    T = timers.total
    stats = module.epoch_stats
    # The last training batch includes the controller phase: leave it out of the per-batch times.
    child_batches = batch_times[:-1] if len(batch_times) > 1 else batch_times
    controller_s = T.get('controller_phase', 0.0)
    epoch_s = getattr(timer, 'epoch_s', fit_s)
    child_s = epoch_s - controller_s
    limit_s = T.get('forward_child', 0.0) + T.get('backward', 0.0) + T.get('forward_ctrl', 0.0)
    ctrl_update_s = controller_s - T.get('forward_ctrl', 0.0) - T.get('sample_ctrl', 0.0) - T.get('resample_ctrl', 0.0)
    accounted = limit_s + T.get('optimizer', 0.0) + T.get('sample_child', 0.0) + T.get('sample_ctrl', 0.0) + \
        T.get('resample_child', 0.0) + T.get('resample_ctrl', 0.0) + T.get('data', 0.0) + ctrl_update_s
    images = len(train_loader.dataset)
    print_json({
        'impl': 'nni-enas', 'space': args.search_for, 'samples': args.samples, 'batch_size': args.batch_size,
        'device': device, 'network': args.network, 'layers': layers, 'channels': channels, 'model_params': n_params,
        'epoch_s': epoch_s, 'fit_s': fit_s,
        'child_train_s': child_s, 'child_train_images': images, 'child_train_img_per_s': images / child_s,
        'child_train_batch_s': child_batches, 'child_train_batch_median_s': median(child_batches),
        'controller_s': controller_s, 'controller_samples': stats.get('samples'),
        'epoch_img_per_s': args.samples / epoch_s,
        'limit_s': limit_s, 'overhead': 1 - limit_s / epoch_s,
        'breakdown_s': {
            'child_forward': T.get('forward_child', 0.0), 'child_backward': T.get('backward', 0.0),
            'reward_forward': T.get('forward_ctrl', 0.0), 'optimizer_step_and_clip': T.get('optimizer', 0.0),
            'controller_sampling': T.get('sample_child', 0.0) + T.get('sample_ctrl', 0.0),
            'controller_update': ctrl_update_s,
            'supernet_resampling': T.get('resample_child', 0.0) + T.get('resample_ctrl', 0.0),
            'data_loading': T.get('data', 0.0), 'other': epoch_s - accounted,
        },
        'sample_arch_ms': sum(sample_ms) / max(1, len(sample_ms)),
        'controller_params_changed': any(not torch.equal(a, b) for a, b in
                                         zip(ctrl_before, trainer.controller.parameters())),
        'peak_rss_mib': peak_rss_mib(),
        'peak_cuda_mib': torch.cuda.max_memory_allocated() / 2 ** 20 if device.startswith('cuda') else None,
        'nni_enas': nni_enas.__version__, **env_facts(device),
    })


if __name__ == '__main__':
    main()
