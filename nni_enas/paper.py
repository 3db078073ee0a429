"""The paper's settings (the official TF scripts, ENAS_SPEC Part 1, C.4, D.3 and F), per space.

``SEARCH[space]`` are search.py's defaults, ``FINAL[space]`` retrain.py's. Every value can be
overridden on the command line; this table is the one place they are written down
(``SEARCH_FLAGS`` / ``FINAL_FLAGS`` say what each means: the commands' flags and help come from
them). The published final architectures as the official TF scripts write them
(``TF_MACRO_FINAL_ARC``, ``TF_MICRO_FINAL_ARC``, ``TF_RNN_FINAL_ARC``) and their conversion to our
labels (:func:`macro_arch_from_tf`, :func:`micro_arch_from_tf`, :func:`rnn_arch_from_tf`) are how
``nni_enas/architectures/paper-{macro,micro,rnn}.json`` were made.
"""

from __future__ import annotations

from typing import Any

from nni_enas.spaces.ops import MACRO_OPS, MICRO_OPS, RNN_ACTIVATIONS

SEARCH = {
    'macro': dict(
        epochs=310, batch_size=128, layers=12, channels=36, dropout=0.1,
        lr_max=0.05, lr_min=5e-4, weight_decay=5e-4, grad_clip=5.0,
        ctrl_lr=1e-3, ctrl_steps=50, ctrl_steps_aggregate=20, entropy_weight=1e-4,
        skip_weight=0.8, skip_target=0.4, baseline_decay=0.99, tanh_constant=1.5, op_tanh_reduce=1.0,
        lstm_size=64, reward_train_mode=False,
    ),
    'micro': dict(
        epochs=150, batch_size=160, layers=6, channels=20, nodes=5, dropout=0.1,
        lr_max=0.05, lr_min=5e-4, weight_decay=2e-4, grad_clip=5.0,
        ctrl_lr=3.5e-3, ctrl_steps=30, ctrl_steps_aggregate=10, entropy_weight=1e-4,
        skip_weight=0.0, skip_target=0.4, baseline_decay=0.99, tanh_constant=1.1, op_tanh_reduce=2.5,
        lstm_size=64, reward_train_mode=True,
        # TF micro controller: learned op bias b_soft and a constant normal-cell offset (spec C.3).
        op_bias=[10.0, 10.0, 0.0, 0.0, 0.0],
        group_logit_offset={'normal': [0.25, 0.25, -0.25, -0.25, -0.25]},
    ),
    # The recurrent cell (ENAS_RNN_SPEC Part 1): the child training of enas_lm (the authors'
    # corrected code) at the paper's schedule (batch 64: ~414 steps an epoch on PTB, "about 400";
    # 150 epochs; 2000 controller samples an epoch in updates of 10), the paper's controller.
    'rnn': dict(
        epochs=150, batch_size=64, bptt=35, nodes=12, hidden_size=200,
        dropout_e=0.10, dropout_i=0.20, dropout_x=0.75, dropout_h=0.25, dropout_o=0.75,
        lr=20.0, weight_decay=8e-7, grad_clip=0.1, slowness=1.0,
        ctrl_lr=3.5e-4, ctrl_steps=200, ctrl_steps_aggregate=10, entropy_weight=1e-4,
        baseline_decay=0.99, tanh_constant=2.5, temperature=5.0, lstm_size=100, reward_constant=80.0,
        reward_train_mode=False,
    ),
}

FINAL = {
    'macro': dict(
        epochs=310, batch_size=100, channels=96, dropout=0.5, final=True,
        lr_max=0.05, lr_min=1e-3, weight_decay=4e-4, grad_clip=5.0,
        aux_weight=0.0, drop_path_prob=0.0, cutout=0,
    ),
    'micro': dict(
        epochs=630, batch_size=144, layers=15, channels=36, dropout=0.2, final=True,
        lr_max=0.05, lr_min=1e-4, weight_decay=4e-4, grad_clip=5.0,
        aux_weight=0.4, drop_path_prob=0.4, cutout=0,
    ),
    # enas_lm's GPU recipe (fixed_lib.py / fixed.py; ENAS_RNN_SPEC Part 1, Part 2 5.3); its 3000
    # epochs are ~1.24M steps on PTB (the README says what that costs).
    'rnn': dict(
        epochs=3000, batch_size=64, bptt=35, hidden_size=800, init_range=0.05,
        dropout_e=0.125, dropout_i=0.175, dropout_x=0.725, dropout_h=0.225, dropout_o=0.75,
        lr=20.0, weight_decay=8e-7, grad_clip=0.25, activation_l2=0.7, slowness=0.0,
        weight_averaging=True, averaging_patience=10, valid_batch_size=64, test_batch_size=1,
    ),
}

