"""The exported-architecture format: small readable JSON, validated against its space.

A file looks like::

    {
      "format": "nni-enas/1",
      "space": "macro",
      "space_args": {"num_layers": 12, "channels": 36, ...},
      "arch": {"layer_0/op": "conv_3x3", "layer_1/op": "sep_conv_5x5", "layer_1/skip": [0], ...},
      "provenance": {"nni": "3.0", "nni_enas": "0.1.0", "epoch": 150, "reward": 0.71, ...}
    }

``arch`` is exactly what NNI's ``space.freeze(arch)`` takes. A recurrent-cell record (space
``rnn``) may also carry ``"vocabulary"``: its ``vocab_size`` words, word id = index, so that
retraining maps words exactly as the search did. The published architectures ship as
``paper-macro``, ``paper-micro`` and ``paper-rnn`` (files in ``nni_enas/architectures/``, made
from the TF scripts' arcs in :mod:`nni_enas.paper`).

One way from a file to a network: :func:`load_architecture` reads and validates it (once),
:func:`build_network` builds the fixed network it describes, at the file's widths or others.
:data:`SPACES` is the one registry of spaces by name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch.nn as nn
from nni.mutable import Categorical, CategoricalMultiple
from nni.nas.space import model_context

from nni_enas.files import write_json_atomic
from nni_enas.spaces.macro import MacroSpace
from nni_enas.spaces.micro import MicroSpace
from nni_enas.spaces.recurrent import RecurrentSpace, fixed_parameter_count

__all__ = ['FORMAT', 'SPACES', 'ArchitectureError', 'architecture_record', 'save_architecture',
           'load_architecture', 'architecture_path', 'build_space', 'build_network', 'check_arch', 'check_record',
           'write_json_atomic', 'SHIPPED_DIR', 'SPACE_ARG_RANGES', 'RNN_ARG_RANGES', 'MAX_PARAMETERS',
           'estimate_parameters', 'count_parameters']

FORMAT = 'nni-enas/1'
SPACES = {'macro': MacroSpace, 'micro': MicroSpace, 'rnn': RecurrentSpace}
SHIPPED_DIR = Path(__file__).parent / 'architectures'
# What a file may ask for: (type, lowest, highest). Far beyond the paper's (24 layers, 5 nodes,
# 96 channels), and low enough that a typo (1e9 layers) is refused instead of eating memory.
SPACE_ARG_RANGES = {
    'num_layers': (int, 1, 100), 'num_nodes': (int, 1, 16), 'channels': (int, 2, 1024),
    'num_classes': (int, 1, 100_000), 'dropout': (float, 0.0, 0.999), 'drop_path_prob': (float, 0.0, 0.999),
}
# The recurrent cell's (the paper: 12 nodes, hidden 200 in search, 800 final, 10k words; WikiText-2
# has 33k). The parameter ceiling (MAX_PARAMETERS) refuses the sizes these allow but memory does not.
RNN_ARG_RANGES = {
    'vocab_size': (int, 1, 10_000_000), 'num_nodes': (int, 1, 64), 'hidden_size': (int, 1, 65_536),
    **{f'dropout_{k}': (float, 0.0, 0.999) for k in 'eixho'},
}
_ARG_RANGES = {'macro': SPACE_ARG_RANGES, 'micro': SPACE_ARG_RANGES, 'rnn': RNN_ARG_RANGES}
# The narrowest arguments with the same labels: what validating an architecture builds.
_NARROW_ARGS = {'macro': {'channels': 2}, 'micro': {'channels': 2}, 'rnn': {'hidden_size': 1, 'vocab_size': 1}}


class ArchitectureError(ValueError):
    """An architecture file that cannot be used; the message names every problem."""


def architecture_record(space, arch: dict[str, Any], *, vocabulary: list[str] | None = None,
                        **provenance) -> dict[str, Any]:
    """The exported record of ``arch`` in ``space`` (one of :data:`SPACES`), with the recurrent
    space's ``vocabulary`` (word id = index) when given."""
    import nni

    from . import __version__
    record = {'format': FORMAT, 'space': space.name, 'space_args': dict(space.args), 'arch': dict(arch)}
    if vocabulary is not None:
        record['vocabulary'] = list(vocabulary)
    record['provenance'] = {'nni': nni.__version__, 'nni_enas': __version__, **provenance}
    return record


