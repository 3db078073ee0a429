"""ENAS micro search space (spec B): one normal and one reduction cell, repeated.

Each cell has two inputs (the outputs of the two previous cells) and ``num_nodes`` nodes; node n
picks two inputs among the cell inputs and the earlier nodes and one op for each, and sums the
two results. Labels are shared by every cell of a type: ``normal/node_2/input_a`` (a one-element
list ``[j]``), ``normal/node_2/op_a`` (one of :data:`~nni_enas.spaces.ops.MICRO_OPS`), likewise ``_b``
and ``reduce/...``. Nodes are numbered from 2 because 0 and 1 are the cell inputs.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from nni.mutable import label_scope
from nni.nas.nn.pytorch import ChosenInputs, InputChoice, LayerChoice

from nni_enas.spaces.base import EnasSpace
from nni_enas.spaces.ops import MICRO_OPS, FactorizedReduce, ReLUConvBN, build_op, init_weights
from nni_enas.spaces.supernet import chosen_indices

__all__ = ['MicroSpace']


def reduction_cells(num_layers: int) -> tuple[int, int]:
    """Indices of the two reduction cells among ``num_layers + 2`` cells: p and 2p + 1, p = L//3 (TF)."""
    p = num_layers // 3
    return p, 2 * p + 1


def drop_path(x: torch.Tensor, drop_prob: torch.Tensor | float) -> torch.Tensor:
    """Zero whole examples with probability ``drop_prob`` and rescale the rest (spec B.4).

    ``drop_prob`` is a 0-dim tensor on ``x``'s device (a cell's ``drop_prob`` buffer) or a float.
    A tensor keeps the per-step schedule inside a CUDA graph or a compiled network: both read
    its current value instead of freezing the value they saw first.
    """
    keep = 1.0 - drop_prob
    # rand < keep rather than bernoulli_(keep): the probability stays data (a tensor or a
    # symbolic float under torch.compile), never a constant baked into the kernel.
    mask = (torch.rand(x.shape[0], 1, 1, 1, device=x.device) < keep).to(x.dtype)
    return x * (mask / keep).to(x.dtype)


class Node(nn.Module):
    """Node n of a cell: ``op_a(input_a) + op_b(input_b)``.

    In a reduction cell the ops applied to the cell inputs (0 and 1) are strided and the ops on
    earlier nodes are not, so each slot holds a strided and an unstrided copy of its op choice
    (same label). A frozen node builds only the copy its chosen input needs.
    """

    def __init__(self, index: int, channels: int, reduction: bool):
        super().__init__()
        self.reduction = reduction
        with label_scope(f'node_{index}'):
            self.input_a = InputChoice(index, n_chosen=1, label='input_a')
            self.input_b = InputChoice(index, n_chosen=1, label='input_b')
            for slot in 'ab':
                choice = getattr(self, f'input_{slot}')
                candidates = chosen_indices(choice) if isinstance(choice, ChosenInputs) else range(index)
                for strided in sorted({self._strided(j) for j in candidates}):
                    stride = 2 if strided else 1
                    self.add_module(self._op_name(slot, strided), LayerChoice(
                        {name: build_op(name, channels, channels, space='micro', stride=stride) for name in MICRO_OPS},
                        label=f'op_{slot}'))

    def _strided(self, input_index: int) -> bool:
        return self.reduction and input_index < 2

    @staticmethod
    def _op_name(slot: str, strided: bool) -> str:
        return f'op_{slot}_strided' if strided else f'op_{slot}'

    def inputs_used(self) -> list[int]:
        return chosen_indices(self.input_a) + chosen_indices(self.input_b)

    def forward(self, states: list[torch.Tensor], drop_prob: torch.Tensor | None = None) -> torch.Tensor:
        """``drop_prob``: the cell's drop-path probability (a tensor), ``None`` when it has no drop path."""
        out = None
        for slot in 'ab':
            choice = getattr(self, f'input_{slot}')
            op = getattr(self, self._op_name(slot, self._strided(chosen_indices(choice)[0])))
            y = op(choice(states))
            # Whether drop path runs is structural (never the probability's value), so a CUDA
            # graph captured at probability 0 still drops paths later in the schedule.
            if drop_prob is not None and self.training and not isinstance(op, (nn.Identity, FactorizedReduce)):
                y = drop_path(y, drop_prob)
            out = y if out is None else out + y
        return out