# Table 2 of the paper, for comparison with what retrain.py reports.
PAPER_RESULTS = {
    'paper-macro': dict(params_m=21.3, test_error=4.23),
    'paper-micro': dict(params_m=4.6, test_error=3.54, test_error_cutout=2.89),
    # PTB test perplexity of the ICML version (56.3; arXiv v1: 55.8, with the TF test-loss cap), "24M" parameters
    'paper-rnn': dict(params_m=24.0, test_ppl=56.3),
}


def controller_kwargs(settings: dict) -> dict:
    """The ReinforceController arguments among a SEARCH entry (or CLI namespace as dict)."""
    keys = ('lstm_size', 'tanh_constant', 'op_tanh_reduce', 'skip_target', 'op_bias', 'group_logit_offset',
            'temperature')
    return {k: settings[k] for k in keys if k in settings}


# The SGD recipe flags both commands share (their help is the same; weight decay's is not).
_SCHEDULE_FLAGS = {
    'lr_max': ('number', 'SGD learning rate at each (warm) restart of the cosine schedule'),
    'lr_min': ('number', 'cosine schedule minimum'),
}
_CLIP_FLAG = {'grad_clip': ('number', 'global gradient-norm clip, 0 = off')}
# The recurrent cell's widths and dropouts, and its SGD (both commands).
_RNN_WIDTH_FLAGS = {
    'hidden_size': ('number', 'rnn: hidden size of the cell, also the embedding size (the decoder is tied)'),
    'dropout_e': ('number', 'rnn: drop rate of whole embedding rows (words)'),
    'dropout_i': ('number', 'rnn: drop rate of the embedded input (locked over the window)'),
    'dropout_x': ('number', 'rnn: drop rate of x_t into node 0 (locked)'),
    'dropout_h': ('number', 'rnn: drop rate of h_{t-1} and of every node\'s input (locked)'),
    'dropout_o': ('number', 'rnn: drop rate of the cell output before the decoder (locked)'),
}
_RNN_SGD_FLAGS = {
    'lr': ('number', 'rnn: SGD learning rate of a --bptt window (a window of T steps uses lr * T / bptt)'),
    'bptt': ('number', 'rnn: truncated-BPTT window length (each window\'s length random around it, as enas_lm)'),
}

# What each setting means, as the commands' help says it: ``{group: {key: (kind, help)}}``.
# Every key is a flag (``--key-with-dashes``) defaulting to the table above for the chosen space;
# a ``number`` is checked against its range in the one table of limits (``limits.FLAG_RANGES``),
# a ``switch`` is ``--x/--no-x``.
SEARCH_FLAGS = {
    'what to search': {
        'layers': ('number', 'macro: number of layers; micro: normal cells (2 per stage in search)'),
        'channels': ('number', 'width of the first stage'),
        'nodes': ('number', 'micro: computational nodes per cell; rnn: nodes of the cell (node 0 and the '
                           'searched ones)'),
        'dropout': ('number', 'dropout before the classifier'),
        **_RNN_WIDTH_FLAGS,
    },
    'shared weights (child models)': {
        'epochs': ('number', 'search epochs'),
        'batch_size': ('number', 'minibatch size of the child steps and the reward batches'),
        **_SCHEDULE_FLAGS,
        **_RNN_SGD_FLAGS,
        'weight_decay': ('number', 'SGD weight decay (rnn: the penalty wd * sum(w^2) of enas_lm, on the '
                                   'weights each step trains)'),
        **_CLIP_FLAG,
        'slowness': ('number', 'rnn: weight of the slowness regulariser, the mean squared change of the cell '
                               'output from one step to the next'),
    },
    'controller': {
        'ctrl_lr': ('number', 'Adam learning rate'),
        'ctrl_steps': ('number', 'controller updates per epoch'),
        'ctrl_steps_aggregate': ('number', 'sampled children averaged into one update'),
        'entropy_weight': ('number', 'entropy bonus added to the reward'),
        'skip_weight': ('number', 'weight of the skip penalty (KL from --skip-target)'),
        'skip_target': ('number', 'target probability of a skip connection'),
        'baseline_decay': ('number', 'decay of the moving-average reward baseline'),
        'tanh_constant': ('number', 'logits become c*tanh(logits)'),
        'op_tanh_reduce': ('number', 'op decisions use tanh-constant / this'),
        'temperature': ('number', 'rnn: logits are divided by it before the tanh'),
        'lstm_size': ('number', 'controller LSTM units'),
        'reward_constant': ('number', 'rnn: the reward is this constant / the validation perplexity'),
        'reward_train_mode': ('switch', 'score rewards with batch-statistics BN and dropout on (TF micro) '
                                        'instead of inference mode (TF macro)'),
    },
}

