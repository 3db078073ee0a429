"""Controller sampling on the CPU: n calls of sample() against one sample_batch(n) walk.

For the paper's macro (12 layers) and micro (6 layers, 5 nodes) controllers with the paper's
settings, on the CPU with one thread (where the controller runs whatever the child's device):

* ``loop_ms`` / ``batch_ms``: milliseconds per architecture for n x ``sample()`` (no grad, as in
  the child phase) against one ``sample_batch(n)``, for n = 20 and 350 (a controller update, and
  the child steps of an epoch);
* ``update_loop_ms`` / ``update_batch_ms``: one controller update of ``ctrl_steps_aggregate``
  samples with gradients, sample + one backward of the REINFORCE loss, milliseconds per update.

The controller only reads the space's decisions, so the spaces are built at a tiny width (the
decisions are those of the paper's widths). stdout: JSON lines; the last one holds every figure.

    python3 bench/controller_sampling.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import env_facts, median, print_json, stdout_to_stderr  # noqa: E402


def best_ms(fn, repeats: int) -> float:
    """Median wall time of ``fn`` in milliseconds over ``repeats`` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--repeats', type=int, default=5, help='timed runs per figure (median)')
    p.add_argument('--sizes', type=int, nargs='+', default=[20, 350], help='batch sizes n')
    args = p.parse_args()

    import torch
    with stdout_to_stderr():
        from nni_enas import MacroSpace, MicroSpace, ReinforceController
        from nni_enas.paper import SEARCH, controller_kwargs
    torch.set_num_threads(1)
    torch.manual_seed(0)
    spaces = {'macro': lambda: MacroSpace(num_layers=SEARCH['macro']['layers'], channels=4),
              'micro': lambda: MicroSpace(num_layers=SEARCH['micro']['layers'], channels=4,
                                          num_nodes=SEARCH['micro']['nodes'])}
    results = {'env': env_facts('cpu')}
    for name, make in spaces.items():
        settings = SEARCH[name]
        with stdout_to_stderr():
            ctrl = ReinforceController(make(), **controller_kwargs(settings))
        row = {'decisions': len(ctrl.decisions)}
        for n in args.sizes:
            def loop(n=n):
                with torch.no_grad():
                    for _ in range(n):
                        ctrl.sample()

            def batch(n=n):
                with torch.no_grad():
                    ctrl.sample_batch(n)

            loop_ms = best_ms(loop, args.repeats) / n
            batch_ms = best_ms(batch, args.repeats) / n
            row[f'n{n}'] = {'loop_ms': round(loop_ms, 4), 'batch_ms': round(batch_ms, 4),
                            'speedup': round(loop_ms / batch_ms, 2)}
            print_json({'space': name, 'n': n, **row[f'n{n}']})
        agg = settings['ctrl_steps_aggregate']
        advantage = torch.randn(agg)

        def update_loop():
            ctrl.zero_grad()
            loss = 0.0
            for i in range(agg):
                _, log_prob, _, penalty = ctrl.sample()
                loss = loss + (-log_prob * advantage[i] + 0.8 * penalty) / agg
            loss.backward()

        def update_batch():
            ctrl.zero_grad()
            _, log_prob, _, penalty = ctrl.sample_batch(agg)
            (-log_prob * advantage + 0.8 * penalty).mean().backward()

        row['update'] = {'samples': agg, 'update_loop_ms': round(best_ms(update_loop, args.repeats), 3),
                         'update_batch_ms': round(best_ms(update_batch, args.repeats), 3)}
        row['update']['speedup'] = round(row['update']['update_loop_ms'] / row['update']['update_batch_ms'], 2)
        print_json({'space': name, **row['update']})
        results[name] = row
    print_json(results)


if __name__ == '__main__':
    main()