class LooseEndMerge(nn.Module):
    """Search-time cell output: ReLU, concat of the loose ends, 1x1 conv back to C, BN (spec B.1).

    The 1x1 conv keeps one weight block per state of the cell and uses the blocks of the loose
    ends, so the supernet and a frozen cell compute the same thing with the same weights.
    """

    def __init__(self, channels: int, num_states: int):
        super().__init__()
        self.channels = channels
        self.weight = nn.Parameter(torch.empty(channels, num_states * channels, 1, 1))
        nn.init.kaiming_normal_(self.weight, mode='fan_in', nonlinearity='relu')
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, states: list[torch.Tensor], loose: list[int]) -> torch.Tensor:
        x = torch.relu(torch.cat([states[j] for j in loose], dim=1))
        c = self.channels
        w = torch.cat([self.weight[:, j * c:(j + 1) * c] for j in loose], dim=1)
        return self.bn(nn.functional.conv2d(x, w))


class Cell(nn.Module):
    """A normal or reduction cell (spec B.1-B.3)."""

    def __init__(self, c_prev_prev: int, c_prev: int, channels: int, *, reduction: bool,
                 reduce_input0: bool, num_nodes: int, final: bool):
        super().__init__()
        self.reduction = reduction
        self.final = final
        # The drop-path probability: a device value that set_drop_path_progress updates in place
        # (CUDA graphs read it at every replay); not saved in checkpoints. Off unless the network
        # sets uses_drop_path.
        self.register_buffer('drop_prob', torch.zeros(()), persistent=False)
        self.uses_drop_path = False
        # Calibration: input 0 is at twice the resolution after a reduction cell (spec B.3).
        if reduce_input0:
            self.pre0 = FactorizedReduce(c_prev_prev, channels, relu=True)
        else:
            self.pre0 = ReLUConvBN(c_prev_prev, channels) if c_prev_prev != channels else nn.Identity()
        # Final cells always recalibrate input 1 (TF's layer_base); its width is that of the loose ends.
        self.pre1 = ReLUConvBN(c_prev, channels) if (c_prev != channels or final) else nn.Identity()
        with label_scope('reduce' if reduction else 'normal'):
            self.nodes = nn.ModuleList(Node(n, channels, reduction) for n in range(2, num_nodes + 2))
        self.loose = self._loose_ends()  # what a fixed cell outputs; the supernet recomputes it per sample
        # Unused cell inputs of a reduction cell are still at the larger resolution.
        self.loose_reduce = nn.ModuleDict({
            str(j): FactorizedReduce(channels, channels, relu=True)
            for j in (0, 1) if reduction and (j in self.loose or not final)
        })
        if final:
            self.out_channels = channels * len(self.loose)
        else:
            self.merge = LooseEndMerge(channels, num_nodes + 2)
            self.out_channels = channels

    def _loose_ends(self) -> list[int]:
        used = {j for node in self.nodes for j in node.inputs_used()}
        return [j for j in range(len(self.nodes) + 2) if j not in used]

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for node in self.nodes:
            states.append(node(states, self.drop_prob if self.uses_drop_path else None))
        loose = self._loose_ends()
        if self.final and loose != self.loose:
            raise RuntimeError('a final-layout MicroSpace is a fixed network: build it with freeze(), '
                               'search with final=False')
        for j in loose:
            if j < 2 and self.reduction:
                states[j] = self.loose_reduce[str(j)](states[j])
        if self.final:
            return torch.cat([states[j] for j in loose], dim=1)
        return self.merge(states, loose)


