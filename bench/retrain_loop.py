"""Retraining throughput: ``retrain.py``'s training loop vs a minimal hand-written PyTorch loop.

Both train the same frozen network (a shipped architecture at its final widths, built through
NNI: load_architecture -> space -> freeze) on the same synthetic data through the same batches
(in-memory, augmented on the device), with the same recipe: cross-entropy (+0.4 x auxiliary),
Nesterov SGD, gradient clipping at norm 5, drop path, the same precision. Each side runs two
epochs of ``--steps`` minibatches; the figure is the second epoch's training images/s (the
first pays for allocations, warm-up and graph capture). Runs alternate, ``--reps`` times.

"Ours" is retrain.py itself (ChildTraining in a Lightning Trainer; on CUDA its forward and
backward run as CUDA graphs through nni_enas/training/cuda_graphs.py, bf16 autocast, channels-last).
The hand-written loop uses the same technique without any of our code on the step: on CUDA one
``torch.cuda.make_graphed_callables`` of the whole network (forward + backward) captured under
``torch.autocast(bf16, cache_enabled=False)`` on channels-last weights and inputs, the loss and
the foreach SGD step eager, cuDNN autotuning on as retrain.py has it (Lightning's
``benchmark=True``); on the CPU plain eager fp32. ``--impls ours`` runs retrain.py alone (the
eager figure of ``--cuda-graphs off`` needs no hand-written twin).

    python3 bench/retrain_loop.py --arcs paper-micro,paper-macro --steps 4 --device cpu --channels 8
    python3 bench/retrain_loop.py --device cuda --steps 50      # paper batches: micro 144, macro 100
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from common import env_facts, median, peak_rss_mib, print_json, stdout_to_stderr  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--arcs', default='paper-micro,paper-macro', help='comma-separated shipped names or files')
    p.add_argument('--steps', type=int, default=4, help='minibatches per epoch (two epochs per run)')
    p.add_argument('--batch-size', type=int, default=None, help='default: the paper final batch of the space')
    p.add_argument('--channels', type=int, default=None, help='override the final width (quicker CPU runs)')
    p.add_argument('--layers', type=int, default=None,
                   help='override the depth (micro architectures only: a macro one fixes its layers; quicker CPU runs)')
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    p.add_argument('--precision', default='auto', help="retrain.py's --precision (auto: bf16-mixed on CUDA, 32 on CPU)")
    p.add_argument('--reps', type=int, default=2, help='alternating repetitions of (ours, hand-written)')
    p.add_argument('--cuda-graphs', choices=('auto', 'off'), default='auto',
                   help='CUDA graphs on both sides (auto: on for CUDA); off is passed to retrain.py as --cuda-graphs off')
    p.add_argument('--impls', default='ours,hand_written', help='which loops run: ours, hand_written or both')
    args = p.parse_args(argv)
    impls = args.impls.split(',')
    if not impls or any(i not in ('ours', 'hand_written') for i in impls):
        p.error(f'--impls: ours and/or hand_written, got {args.impls!r}')
    args.impls = impls
    return args


def ours(arc: str, batch: int, steps: int, args) -> float:
    """Second-epoch training images/s that retrain.py reports."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, os.path.join(ROOT, 'retrain.py'), '--arc', arc, '--dataset', 'synthetic',
               '--synthetic-size', str(batch * steps), '--epochs', '2', '--batch-size', str(batch),
               '--device', args.device, '--precision', args.precision, '--output', os.path.join(tmp, 'run'),
               '--no-progress-bar']
        if args.channels:
            cmd += ['--channels', str(args.channels)]
        if args.layers:
            cmd += ['--layers', str(args.layers)]
        if args.cuda_graphs != 'auto':
            cmd += ['--cuda-graphs', args.cuda_graphs]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        if out.returncode != 0:
            raise RuntimeError(f'retrain.py failed: {out.stderr.strip().splitlines()[-1:]}')
        rates = re.findall(r'^epoch 2/2 .*\(([\d.e+]+) img/s\)', out.stdout + out.stderr, re.M)
        if not rates:
            raise RuntimeError('no epoch-2 summary line from retrain.py')
        return float(rates[-1])


