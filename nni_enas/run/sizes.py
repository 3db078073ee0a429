"""Up-front size checks: what a command would build or hold, estimated before any work.

A setting whose network, search space or controller would have more than
``limits.MAX_PARAMETERS`` parameters, or whose data set or candidate pool would not fit in
this machine's memory, is refused with one line that gives the estimate (exit 2), instead of
hanging, or failing in the allocator after the run folder was made:

* :func:`check_search_sizes`: the search space, the controller, the batched sampling of
  ``--num-candidates`` / ``--ctrl-steps-aggregate`` architectures (``search.py``);
* :func:`check_data_size`: the synthetic data set (both commands);
* :func:`check_cpu_processes`: ``retrain.py --devices N --device cpu`` (one process per core).

Estimates are cheap: a free upper bound first, the exact count (three narrow builds, see
:func:`nni_enas.architecture.estimate_space_parameters`) only when the bound is over the ceiling.
Out of memory at run time is :mod:`nni_enas.run.failures`' business.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from nni_enas.architecture import SPACES, count_parameters, estimate_space_parameters, parameter_bound
from nni_enas.run.cli import fail
from nni_enas.search.controller import ReinforceController
from nni_enas.limits import MAX_PARAMETERS

__all__ = ['machine_memory', 'gigabytes', 'parameters', 'image_set_bytes', 'sampling_bytes', 'check_search_sizes',
           'check_data_size', 'check_cpu_processes']

IMAGE_BYTES = 3 * 32 * 32 + 8      # a uint8 32x32 RGB image and its int64 label


def machine_memory(device: torch.device | None = None) -> int:
    """Bytes of memory this process may use: the machine's (or its cgroup's limit), and the GPU's on CUDA."""
    total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    try:
        total = min(total, int(Path('/sys/fs/cgroup/memory.max').read_text()))
    except (OSError, ValueError):       # no cgroup v2 limit ('max', or not there)
        pass
    if device is not None and device.type == 'cuda':
        total = min(total, torch.cuda.get_device_properties(device.index or 0).total_memory)
    return total


def _short(x: float) -> str:
    return f'{x:.1e}'.replace('e+', 'e')


def gigabytes(n: float) -> str:
    """``'3.1 GB'``, ``'3,080 GB'``; ``'2.3e17 GB'`` for sizes only a typo asks for."""
    gb = n / 1e9
    return f'{gb:.1f} GB' if gb < 10 else f'{gb:,.0f} GB' if gb < 1e6 else f'{_short(gb)} GB'


def parameters(n: float) -> str:
    """``'3,512,667,136'``; ``'1.0e19'`` for counts only a typo asks for."""
    return f'{round(n):,}' if n < 1e12 else _short(n)


def image_set_bytes(n: int, *, with_test_set: bool = False) -> int:
    """Memory of ``n`` synthetic images (and the ``n // 5`` test images of a final split)."""
    return IMAGE_BYTES * (n + (max(1, n // 5) if with_test_set else 0))


def _decisions(space: str, layers: int, nodes: int) -> tuple[int, int]:
    """(decisions, units per group) of a space: macro op + skip per layer; micro 4 per node and cell type."""
    return (2 * layers, layers) if space == 'macro' else (8 * nodes, nodes)


def sampling_bytes(space: str, layers: int, nodes: int, lstm_size: int, n: int) -> int:
    """About the memory of one batched controller walk over ``n`` architectures, with gradients.

    Measured on the dev CPU (peak RSS of ``sample_batch(n)`` + backward): per architecture and
    decision, about ``4 * lstm_size * (12 + units / 2)`` bytes of saved activations (the
    attention over a group's anchors grows with its units) plus the architecture dict itself.
    """
    decisions, units = _decisions(space, layers, nodes)
    return n * decisions * (4 * lstm_size * (16 + units // 2) + 200)


def _controller_parameters(space: str, space_args: dict[str, Any], controller_kwargs: dict[str, Any]) -> int:
    """The controller's parameters at ``controller_kwargs['lstm_size']``: a quadratic in it, fitted on
    three tiny controllers of a narrow copy of the space."""
    narrow = SPACES[space](**{**space_args, 'channels': 2})
    counts = [count_parameters(ReinforceController(narrow, **{**controller_kwargs, 'lstm_size': h}))
              for h in (1, 2, 3)]
    a = (counts[2] - 2 * counts[1] + counts[0]) / 2
    b = counts[1] - counts[0] - 3 * a
    h = controller_kwargs['lstm_size']
    return round(a * h * h + b * h + counts[0] - a - b)


def check_search_sizes(space: str, space_args: dict[str, Any], controller_kwargs: dict[str, Any], *,
                       num_candidates: int, ctrl_steps_aggregate: int) -> None:
    """Fail (exit 2) if the search space, the controller or its batched sampling would not fit."""
    layers, nodes = space_args['num_layers'], space_args.get('num_nodes', 1)
    flags = f'--layers {layers} --channels {space_args["channels"]}' + (f' --nodes {nodes}' if space == 'micro' else '')
    if parameter_bound(space_args) > MAX_PARAMETERS:
        params = estimate_space_parameters(space, **space_args)
        if params > MAX_PARAMETERS:
            fail(f'{flags}: the {space} search space would have {parameters(params)} parameters, more than '
                 f'{MAX_PARAMETERS:,}')
    h = controller_kwargs['lstm_size']
    decisions, units = _decisions(space, layers, nodes)
    if 11 * h * h + 4 * h * decisions * (units + 2) + 10**4 > MAX_PARAMETERS:
        params = _controller_parameters(space, space_args, controller_kwargs)
        if params > MAX_PARAMETERS:
            fail(f'--lstm-size {h}: the controller would have {parameters(params)} parameters, more than '
                 f'{MAX_PARAMETERS:,}')
    flag, n = max(('--num-candidates', num_candidates), ('--ctrl-steps-aggregate', ctrl_steps_aggregate),
                  key=lambda item: item[1])
    need, have = sampling_bytes(space, layers, nodes, h, n), machine_memory()
    if need > have:
        fail(f'{flag} {n}: sampling that many architectures in one batch (--lstm-size {h}) would take about '
             f'{gigabytes(need)} of memory; this machine has {gigabytes(have)}')


def check_data_size(dataset: str, synthetic_size: int, device: torch.device, *, with_test_set: bool) -> None:
    """Fail (exit 2) if ``--dataset synthetic``'s images would not fit in memory (on CUDA: also the GPU's)."""
    if dataset != 'synthetic':
        return
    need, have = image_set_bytes(synthetic_size, with_test_set=with_test_set), machine_memory(device)
    if need > have:
        fail(f'--synthetic-size {synthetic_size}: the synthetic images would take {gigabytes(need)} of memory; '
             f'this machine has {gigabytes(have)}')


def check_cpu_processes(devices: int, device: torch.device) -> None:
    """Fail (exit 2) on more data-parallel CPU processes than CPU cores (each process needs one)."""
    cores = os.cpu_count() or 1
    if device.type == 'cpu' and devices > max(cores, 2):
        fail(f'--devices {devices}: more CPU processes than the {cores} CPU cores here (with --device cpu each '
             f'data-parallel process needs a core)')