class AuxiliaryHead(nn.Module):
    """Auxiliary classifier on the 8x8 features (spec B.4): its loss is added with weight 0.4."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(), nn.AvgPool2d(5, stride=3),
            nn.Conv2d(channels, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(),
        )
        self.classifier = nn.Linear(768, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A training batch of one image leaves the last BatchNorm (on 1x1 maps) one value per
        # channel, which PyTorch refuses ("Expected more than 1 value per channel"). TF normalises
        # it to the BN's bias (x - mean = 0) with no gradient to the input. Two copies of the image
        # give exactly that (zero variance, the same output and gradients), and unlike skipping the
        # head every parameter still gets a gradient (data parallelism needs that). The head's running
        # statistics are never used: it only runs in training mode.
        single = self.training and x.shape[0] == 1
        if single:
            x = x.expand(2, *x.shape[1:])
        out = self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))
        return out[:1] if single else out


class MicroSpace(EnasSpace):
    """The ENAS micro (cell) space as an NNI 3.0 model space.

    Parameters
    ----------
    num_layers
        Number of normal cells L, as in the TF code (6 in search = 2 per stage, 15 in the final
        network = 5 per stage). There are L + 2 cells; cells L//3 and 2*(L//3) + 1 are reduction
        cells, which double the width and halve the resolution.
    channels
        Width C of the first stage (20 in search, 36 in the final network); the stem has 3C.
    num_nodes
        Computational nodes per cell (5).
    num_classes
        Classifier outputs.
    dropout
        Dropout before the classifier (0.1 in search, 0.2 in the final network).
    final
        ``False``: search layout (cell output = ReLU, concat loose ends, 1x1 conv to C, BN).
        ``True``: final layout (cell output = concat of the loose ends); fixed networks only.
    auxiliary
        Add the auxiliary head after the first normal cell of the last stage. In training mode
        the network then returns ``(logits, aux_logits)``.
    drop_path_prob
        Maximum drop-path probability (1 - keep prob; 0.4 in the final network), scaled by depth
        and by training progress (:meth:`set_drop_path_progress`).
    """

    name = 'micro'
    # per cell type, the two cell inputs lead, then one anchor per earlier node
    anchor_groups = {'normal': 2, 'reduce': 2}

    def __init__(self, num_layers: int = 6, channels: int = 20, num_nodes: int = 5, num_classes: int = 10,
                 dropout: float = 0.1, final: bool = False, auxiliary: bool = False, drop_path_prob: float = 0.0):
        super().__init__()
        if num_layers < 1 or channels < 2 or num_nodes < 1:
            raise ValueError('MicroSpace needs num_layers >= 1, channels >= 2 and num_nodes >= 1')
        self.drop_path_prob = drop_path_prob
        reductions = reduction_cells(num_layers)
        num_cells = num_layers + 2
        stem_channels = 3 * channels
        self.stem = nn.Sequential(nn.Conv2d(3, stem_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_channels))
        self.cells = nn.ModuleList()
        c_pp, c_p, width = stem_channels, stem_channels, channels
        self.aux_after = reductions[1] + 1 if auxiliary and reductions[1] + 1 < num_cells else None
        self.auxiliary = None
        for i in range(num_cells):
            reduction = i in reductions
            if reduction:
                width *= 2
            cell = Cell(c_pp, c_p, width, reduction=reduction, reduce_input0=(i - 1) in reductions,
                        num_nodes=num_nodes, final=final)
            cell.depth_fraction = (i + 1) / num_cells
            cell.uses_drop_path = drop_path_prob > 0
            self.cells.append(cell)
            c_pp, c_p = c_p, cell.out_channels
            if i == self.aux_after:
                self.auxiliary = AuxiliaryHead(c_p, num_classes)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_p, num_classes, bias=False)
        init_weights(self)

    def set_drop_path_progress(self, progress: float) -> None:
        """Set the drop-path probabilities for training progress in [0, 1] (spec B.4 schedule).

        Each cell's ``drop_prob`` buffer is filled in place (one small kernel, no host sync), so a
        CUDA graph of the network follows the schedule.
        """
        for cell in self.cells:
            cell.drop_prob.fill_(min(1.0, progress) * cell.depth_fraction * self.drop_path_prob)

    def forward(self, x: torch.Tensor):
        s0 = s1 = self.stem(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == self.aux_after and self.auxiliary is not None and self.training:
                aux = self.auxiliary(s1)
        out = torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(s1), 1), 1)
        logits = self.classifier(self.dropout(out))
        return (logits, aux) if aux is not None else logits
