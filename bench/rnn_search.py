"""The recurrent-cell search and retrain, timed piece by piece: child step, reward, controller phase, retrain.

Everything runs our code (``nni_enas``) on synthetic token ids at the paper's sizes by default
(search: hidden 200, 12 nodes, batch 64, BPTT 35, 10,000 words; retrain: the shipped
``paper-rnn`` cell at hidden 800), without Lightning's loop around it, so each figure is the piece
itself (synchronised on CUDA):

* ``child_step_s``: one ENAS child step (a sampled cell routed through the shared weights, the
  language-model recipe's forward and loss with the state carried, backward, clip 0.1, SGD);
* ``reward_s``: one reward (a sampled cell's zero-state forward on one validation window in eval mode);
* ``ctrl_update_s``: one controller update of ``--ctrl-steps-aggregate`` samples
  (:meth:`EnasModule.train_controller`: sampling, the rewards, baseline, REINFORCE backward, Adam);
* ``search_epoch_projected_s``: the paper's epoch from these (414 child steps at batch 64 on PTB,
  2000 samples in updates of 10, 100 export candidates), a projection, not a measured epoch;
* ``retrain_tokens_per_s``: training steps of the fixed cell (forward, loss with activation L2,
  backward, clip 0.25, SGD), tokens per second; ``test_tokens_per_s``: the batch-1 test forward
  with the state carried. On CUDA both run the windows as CUDA graphs (``--cuda-graphs auto``,
  as retrain.py; the first step of each captures and is not timed); ``off`` for eager.

stdout: JSON lines; the last is the metrics dict.

    python3 bench/rnn_search.py --device cpu --threads 2                     # the paper's sizes, CPU
    python3 bench/rnn_search.py --device cpu --hidden-size 64 --retrain-hidden 128 --steps 5
    python3 bench/rnn_search.py --device cuda --steps 50 --ctrl-updates 20   # the GPU command (unmeasured)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from common import env_facts, peak_rss_mib, print_json, stdout_to_stderr  # noqa: E402

PTB_TRAIN_TOKENS = 929_589


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--device', default='cpu', help='cpu, cuda or auto')
    p.add_argument('--hidden-size', type=int, default=200, help='search: hidden size')
    p.add_argument('--nodes', type=int, default=12, help='search: nodes of the cell')
    p.add_argument('--batch-size', type=int, default=64, help='search and retrain batch')
    p.add_argument('--bptt', type=int, default=35, help='window length (fixed here, for comparable steps)')
    p.add_argument('--vocab', type=int, default=10_000, help='words (PTB: 10,000)')
    p.add_argument('--steps', type=int, default=8, help='timed child steps (after 2 untimed)')
    p.add_argument('--rewards', type=int, default=20, help='timed rewards')
    p.add_argument('--ctrl-updates', type=int, default=3, help='timed controller updates')
    p.add_argument('--ctrl-steps-aggregate', type=int, default=10, help='samples per controller update')
    p.add_argument('--retrain-hidden', type=int, default=800, help='retrain: hidden size (0: no retrain part)')
    p.add_argument('--retrain-steps', type=int, default=3, help='timed retrain steps (after 1 untimed)')
    p.add_argument('--test-windows', type=int, default=20, help='timed batch-1 test windows')
    p.add_argument('--cuda-graphs', choices=('auto', 'off'), default='auto',
                   help='retrain part: the windows as CUDA graphs on CUDA (auto), or eager')
    p.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0: leave the default)')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def _timer(device: str):
    import torch
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)

    def timed(fn):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        return time.perf_counter() - start, out
    return timed


def _windows(vocab: int, batch: int, bptt: int, n: int, device: str):
    import torch
    ids = torch.randint(0, vocab, (batch, n * bptt + 1), generator=torch.Generator().manual_seed(1)).to(device)
    return [(ids[:, i * bptt:(i + 1) * bptt], ids[:, i * bptt + 1:(i + 1) * bptt + 1]) for i in range(n)]


def build_search(args, device: str):
    """Our ENAS module on the recurrent supernet with the language-model recipe (the search's settings)."""
    from nni_enas.paper import SEARCH, controller_kwargs
    from nni_enas.search.enas import Enas, EnasModule
    from nni_enas.spaces.recurrent import RecurrentSpace
    from nni_enas.training.language_data import RandomOrder
    from nni_enas.training.language_model import LanguageModelTraining, PerplexityReward

    s = SEARCH['rnn']
    space = RecurrentSpace(vocab_size=args.vocab, num_nodes=args.nodes, hidden_size=args.hidden_size)
    recipe = LanguageModelTraining(lr=s['lr'], bptt=args.bptt, weight_decay=s['weight_decay'], slowness=s['slowness'])
    module = EnasModule(recipe, reward_function=PerplexityReward(s['reward_constant']), grad_clip=s['grad_clip'],
                        entropy_weight=s['entropy_weight'], baseline_decay=s['baseline_decay'], ctrl_lr=s['ctrl_lr'],
                        ctrl_steps_aggregate=args.ctrl_steps_aggregate, ctrl_steps=1, skip_weight=0.0,
                        ctrl_kwargs=controller_kwargs(s), num_candidates=1, cuda_graphs='off')
    module.set_model(Enas().mutate_model(space))
    module.to(device)
    module.reward_dataloader = RandomOrder(_windows(args.vocab, args.batch_size, args.bptt, 4, device))
    return module, recipe


def time_search(args, device: str) -> dict:
    import torch
    timed = _timer(device)
    module, recipe = build_search(args, device)
    optimizer = recipe.configure_optimizers()
    params = [p for p in module.model.parameters()]
    windows = _windows(args.vocab, args.batch_size, args.bptt, args.steps + 2, device)
    archs = module.controller.sample_batch(len(windows))[0]

    def child_step(i):
        module.apply(archs[i])
        loss = recipe.training_step(windows[i], i)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], 0.1)
        optimizer.step()

    steps = [timed(lambda i=i: child_step(i))[0] for i in range(len(windows))][2:]
    module.eval()
    batch = windows[0]
    rewards = []
    for arch in module.controller.sample_batch(args.rewards)[0]:
        module.apply(arch)
        rewards.append(timed(lambda: module._score([batch]))[0])
    module.train()
    updates = [timed(module.train_controller)[0] for _ in range(args.ctrl_updates)]
    child, reward, update = (statistics.median(x) for x in (steps, rewards, updates))
    ptb_steps = PTB_TRAIN_TOKENS // args.batch_size // args.bptt
    return {
        'child_step_s': child, 'child_tokens_per_s': args.batch_size * args.bptt / child, 'reward_s': reward,
        'ctrl_update_s': update, 'ctrl_update_samples': args.ctrl_steps_aggregate,
        'ctrl_overhead_per_update_s': max(update - args.ctrl_steps_aggregate * reward, 0.0),
        'search_epoch_projected_s': ptb_steps * child + (2000 / args.ctrl_steps_aggregate) * update + 100 * reward,
        'ptb_child_steps_per_epoch': ptb_steps,
    }


