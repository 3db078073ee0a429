"""Checks of the library's numeric arguments, made when an object is built (not an epoch later).

A bad value is a ``ValueError`` (a value out of range, NaN, inf) or a ``TypeError`` (not a
number at all) whose message names the argument, its value and what is allowed, in NNI's words:
``ctrl_steps_aggregate must be an integer >= 1, got 0``. The classes that take these arguments
(:class:`~nni_enas.search.controller.ReinforceController`, :class:`~nni_enas.search.enas.EnasModule`,
:class:`~nni_enas.search.enas.Enas`, :class:`~nni_enas.search.trainer.EnasTrainer`,
:class:`~nni_enas.training.classification.ChildTraining`) each call :func:`check_number` on theirs.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ['check_number', 'check_numbers']


def _interval(low, high, low_open: bool, high_open: bool) -> str:
    if high is None:
        return f'> {low}' if low_open else f'>= {low}'
    return f'in {"(" if low_open else "["}{low}, {high}{")" if high_open else "]"}'


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False,
                 optional: bool = False, why: str = '') -> None:
    """Raise unless ``value`` is a finite number in the interval (``None`` too when ``optional``).

    ``low``/``high`` bound it (``*_open``: the bound itself is excluded); ``integer`` wants an
    ``int`` (bools are refused: ``True`` is not a count); ``why`` is added to the message.
    """
    if value is None and optional:
        return
    kind = 'an integer' if integer else 'a number'
    wanted = kind if low is None else f'{kind} {_interval(low, high, low_open, high_open)}'
    if optional:
        wanted += ' or None'
    tail = f' ({why})' if why else ''
    ok_type = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, ok_type):
        raise TypeError(f'{name} must be {wanted}, got {value!r} ({type(value).__name__}){tail}')
    finite = math.isfinite(value)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not finite or below or above:
        raise ValueError(f'{name} must be {wanted}, got {value!r}{tail}')


def check_numbers(name: str, values: Any, *, optional: bool = False) -> None:
    """Raise unless ``values`` is a sequence of finite numbers (``None`` too when ``optional``)."""
    if values is None and optional:
        return
    try:
        items = None if isinstance(values, (str, bytes, dict)) else [float(v) if hasattr(v, 'item') else v
                                                                      for v in values]
    except TypeError:
        items = None
    if items is None:
        raise TypeError(f'{name} must be a list of numbers{" or None" if optional else ""}, got {values!r}')
    for i, value in enumerate(items):
        check_number(f'{name}[{i}]', value)