def graphed(net, sample, autocast):
    """The whole network's forward and backward as one CUDA graph, captured without a garbage
    collection inside the capture (which could free the previous run's graphs mid-capture)."""
    import torch
    gc.collect()        # the previous run's graphs (reference cycles) go now
    gc.disable()
    try:
        with autocast():
            return torch.cuda.make_graphed_callables(net, (sample,), num_warmup_iters=3)
    finally:
        gc.enable()


def hand_written(arc: str, batch: int, steps: int, args) -> float:
    """The same training with a plain loop: forward, loss, backward, clip, step (CUDA: graphed fwd+bwd)."""
    import torch
    import torch.nn.functional as F
    from nni_enas.architecture import build_space, load_architecture
    from nni_enas.data.images import BatchLoader, load_data
    from nni_enas.paper import FINAL
    from nni_enas.training.classification import enas_sgd
    from nni_enas.training.retraining import final_space_args

    device = torch.device(args.device)
    cuda = device.type == 'cuda'
    # retrain.py's Trainer has benchmark=True on CUDA: the same cuDNN algorithm choice on both sides
    torch.backends.cudnn.benchmark = cuda
    record = load_architecture(arc)
    settings = dict(FINAL[record['space']])
    if args.channels:
        settings['channels'] = args.channels
    if args.layers:
        settings['layers'] = args.layers
    net = build_space(record, **final_space_args(record['space'], settings)).freeze(record['arch']).to(device)
    bf16 = cuda and args.precision in ('auto', 'bf16-mixed') and torch.cuda.is_bf16_supported()
    layout = torch.channels_last if cuda else torch.contiguous_format
    net = net.to(memory_format=layout)
    optimizer, _ = enas_sgd(net.parameters(), lr_max=settings['lr_max'], lr_min=settings['lr_min'],
                            weight_decay=settings['weight_decay'])
    train, _ = load_data('synthetic', None, split='final', synthetic_size=batch * steps)
    loader = BatchLoader(train, batch, shuffle=True, augment=True, device=device)
    aux_weight = settings['aux_weight']
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    # cache_enabled=False: make_graphed_callables refuses autocast's weight cache
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False)  # noqa: E731
    net.train()
    if hasattr(net, 'set_drop_path_progress'):
        net.set_drop_path_progress(1 / (2 * steps))      # drop path's probability: buffers the graph reads
    forward = net
    if cuda and args.cuda_graphs == 'auto':
        forward = graphed(net, torch.zeros(batch, 3, 32, 32, device=device).contiguous(memory_format=layout), autocast)
    rate = float('nan')
    for epoch in range(2):
        sync()
        start = time.perf_counter()
        for step, (x, y) in enumerate(loader):
            if hasattr(net, 'set_drop_path_progress'):
                net.set_drop_path_progress((epoch * steps + step + 1) / (2 * steps))
            with autocast():
                out = forward(x.contiguous(memory_format=layout))
                logits, aux = out if isinstance(out, tuple) else (out, None)
                loss = F.cross_entropy(logits, y)
                if aux is not None:
                    loss = loss + aux_weight * F.cross_entropy(aux, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), settings['grad_clip'])
            optimizer.step()
        sync()
        rate = len(train) / (time.perf_counter() - start)
    return rate


def main(argv=None):
    args = parse_args(argv)
    from nni_enas.paper import FINAL
    from nni_enas.architecture import load_architecture
    for arc in args.arcs.split(','):
        space = load_architecture(arc)['space']
        batch = args.batch_size or FINAL[space]['batch_size']
        figures = {'ours': [], 'hand_written': []}
        for rep in range(args.reps):
            order = ['ours', 'hand_written'] if rep % 2 == 0 else ['hand_written', 'ours']
            for impl in [i for i in order if i in args.impls]:
                with stdout_to_stderr():
                    rate = (ours if impl == 'ours' else hand_written)(arc, batch, args.steps, args)
                figures[impl].append(rate)
                print_json({'arc': arc, 'impl': impl, 'rep': rep, 'batch_size': batch, 'steps': args.steps,
                            'channels': args.channels, 'device': args.device, 'img_per_s': rate})
        o, h = (median(figures[i]) if figures[i] else None for i in ('ours', 'hand_written'))
        print_json({'arc': arc, 'summary': True, 'ours_img_per_s': o, 'hand_written_img_per_s': h,
                    'ours_over_hand_written': o / h if o and h else None, 'cuda_graphs': args.cuda_graphs,
                    'peak_rss_mib': peak_rss_mib(), **env_facts(args.device)})


if __name__ == '__main__':
    main()
