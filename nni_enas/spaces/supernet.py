"""What NNI 3.0 lacks to path-sample our spaces: an input choice that takes any subset, and the recurrent node.

NNI's ``PathSamplingInput`` refuses ``InputChoice(n_chosen=None)`` ("n_chosen is None is not
supported yet"), which the macro space's skip connections are. :class:`PathSamplingAnyInput`
is a drop-in subclass that accepts every ``n_chosen`` and returns ``None`` when the sample picks
no input, exactly as NNI's frozen ``ChosenInputs`` does, so that a layer written once runs the
same in the supernet and in ``space.freeze(sample)``. The recurrent cell's node picks one shared
matrix by two choices at once, which no NNI module does: :class:`PathSamplingNode` is the
path-sampling twin of :class:`~nni_enas.spaces.recurrent.NodeChoice`, holding the same mutables
and the same shared matrices. Both are plugged in through NNI's own mutation-hook mechanism
(:func:`mutation_hooks`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from nni.nas.nn.pytorch import ChosenInputs, InputChoice, LayerChoice
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from nni.nas.oneshot.pytorch.supermodule.sampling import PathSamplingInput

from nni_enas.spaces.recurrent import NodeChoice, weight_key

__all__ = ['PathSamplingAnyInput', 'PathSamplingNode', 'mutation_hooks', 'chosen_indices',
           'shared_to_fixed_state_dict']


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


class PathSamplingNode(BaseSuperNetModule):
    """A recurrent node in the supernet: the matrix of the sampled (previous node, activation).

    It holds the original :class:`~nni_enas.spaces.recurrent.NodeChoice`'s mutables (same labels)
    and its ``weights`` (the same parameters, not copies).
    """

    def __init__(self, node: NodeChoice):
        super().__init__()
        self.index, self.hidden_size = node.index, node.hidden_size
        self.prev_choice, self.act_choice = node.prev_choice, node.act_choice
        for mutable in (self.prev_choice, self.act_choice):
            if mutable is not None:
                self.add_mutable(mutable)
        self.weights = node.weights
        self._sampled: tuple[int | None, str] | None = None

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if type(module) is NodeChoice:
            return cls(module)

    def _choices(self):
        return [m for m in (self.prev_choice, self.act_choice) if m is not None]

    def resample(self, memo: dict[str, Any]) -> dict[str, Any]:
        """Take the node's labels from ``memo`` (an architecture); a label missing there is drawn at random."""
        picked = {m.label: memo[m.label] if m.label in memo else m.random() for m in self._choices()}
        prev = picked[self.prev_choice.label] if self.prev_choice is not None else None
        self._sampled = (prev, picked[self.act_choice.label])
        return picked

    def export(self, memo: dict[str, Any]) -> dict[str, Any]:
        return {m.label: m.random() for m in self._choices() if m.label not in memo}

    def pick(self) -> tuple[int | None, str]:
        if self._sampled is None:
            raise RuntimeError(f'node {self.index}: no architecture was sampled before the forward pass')
        return self._sampled

    def matrix(self) -> torch.Tensor:
        return self.weights[weight_key(*self.pick())]


def mutation_hooks() -> list:
    """The hooks that put our input choice and recurrent node in front of NNI's path-sampling ones."""
    return [PathSamplingAnyInput.mutate, PathSamplingNode.mutate]


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
    ``a.op.conv_3x3.0.weight`` becomes ``a.op.0.weight`` in the fixed network; a recurrent node's
    ``nodes.3.weights.2_relu`` becomes ``nodes.3.weight``. Anything the fixed network does not hold
    (other candidates) is left out.
    """
    names: dict[str, str] = {}
    nodes: dict[str, str] = {}
    for path, module in supernet.named_modules():
        if isinstance(module, LayerChoice):
            names[path] = str(arch[module.label])
        elif isinstance(module, (NodeChoice, PathSamplingNode)):
            prev = arch[module.prev_choice.label] if module.prev_choice is not None else None
            nodes[f'{path}.weight'] = f'{path}.weights.{weight_key(prev, arch[module.act_choice.label])}'
    shared = supernet.state_dict()
    result = {}
    for key in fixed.state_dict():
        if key in nodes:
            result[key] = shared[nodes[key]]
            continue
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