def save_architecture(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Validate ``record`` and write it atomically."""
    check_record(record, where=str(path))
    write_json_atomic(path, record)


def _is_one_of(value: Any, allowed) -> bool:
    """``value in allowed`` with matching types: JSON ``true`` or ``1.0`` is not the index ``1``."""
    return any(type(value) is type(a) and value == a for a in allowed)


def check_arch(space, arch: Any) -> list[str]:
    """Every problem of ``arch`` as a sample of ``space`` (empty list: valid)."""
    if not isinstance(arch, dict):
        return ['"arch" must be an object mapping labels to choices']
    problems = []
    spec = space.simplify()
    for label, mutable in spec.items():
        if label not in arch:
            problems.append(f'missing label {label!r}')
            continue
        value = arch[label]
        if isinstance(mutable, Categorical):
            if not _is_one_of(value, mutable.values):
                problems.append(f'{label!r}: {value!r} is not one of {list(mutable.values)}')
        elif isinstance(mutable, CategoricalMultiple):
            allowed = list(mutable.values)
            if (not isinstance(value, list) or not all(_is_one_of(v, allowed) for v in value)
                    or len(set(map(str, value))) != len(value)):
                problems.append(f'{label!r}: {value!r} must be a list of distinct values from {allowed}')
            elif mutable.n_chosen is not None and len(value) != mutable.n_chosen:
                problems.append(f'{label!r}: {value!r} must choose exactly {mutable.n_chosen}')
    unknown = sorted(set(arch) - set(spec))
    if unknown:
        problems.append('unknown label' + ('s ' if len(unknown) > 1 else ' ') + ', '.join(map(repr, unknown)))
    return problems


def build_space(record: dict[str, Any], **overrides):
    """The search space of a record (all its choices), with ``overrides`` of its constructor arguments."""
    cls = SPACES[record['space']]
    return cls(**{**record.get('space_args', {}), **overrides})


def build_network(record: dict[str, Any], **space_overrides) -> nn.Module:
    """The fixed network of a record: its space's class built under NNI's ``model_context(arch)``.

    The route ``space.freeze(arch)`` takes, without building the search space (every candidate
    of every choice) first: at the paper's final macro widths that would be 95M parameters to
    keep 31M. ``record`` must be valid at these overrides (:func:`load_architecture` with the
    same overrides checks it).
    """
    cls = SPACES[record['space']]
    with model_context(record['arch']):
        return cls(**{**record.get('space_args', {}), **space_overrides})


MAX_PARAMETERS = 10**9     # 4 GB of float32 weights: a typo in a file, not a network to train


def estimate_parameters(record: dict[str, Any], **space_overrides) -> int:
    """The parameters of ``build_network(record, **space_overrides)``, without building it at its width.

    A recurrent cell's count is a formula of its sizes (:func:`~nni_enas.spaces.recurrent.fixed_parameter_count`).
    Every weight of our CNNs is a product of at most two widths proportional to ``channels``
    (convolutions), one (BatchNorm, classifier) or none, so the count is a quadratic in
    ``channels``: three narrow networks (2, 4 and 6 channels) give it exactly.
    """
    if record['space'] == 'rnn':
        return fixed_parameter_count(**{**record.get('space_args', {}), **space_overrides})
    counts = [count_parameters(build_network(record, **{**space_overrides, 'channels': w})) for w in (2, 4, 6)]
    a = (counts[2] - 2 * counts[1] + counts[0]) / 8
    b = (counts[1] - counts[0] - 12 * a) / 2
    d = counts[0] - 4 * a - 2 * b
    c = {**record.get('space_args', {}), **space_overrides}.get('channels', 2)
    return round(a * c * c + b * c + d)


def count_parameters(net: nn.Module) -> int:
    """Trainable parameters (the auxiliary head included)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def _cnn_bound(args: dict[str, Any]) -> int:
    """A generous bound on a CNN's parameters (widths quadruple over the stages, macro merges grow with depth)."""
    c, layers = args.get('channels', 2), args.get('num_layers', 1)
    return 100 * layers * args.get('num_nodes', 1) * (4 * c) ** 2 + 8 * c * args.get('num_classes', 10) + 10**6


def _size_problem(record: dict[str, Any], overrides: dict[str, Any], max_parameters: int) -> str | None:
    # CNN files at sane sizes skip the estimate's three narrow builds; a recurrent cell's is a formula.
    if record['space'] != 'rnn' and _cnn_bound({**record.get('space_args', {}), **overrides}) <= max_parameters:
        return None
    estimate = estimate_parameters(record, **overrides)
    if estimate > max_parameters:
        return f'the network would have {estimate:,} parameters, more than {max_parameters:,}'
    return None


def _range_problems(space: str, args: dict[str, Any]) -> list[str]:
    problems = []
    for key, (kind, low, high) in _ARG_RANGES[space].items():
        if key not in args:
            continue
        value = args[key]
        ok_type = isinstance(value, (int, float)) if kind is float else isinstance(value, int)
        if isinstance(value, bool) or not ok_type or not low <= value <= high:
            what = 'an integer' if kind is int else 'a number'
            problems.append(f'{key} must be {what} from {low} to {high}, got {value!r}')
    return problems


def _vocabulary_problems(record: dict[str, Any], args: dict[str, Any]) -> list[str]:
    """A record's vocabulary: a list of distinct words, one per word id (``vocab_size`` of them)."""
    words = record['vocabulary']
    if record['space'] != 'rnn':
        return [f'"vocabulary" belongs to the rnn space, not to {record["space"]!r}']
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        return ['"vocabulary" must be a list of words (strings)']
    problems = []
    size = args.get('vocab_size')
    if size is None:      # our exports always write it; a default would be a guess
        problems.append('"vocabulary" needs "vocab_size" in "space_args"')
    elif len(words) != size:
        problems.append(f'"vocabulary" has {len(words)} words but vocab_size is {size}')
    seen: set[str] = set()
    repeated = [w for w in words if w in seen or seen.add(w)]
    if repeated:
        problems.append(f'"vocabulary" repeats {len(repeated)} word(s), e.g. {repeated[0]!r}')
    return problems


def check_record(record: Any, where: str = 'architecture', *, max_parameters: int | None = None,
                 **overrides) -> None:
    """Raise :class:`ArchitectureError` naming every problem of ``record`` (at ``overrides`` of its space
    arguments); with ``max_parameters``, also a network larger than that."""
    if not isinstance(record, dict):
        raise ArchitectureError(f'{where}: not a JSON object')
    problems = []
    if record.get('format', FORMAT) != FORMAT:
        problems.append(f'format {record.get("format")!r} is not {FORMAT!r}')
    if record.get('space') not in SPACES:
        problems.append(f'unknown space {record.get("space")!r} (expected one of {sorted(SPACES)})')
    args = record.get('space_args', {})
    if not isinstance(args, dict):
        problems.append('"space_args" must be an object')
    if 'arch' not in record:
        problems.append('no "arch" object')
    if not problems:
        # the file's own values too: a file asking for 0 channels is broken even where a flag overrides it
        name = record['space']
        problems += [f'bad space_args: {p}' for p in dict.fromkeys(
            _range_problems(name, args) + _range_problems(name, {**args, **overrides}))]
    if not problems:
        try:
            # The labels do not depend on the width: validate on a narrow copy of the space (fast).
            space = build_space(record, **{**overrides, **_NARROW_ARGS[record['space']]})
        except (TypeError, ValueError) as e:
            problems.append(f'bad space_args: {e}')
        else:
            problems += check_arch(space, record['arch'])
        if 'vocabulary' in record:
            problems += _vocabulary_problems(record, {**args, **overrides})
    if not problems and max_parameters is not None:
        problems += filter(None, [_size_problem(record, overrides, max_parameters)])
    if problems:
        raise ArchitectureError(f'{where}: ' + '; '.join(problems))


def architecture_path(path_or_name: str | os.PathLike) -> Path:
    """The file of an architecture: the path itself, or a shipped one by name (``paper-micro``)."""
    path = Path(path_or_name)
    if not path.exists() and (SHIPPED_DIR / f'{path_or_name}.json').exists():
        path = SHIPPED_DIR / f'{path_or_name}.json'
    return path


def load_architecture(path_or_name: str | os.PathLike, *, validate: bool = True, **overrides) -> dict[str, Any]:
    """Read and validate an exported file, or a shipped one by name (``paper-macro``, ``paper-micro``).

    ``overrides`` of the space arguments are applied for validation (e.g. another depth).
    ``validate=False`` only reads the JSON (to pick overrides by the space it names, then
    :func:`check_record` once with them).
    """
    path = architecture_path(path_or_name)
    try:
        with open(path) as f:
            record = json.load(f)
    except FileNotFoundError:
        shipped = ', '.join(sorted(p.stem for p in SHIPPED_DIR.glob('*.json')))
        raise ArchitectureError(f'{path}: no such file (shipped architectures: {shipped})') from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArchitectureError(f'{path}: cannot read it ({e})') from None
    except json.JSONDecodeError as e:
        raise ArchitectureError(f'{path}: not valid JSON ({e})') from None
    if validate or not isinstance(record, dict) or record.get('space') not in SPACES:
        check_record(record, where=str(path), **overrides)
    return record
