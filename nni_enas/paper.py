"""The paper's settings (the official TF scripts, ENAS_SPEC Part 1, C.4, D.3 and F), per space.

``SEARCH[space]`` are search.py's defaults, ``FINAL[space]`` retrain.py's. Every value can be
overridden on the command line; this table is the one place they are written down.
"""

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
}

# Table 2 of the paper, for comparison with what retrain.py reports.
PAPER_RESULTS = {
    'paper-macro': dict(params_m=21.3, test_error=4.23),
    'paper-micro': dict(params_m=4.6, test_error=3.54, test_error_cutout=2.89),
}


def controller_kwargs(settings: dict) -> dict:
    """The ReinforceController arguments among a SEARCH entry (or CLI namespace as dict)."""
    keys = ('lstm_size', 'tanh_constant', 'op_tanh_reduce', 'skip_target', 'op_bias', 'group_logit_offset')
    return {k: settings[k] for k in keys if k in settings}