def time_retrain(args, device: str) -> dict:
    """The shipped paper cell at ``--retrain-hidden``: training steps and the batch-1 test forward."""
    import torch
    from nni_enas.architecture import build_network, load_architecture
    from nni_enas.paper import FINAL
    from nni_enas.training.language_model import LanguageModelTraining

    f = FINAL['rnn']
    net = build_network(load_architecture('paper-rnn', validate=False), vocab_size=args.vocab,
                        hidden_size=args.retrain_hidden).to(device)
    recipe = LanguageModelTraining(lr=f['lr'], bptt=args.bptt, weight_decay=f['weight_decay'],
                                   activation_l2=f['activation_l2'], cuda_graphs=args.cuda_graphs)
    recipe.set_model(net)
    graphed = recipe.enable_cuda_graphs(device=device)      # retrain.py does it when the fit starts
    optimizer = recipe.configure_optimizers()
    timed = _timer(device)
    windows = _windows(args.vocab, args.batch_size, args.bptt, args.retrain_steps + 1, device)

    def step(i):
        loss = recipe.training_step(windows[i], i)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), f['grad_clip'])
        optimizer.step()

    steps = [timed(lambda i=i: step(i))[0] for i in range(len(windows))][1:]
    test = _windows(args.vocab, 1, args.bptt, args.test_windows, device)

    @torch.no_grad()
    def evaluate():            # the recipe's test: state carried, through its (graphed) forward
        recipe.eval()
        hidden = None
        for x, y in test:
            out = recipe._run(x, hidden)
            hidden = out.hidden
        recipe.train()

    evaluate()                 # capture (on CUDA) outside the timing
    test_s = timed(evaluate)[0]
    step_s = statistics.median(steps)
    return {'retrain_cuda_graphs': graphed, 'retrain_hidden': args.retrain_hidden,
            'retrain_parameters': sum(p.numel() for p in net.parameters()),
            'retrain_step_s': step_s, 'retrain_tokens_per_s': args.batch_size * args.bptt / step_s,
            'test_tokens_per_s': args.test_windows * args.bptt / test_s}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ('cuda' if torch.cuda.is_available() else 'cpu') if args.device == 'auto' else args.device
    torch.manual_seed(args.seed)
    facts = {'device': device, 'hidden_size': args.hidden_size, 'nodes': args.nodes, 'batch_size': args.batch_size,
             'bptt': args.bptt, 'vocab': args.vocab, **env_facts(device)}
    print_json({'settings': facts})
    with stdout_to_stderr():
        metrics = time_search(args, device)
        print_json({'part': 'search', **metrics})
        if args.retrain_hidden:
            part = time_retrain(args, device)
            print_json({'part': 'retrain', **part})
            metrics.update(part)
    print_json({**metrics, 'peak_rss_mib': peak_rss_mib(), 'device': device})
    return 0


if __name__ == '__main__':
    sys.exit(main())
