"""Library arguments are checked when the object is built (issue 21), with NNI-style messages.

Each bad value gives a ``ValueError`` (out of range, NaN, inf) or ``TypeError`` (not a number,
unknown keyword) that names the argument, its value and what is allowed, before any work: no
ZeroDivisionError after an epoch, no math domain error at the first sample, no silent acceptance.

Runtime: about 2 s on the 2-core dev machine (plus the one-off nni import).
"""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nni_enas  # noqa: E402,F401  (filters NNI's harmless warning)
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule  # noqa: E402

from nni_enas import Enas, EnasModule, EnasTrainer, MacroSpace, ReinforceController  # noqa: E402
from nni_enas.arguments import check_number  # noqa: E402
from nni_enas.training.classification import ChildTraining, accuracy  # noqa: E402


def space():
    return MacroSpace(num_layers=2, channels=4)


def controller(**kwargs):
    return ReinforceController(space(), **kwargs)


def module(**kwargs):
    return EnasModule(ChildTraining(), **kwargs)


# (what builds the object, its arguments, the error, words the message must hold)
BAD = {
    'skip_target 0': (controller, dict(skip_target=0), ValueError, r'skip_target must be a number in \(0, 1\), got 0'),
    'skip_target 1': (controller, dict(skip_target=1.0), ValueError, r'skip_target .* got 1\.0'),
    'lstm_size 0': (controller, dict(lstm_size=0), ValueError, r'lstm_size must be an integer >= 1, got 0'),
    'lstm_size str': (controller, dict(lstm_size='64'), TypeError, r"lstm_size must be an integer >= 1, got '64'"),
    'tanh_constant 0': (controller, dict(tanh_constant=0), ValueError, r'tanh_constant must be a number > 0'),
    'temperature nan': (controller, dict(temperature=math.nan), ValueError, r'temperature .* got nan'),
    'op_tanh_reduce inf': (controller, dict(op_tanh_reduce=math.inf), ValueError, r'op_tanh_reduce .* got inf'),
    'op_bias nan': (controller, dict(op_bias=[1.0, math.nan]), ValueError, r'op_bias\[1\] .* got nan'),
    'lstm_num_layers 2': (controller, dict(lstm_num_layers=2), ValueError, r'lstm_num_layers must be 1 .* got 2'),
    'ctrl_kwargs lstm_num_layers 2': (Enas, dict(ctrl_kwargs={'lstm_num_layers': 2}), ValueError,
                                      r'ctrl_kwargs: lstm_num_layers must be 1'),
    'ctrl_kwargs unknown': (module, dict(ctrl_kwargs={'entropy_reduction': 'mean'}), TypeError,
                            r"ctrl_kwargs: .*'entropy_reduction'.* accepts lstm_size, tanh_constant"),
    'ctrl_kwargs skip_target': (module, dict(ctrl_kwargs={'skip_target': 0}), ValueError,
                                r'ctrl_kwargs: skip_target must be'),
    'Enas ctrl_steps_aggregate 0': (Enas, dict(ctrl_steps_aggregate=0), ValueError,
                                    r'ctrl_steps_aggregate must be an integer >= 1, got 0'),
    'Enas num_candidates 0': (Enas, dict(num_candidates=0), ValueError, r'num_candidates must be an integer >= 1, got 0'),
    'Enas ctrl_lr nan': (Enas, dict(ctrl_lr=math.nan), ValueError, r'ctrl_lr must be a number > 0, got nan'),
    'module ctrl_lr 0': (module, dict(ctrl_lr=0.0), ValueError, r'ctrl_lr must be a number > 0, got 0\.0'),
    'module baseline_decay 1': (module, dict(baseline_decay=1.0), ValueError, r'baseline_decay .* in \[0, 1\)'),
    'module entropy_weight -1': (module, dict(entropy_weight=-1), ValueError, r'entropy_weight must be a number >= 0'),
    'module skip_weight inf': (module, dict(skip_weight=math.inf), ValueError, r'skip_weight .* got inf'),
    'module grad_clip -1': (module, dict(grad_clip=-1.0), ValueError, r'grad_clip must be a number >= 0 or None'),
    'module ctrl_steps 0': (module, dict(ctrl_steps=0), ValueError, r'ctrl_steps must be an integer >= 1 or None'),
    'module candidate_batches 1.5': (module, dict(candidate_batches=1.5), TypeError, r'candidate_batches .* got 1\.5'),
    'module reward_train_mode': (module, dict(reward_train_mode='yes'), TypeError, r'reward_train_mode must be True'),
    'recipe aux_weight -1': (ChildTraining, dict(aux_weight=-0.4), ValueError, r'aux_weight must be a number >= 0'),
    'recipe drop_path_steps 0': (ChildTraining, dict(drop_path_steps=0), ValueError, r'drop_path_steps .* got 0'),
}


@pytest.mark.parametrize('case', BAD)
def test_bad_argument_is_refused_when_built(case):
    build, kwargs, error, message = BAD[case]
    with pytest.raises(error, match=message):
        build(**kwargs)


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_epochs=0), r'num_epochs must be an integer >= 1, got 0'),
    (dict(ctrl_steps_aggregate=0), r'ctrl_steps_aggregate must be an integer >= 1, got 0'),
    (dict(ctrl_kwargs={'lstm_num_layers': 2}), r'lstm_num_layers must be 1'),
    (dict(workers=-1), r'workers must be an integer >= 0, got -1'),
])
def test_enas_trainer_refuses_before_touching_the_space(kwargs, message):
    """The NNI 2.x trainer turns the space into a supernet in place: a refused argument must leave it alone."""
    model = space()
    args = dict(model=model, loss=nn.CrossEntropyLoss(), metrics=None, reward_function=accuracy,
                optimizer=torch.optim.SGD(model.parameters(), lr=0.1), num_epochs=1, dataset=None, device='cpu')
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        EnasTrainer(**args)
    assert not any(isinstance(m, BaseSuperNetModule) for m in model.modules())


def test_good_values_at_the_edges_are_accepted():
    ctrl = controller(skip_target=1e-6, lstm_num_layers=1, tanh_constant=None, temperature=5.0, lstm_size=4)
    assert ctrl.skip_target == 1e-6 and ctrl.lstm.hidden_size == 4
    assert math.isfinite(float(ctrl.sample()[3].detach()))     # the skip penalty of a tiny target is finite
    m = module(grad_clip=0, entropy_weight=0, baseline_decay=0.0, ctrl_steps_aggregate=1, num_candidates=1,
               ctrl_kwargs={'lstm_num_layers': 1, 'skip_target': 0.9})
    assert m.grad_clip is None and m.num_candidates == 1
    Enas(ctrl_steps=None, ctrl_lr=1e-9)
    ChildTraining(aux_weight=0.0, drop_path_steps=None)


def test_check_number_words():
    with pytest.raises(ValueError, match=r'^x must be a number in \(0, 1\], got 2$'):
        check_number('x', 2, low=0, high=1, low_open=True)
    with pytest.raises(TypeError, match=r'^n must be an integer >= 1, got True \(bool\)$'):
        check_number('n', True, low=1, integer=True)
    check_number('n', None, low=1, optional=True)