FINAL_FLAGS = {
    'what to train': {
        **_RNN_WIDTH_FLAGS,
        'layers': ('number', 'micro: normal cells (5 per stage); macro: layers, the file\'s own depth unless '
                            'given (a macro architecture only exists at its depth)'),
        'channels': ('number', 'width of the first stage (doubles at each reduction)'),
        'dropout': ('number', 'dropout before the classifier'),
        'aux_weight': ('number', 'micro: weight of the auxiliary head\'s loss, 0 = no auxiliary head'),
        'drop_path_prob': ('number', 'micro: drop-path probability of the last cell at the end of training '
                                       '(scaled by depth and training progress)'),
        'init_range': ('number', 'rnn: every weight starts uniform in [-x, x]'),
    },
    'training recipe': {
        'epochs': ('number', 'training epochs'),
        'batch_size': ('number', 'training minibatch size per device'),
        **_SCHEDULE_FLAGS,
        **_RNN_SGD_FLAGS,
        'weight_decay': ('number', 'SGD weight decay (the TF code\'s L2 2e-4 on the loss; rnn: the penalty '
                                   'wd * sum(w^2) of enas_lm)'),
        **_CLIP_FLAG,
        'activation_l2': ('number', 'rnn: weight of the mean square of the cell outputs'),
        'slowness': ('number', 'rnn: weight of the slowness regulariser (mean squared change of the cell output)'),
        'weight_averaging': ('switch', 'rnn: evaluate with the running mean of the weights once the validation '
                                       'perplexity stalls (NT-ASGD, as enas_lm)'),
        'averaging_patience': ('number', 'rnn: averaging starts when the validation perplexity is worse than '
                                        'the best one of all but the last this many epochs'),
        'valid_batch_size': ('number', 'rnn: rows of the validation text (evaluated with the state carried)'),
        'test_batch_size': ('number', 'rnn: rows of the test text (1 = the whole text in one stream; more is '
                                     'faster and a little pessimistic at the row starts)'),
        'cutout': ('number', 'side of the cutout square in pixels, 0 = off, at most the image side; 16 for '
                             'the paper\'s "+ CutOut" row'),
    },
}


# scripts/cifar10_macro_final.sh of melodyguan/enas: layer i = op index, then i skip bits.
TF_MACRO_FINAL_ARC = ' '.join([
    '0',
    '3 0',
    '0 1 0',
    '2 0 0 1',
    '2 0 0 0 0',
    '3 1 1 0 1 0',
    '2 0 0 0 0 0 1',
    '2 0 1 1 0 1 1 1',
    '1 0 1 1 1 0 1 0 1',
    '0 0 0 0 0 0 0 0 0 0',
    '2 0 0 0 0 0 1 0 0 0 0',
    '0 1 0 0 1 1 0 0 0 0 1 1',
    '2 0 1 0 0 0 0 0 1 0 1 1 0',
    '1 0 0 1 0 0 0 1 1 1 0 1 0 1',
    '0 1 1 0 1 0 1 0 0 0 0 0 1 0 0',
    '2 0 0 1 0 0 0 0 0 0 0 1 0 1 0 1',
    '2 0 1 0 0 0 1 0 0 1 1 1 1 0 0 1 0',
    '2 0 0 0 0 1 0 1 0 1 0 0 1 0 1 0 0 1',
    '3 0 1 1 0 1 0 0 0 0 0 1 0 1 0 1 0 0 0',
    '3 0 1 1 0 0 0 0 0 0 0 0 0 1 1 0 0 0 0 1',
    '0 1 0 0 1 0 1 1 0 0 0 1 0 0 0 0 0 1 1 0 0',
    '3 0 1 0 1 1 0 0 1 0 1 1 0 1 1 0 1 0 0 1 0 0',
    '0 1 0 1 0 1 0 0 0 0 0 0 0 0 1 0 1 0 0 1 0 0 0',
    '0 1 1 0 0 0 1 1 1 0 1 0 0 0 1 0 1 0 0 1 1 0 0 0',
])

# scripts/cifar10_micro_final.sh (ENAS_SPEC B.5): per node index_a op_a index_b op_b, nodes 2..6.
TF_MICRO_FINAL_ARC = {
    'normal': '0 2 0 0  0 4 0 1  0 4 1 1  1 0 0 1  0 2 1 1',
    'reduce': '1 0 1 0  0 3 0 2  1 1 3 1  1 0 0 4  0 3 1 1',
}


