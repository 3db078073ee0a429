"""Thin bridge between the two commands and an NNI experiment.

``search.py`` and ``retrain.py`` call these helpers unconditionally.  When the script is launched
by ``nnictl create --config experiment.yml`` (i.e. as an NNI *trial*) they

* pull the tuner's parameters and apply them on top of the parsed CLI flags
  (:func:`apply_tuner_parameters`),
* report one intermediate metric per epoch and one final metric, which the NNI
  web UI charts live (:func:`report_epoch`, :func:`report_final`),
* tell where the trial's own output folder is, so exported architectures land
  next to the trial's logs (:func:`trial_output_dir`).

Outside a trial every helper is a silent no-op: ``nni`` is not even imported
(importing it costs ~2 s and installs NNI's logging handlers), nothing is
printed and the arguments are left untouched.

Examples
--------
>>> args = parser.parse_args()
>>> apply_tuner_parameters(args, parser)        # {} outside NNI
>>> for epoch in range(args.epochs):
...     report_epoch({'mean_reward': r, 'loss': l}, default_key='mean_reward')
>>> report_final({'mean_reward': r, 'export': path}, default_key='mean_reward')
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
from typing import Any

__all__ = [
    'in_trial',
    'apply_tuner_parameters',
    'report_epoch',
    'report_final',
    'trial_output_dir',
]

def in_trial() -> bool:
    """Tell whether this process runs as a trial of an NNI experiment.

    Mirrors how NNI 3.0 itself picks its trial command channel
    (``nni.runtime.trial_command_channel.set_default_trial_command_channel``):
    a trial has ``NNI_TRIAL_COMMAND_CHANNEL`` set (local/remote training
    services of NNI 3.0) or an ``NNI_PLATFORM`` other than ``unittest``
    (legacy and Kubernetes training services).  Without them NNI falls back to
    its "standalone" mode, which is what we treat as *not* in a trial.

    Returns
    -------
    bool
        ``True`` only inside an NNI trial.
    """
    if os.environ.get('NNI_TRIAL_COMMAND_CHANNEL'):
        return True
    platform = os.environ.get('NNI_PLATFORM')
    return bool(platform) and platform != 'unittest'


def trial_output_dir() -> str | None:
    """Return the trial's own output folder (``NNI_OUTPUT_DIR``).

    NNI keeps the trial's ``trial.log``/``trial.stdout``/``trial.stderr`` there
    and shows the path in the web UI's trial detail, so exports written there
    are easy to find.

    Returns
    -------
    str or None
        The folder inside a trial, ``None`` outside one.
    """
    if not in_trial():
        return None
    return os.environ.get('NNI_OUTPUT_DIR') or None


def _as_tokens(flag: str, value: Any) -> list[str]:
    """The command-line tokens that set ``flag`` to a tuner's ``value``."""
    if isinstance(value, str) and value.lower() in ('true', 'false'):
        value = value.lower() == 'true'
    if isinstance(value, bool):
        return [flag] if value else ['--no-' + flag[2:]]
    if isinstance(value, float) and value.is_integer():
        value = int(value)      # e.g. quniform gives 32.0 for an int option
    values = value if isinstance(value, (list, tuple)) else [value]
    if len(values) == 1:
        return [f'{flag}={values[0]}']      # '=' so that a negative number is not taken for a flag
    return [flag, *map(str, values)]


