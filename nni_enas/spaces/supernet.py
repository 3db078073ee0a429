"""What NNI 3.0 lacks to path-sample our spaces: a supernet input choice that takes any subset.

NNI's ``PathSamplingInput`` refuses ``InputChoice(n_chosen=None)`` ("n_chosen is None is not
supported yet"), which the macro space's skip connections are. :class:`PathSamplingAnyInput`
is a drop-in subclass that accepts every ``n_chosen`` and returns ``None`` when the sample picks
no input, exactly as NNI's frozen ``ChosenInputs`` does, so that a layer written once runs the
same in the supernet and in ``space.freeze(sample)``. It is plugged in through NNI's own
mutation-hook mechanism (:func:`mutation_hooks`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from nni.nas.nn.pytorch import ChosenInputs, InputChoice, LayerChoice
from nni.nas.oneshot.pytorch.supermodule.sampling import PathSamplingInput

__all__ = ['PathSamplingAnyInput', 'mutation_hooks', 'chosen_indices', 'shared_to_fixed_state_dict']


class PathSamplingAnyInput(PathSamplingInput):
    """Path-sampling ``InputChoice`` for any ``n_chosen``, including ``None`` (any subset, even empty)."""

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if type(module) is InputChoice:
            if module.reduction not in ('sum', 'mean', 'concat'):
                raise ValueError(f'{name}: only sum/mean/concat input choices can be path-sampled, '
                                 f'got reduction={module.reduction!r}')
            return cls(module.n_candidates, module.n_chosen, module.reduction, module.label)

    def forward(self, input_tensors: list[torch.Tensor]) -> torch.Tensor | None:
        if self._sampled is None:
            raise RuntimeError(f'{self.label}: no architecture was sampled before the forward pass')
        if len(input_tensors) != self.n_candidates:
            raise ValueError(f'{self.label}: expected {self.n_candidates} inputs, got {len(input_tensors)}')
        chosen = self._sampled if isinstance(self._sampled, list) else [self._sampled]
        if not chosen:
            return None
        return self._reduction([input_tensors[i] for i in chosen], chosen)


def mutation_hooks() -> list:
    """The hooks that put our input choice in front of NNI's path-sampling ones."""
    return [PathSamplingAnyInput.mutate]


def chosen_indices(choice: nn.Module) -> list[int]:
    """The input indices an ``InputChoice`` takes right now: frozen, path-sampled or dry run.

    Cells use it to find their loose ends and which op copy to run.
    """
    if isinstance(choice, ChosenInputs):
        return list(choice.chosen)
    sampled = getattr(choice, '_sampled', None)
    if sampled is None:
        sampled = choice._dry_run_choice  # an un-mutated space: NNI's dry-run value
    return list(sampled) if isinstance(sampled, list) else [sampled]


def shared_to_fixed_state_dict(supernet: nn.Module, fixed: nn.Module, arch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The shared weights of ``supernet`` that ``fixed = space.freeze(arch)`` runs, keyed for ``fixed``.

    A frozen ``LayerChoice`` is replaced by its chosen candidate, so the supernet's key
    ``a.op.conv_3x3.0.weight`` becomes ``a.op.0.weight`` in the fixed network. Anything the fixed
    network does not hold (other candidates) is left out.
    """
    names: dict[str, str] = {}
    for path, module in supernet.named_modules():
        if isinstance(module, LayerChoice):
            names[path] = str(arch[module.label])
    shared = supernet.state_dict()
    result = {}
    for key in fixed.state_dict():
        parts = key.split('.')
        source, i = [], 0
        while i < len(parts):
            source.append(parts[i])
            prefix = '.'.join(source)
            if prefix in names and i + 1 < len(parts):
                source.append(names[prefix])
            i += 1
        result[key] = shared['.'.join(source)]
    return result