# scripts/ptb_final.sh (ENAS_RNN_SPEC 5.1): node 0's activation, then (previous node, activation)
# for nodes 1..11, activations in TF0's codes (our RNN_ACTIVATIONS order).
TF_RNN_FINAL_ARC = '0  0 0  1 1  2 1  2 0  2 0  5 1  1 0  6 1  8 1  8 1  8 1'


def _ints(tokens: str | list[int]) -> list[int]:
    return [int(t) for t in tokens.split()] if isinstance(tokens, str) else [int(t) for t in tokens]


def macro_arch_from_tf(tokens: str | list[int]) -> dict[str, Any]:
    """Our macro labels for a TF macro ``fixed_arc`` (ENAS_SPEC A.5).

    Layer i contributes its op index (into :data:`~nni_enas.spaces.ops.MACRO_OPS`), then i skip bits;
    bit j selects element j of ``[stem, layer_0, ..., layer_{i-2}]``, which is exactly the
    candidate list of our ``layer_{i}/skip``.
    """
    values = _ints(tokens)
    arch: dict[str, Any] = {}
    pos, layer = 0, 0
    while pos < len(values):
        if pos + 1 + layer > len(values):
            raise ValueError(f'macro arc of {len(values)} tokens ends inside layer {layer} '
                             f'(a {layer}-layer arc has {layer * (layer + 1) // 2} tokens)')
        op, bits = values[pos], values[pos + 1:pos + 1 + layer]
        if not 0 <= op < len(MACRO_OPS) or any(b not in (0, 1) for b in bits):
            raise ValueError(f'macro arc layer {layer}: op {op} / skip bits {bits} out of range')
        arch[f'layer_{layer}/op'] = MACRO_OPS[op]
        if layer > 0:
            arch[f'layer_{layer}/skip'] = [j for j, bit in enumerate(bits) if bit]
        pos += 1 + layer
        layer += 1
    return arch


def micro_arch_from_tf(normal: str | list[int], reduce: str | list[int]) -> dict[str, Any]:
    """Our micro labels for a TF micro ``fixed_arc`` (ENAS_SPEC B.5), one 4-tuple per node."""
    arch: dict[str, Any] = {}
    for cell, tokens in (('normal', normal), ('reduce', reduce)):
        values = _ints(tokens)
        if len(values) % 4:
            raise ValueError(f'micro {cell} arc needs 4 integers per node, got {len(values)}')
        for k in range(len(values) // 4):
            node = k + 2
            index_a, op_a, index_b, op_b = values[4 * k:4 * k + 4]
            for slot, index, op in (('a', index_a, op_a), ('b', index_b, op_b)):
                if not 0 <= index < node or not 0 <= op < len(MICRO_OPS):
                    raise ValueError(f'micro {cell} node {node}: input {index} / op {op} out of range')
                arch[f'{cell}/node_{node}/input_{slot}'] = [index]
                arch[f'{cell}/node_{node}/op_{slot}'] = MICRO_OPS[op]
    return arch


def rnn_arch_from_tf(tokens: str | list[int]) -> dict[str, Any]:
    """Our recurrent-cell labels for a TF0 PTB ``fixed_arc`` (ENAS_RNN_SPEC 5.1).

    Token 0 is node 0's activation; node j >= 1 reads tokens ``2j - 1`` (its previous node) and
    ``2j`` (its activation). Activation codes are TF0's (0 tanh, 1 ReLU, 2 identity, 3 sigmoid), the
    order of :data:`~nni_enas.spaces.ops.RNN_ACTIVATIONS`; enas_lm's arcs (identity and sigmoid
    swapped, node 0 fixed to tanh) do not convert with this function.
    """
    values = _ints(tokens)
    if not values or len(values) % 2 != 1:
        raise ValueError(f'an rnn arc has 1 + 2 tokens per node after node 0, got {len(values)} tokens')
    if not 0 <= values[0] < len(RNN_ACTIVATIONS):
        raise ValueError(f'rnn arc node 0: activation {values[0]} out of range')
    arch: dict[str, Any] = {'node_0/act': RNN_ACTIVATIONS[values[0]]}
    for node in range(1, (len(values) + 1) // 2):
        prev, act = values[2 * node - 1], values[2 * node]
        if not 0 <= prev < node or not 0 <= act < len(RNN_ACTIVATIONS):
            raise ValueError(f'rnn arc node {node}: previous node {prev} / activation {act} out of range')
        arch[f'node_{node}/prev'] = prev
        arch[f'node_{node}/act'] = RNN_ACTIVATIONS[act]
    return arch