def apply_tuner_parameters(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """Override parsed CLI options with the parameters NNI's tuner chose.

    Must be called at most once per process (it calls
    ``nni.get_next_parameter()``).  Each key of the tuner's parameter dict must
    name an option of ``parser``, either by its dest (``batch_size``) or its
    flag spelling (``batch-size``).  Each value is parsed by ``parser`` as if
    typed on the command line (its ``type`` and ``choices`` apply); boolean
    flags take ``true``/``false``.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments; updated in place.
    parser : argparse.ArgumentParser
        The parser that produced ``args``; used for option lookup and errors.

    Returns
    -------
    dict
        ``{dest: converted value}`` of what was applied; ``{}`` outside a trial
        (then ``args`` is not touched and ``nni`` is not imported).

    Raises
    ------
    SystemExit
        Through ``parser.error`` (exit status 2, one ``error:`` line on
        stderr) for unknown keys, bad values or conflicting spellings.
    """
    if not in_trial():
        return {}
    import nni
    params = nni.get_next_parameter() or {}
    by_dest: dict[str, Any] = {}
    unknown = []
    for key, value in params.items():
        dest = str(key).replace('-', '_')
        if dest not in vars(args) or dest == 'help':
            unknown.append(str(key))
        elif dest in by_dest and by_dest[dest] != value:
            parser.error(f'tuner parameter {dest!r} given twice with different values')
        else:
            by_dest[dest] = value
    if unknown:
        valid = ', '.join(sorted(vars(args)))
        parser.error(f'unknown tuner parameter(s) {", ".join(map(repr, sorted(unknown)))} (valid: {valid})')
    # argparse converts and checks each value exactly as if it had been typed (errors: exit 2).
    applied: dict[str, Any] = {}
    for dest, value in by_dest.items():
        flag = '--' + dest.replace('_', '-')
        parsed, extra = parser.parse_known_args(_as_tokens(flag, value), namespace=argparse.Namespace(**vars(args)))
        if extra:
            if value in (False, 'false', 'False') and getattr(args, dest) in (False, None):
                applied[dest] = False      # a plain --flag has no --no-flag: false is its default
                continue
            parser.error(f'tuner parameter {dest!r}: {value!r} is not a value of {flag}')
        applied[dest] = getattr(parsed, dest)
    for dest, value in applied.items():
        setattr(args, dest, value)
    return applied


def _number(value: Any) -> float | None:
    """Plain Python number from int/float/numpy scalar/0-d tensor, else ``None`` (bools excluded)."""
    if isinstance(value, bool):
        return None
    if not isinstance(value, numbers.Real) and hasattr(value, 'item'):
        try:
            value = value.item()
        except (TypeError, ValueError, RuntimeError):
            return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _payload(metrics: dict, default_key: str, numeric_only: bool) -> dict:
    if default_key not in metrics:
        raise KeyError(f'default metric {default_key!r} missing from reported metrics {sorted(metrics)}')
    default = _number(metrics[default_key])
    if default is None:
        raise TypeError(f'default metric {default_key!r} must be a number, got {metrics[default_key]!r}')
    out: dict = {'default': float(default)}
    for key, value in metrics.items():
        if key in (default_key, 'default'):
            continue
        num = _number(value)
        if num is not None:
            if math.isfinite(num):  # NaN/inf would break the web UI's JSON parsing
                out[str(key)] = num
        elif not numeric_only:
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            out[str(key)] = value if isinstance(value, (str, bool, type(None))) else str(value)
    return out


def report_epoch(metrics: dict, default_key: str) -> None:
    """Report one intermediate (per-epoch) result to NNI.

    Sends ``{'default': metrics[default_key], **other numeric metrics}`` via
    ``nni.report_intermediate_result``; non-numeric and non-finite extras are
    skipped.  Call it once per epoch, after :func:`apply_tuner_parameters`.

    Parameters
    ----------
    metrics : dict
        Metric name to value (Python/numpy numbers or 0-d tensors).
    default_key : str
        Name of the metric NNI should plot as the trial's default metric.

    Raises
    ------
    KeyError, TypeError
        Inside a trial, if ``default_key`` is missing or not numeric.
    """
    if not in_trial():
        return
    import nni
    nni.report_intermediate_result(_payload(metrics, default_key, numeric_only=True))


def report_final(metrics: dict, default_key: str) -> None:
    """Report the trial's final result to NNI.

    Same shape as :func:`report_epoch`, but strings, bools, ``None`` and paths
    are kept too (e.g. ``'export': '/path/to/exported.json'``); NNI only needs
    ``default`` to be a number and shows the other keys in the web UI.

    Parameters
    ----------
    metrics : dict
        Metric name to value.
    default_key : str
        Name of the metric used as NNI's default (final) metric.

    Raises
    ------
    KeyError, TypeError
        Inside a trial, if ``default_key`` is missing or not numeric.
    """
    if not in_trial():
        return
    import nni
    nni.report_final_result(_payload(metrics, default_key, numeric_only=False))
