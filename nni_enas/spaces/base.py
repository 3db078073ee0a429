"""The base of our spaces: NNI ``ModelSpace`` whose ``freeze`` rebuilds the network."""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn as nn
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.space import model_context

__all__ = ['EnasSpace']


class EnasSpace(ModelSpace):
    """An NNI model space whose fixed networks are built, not copied.

    NNI's default ``freeze`` deep-copies the space and swaps each choice for its pick, which keeps
    every module the space built for other picks. Our layers size some modules by the picks (a
    final macro layer's merge conv, a micro cell's loose ends, a reduction node's strided op, a
    recurrent node's one matrix), so ``freeze`` constructs the class again under NNI's
    ``model_context`` (the route NNI documents): the fixed network holds exactly what the
    architecture uses, with fresh weights.

    ``anchor_groups`` declares, for the controller, which groups of decisions follow the ENAS
    anchor structure (label ``group/unit/name``; each unit's input and skip candidates are the
    group's ``g`` leading inputs followed by its earlier units): a dict ``group -> g``. Declared
    groups get attention over anchors; a space that declares none gets plain heads (see
    :mod:`nni_enas.search.controller`). ``index_choices`` names (the label's last part) the
    categorical choices whose values are such candidate indices (the recurrent cell's ``prev``):
    the controller takes them as input decisions, not ops.
    """

    name: str = ''
    anchor_groups: ClassVar[dict[str, int]] = {}
    index_choices: ClassVar[tuple[str, ...]] = ()

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        self.validate(sample)
        with model_context(sample):
            return self.__class__(**self.args)
