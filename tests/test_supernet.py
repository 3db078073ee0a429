"""The NNI private attributes ``nni_enas/spaces/supernet.py`` reads (and nothing else in the package does).

NNI 3.0 has no public way to ask an input choice which inputs it takes right now, so
``supernet.py`` reads two attributes NNI keeps for itself: ``PathSamplingInput._sampled`` (set by
``resample``) and ``InputChoice._dry_run_choice`` (set in the constructor). An NNI upgrade that
renames or repurposes either must fail here, with a message saying where to look, rather than
as a wrong network somewhere in a search.
"""

import re
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nni.nas.nn.pytorch import InputChoice, ModelSpace  # noqa: E402
from nni.nas.oneshot.pytorch.supermodule.sampling import PathSamplingInput  # noqa: E402

from nni_enas.spaces.supernet import PathSamplingAnyInput, chosen_indices  # noqa: E402

UPGRADE = 'NNI changed a private attribute nni_enas/spaces/supernet.py relies on: '


def inside_space(build):
    """``build()`` run where NNI allows choices to be made: in a ``ModelSpace``'s constructor."""
    class Space(ModelSpace):
        def __init__(self):
            super().__init__()
            self.choice = build()
    return Space().choice


def test_path_sampling_input_keeps_the_sample_in_sampled():
    choice = inside_space(lambda: PathSamplingInput(3, 1, 'sum', 'x'))
    assert hasattr(choice, '_sampled'), UPGRADE + 'PathSamplingInput._sampled is gone'
    assert choice.resample({'x': 2}) == {'x': 2}
    assert choice._sampled == 2, UPGRADE + 'resample() no longer stores the sample in _sampled'
    assert chosen_indices(choice) == [2]
    any_subset = inside_space(lambda: PathSamplingAnyInput(3, None, 'sum', 'skip'))
    any_subset.resample({'skip': [0, 2]})
    assert chosen_indices(any_subset) == [0, 2]
    out = any_subset([torch.ones(1), 2 * torch.ones(1), 4 * torch.ones(1)])
    assert out.item() == 5.0                                 # the sum of inputs 0 and 2


def test_input_choice_keeps_its_dry_run_value():
    choice = inside_space(lambda: InputChoice(3, n_chosen=1, label='y'))
    assert hasattr(choice, '_dry_run_choice'), UPGRADE + 'InputChoice._dry_run_choice is gone'
    assert chosen_indices(choice) in ([0], [1], [2])
    out = choice([torch.ones(1), 2 * torch.ones(1), 4 * torch.ones(1)])
    assert out.item() == [1.0, 2.0, 4.0][chosen_indices(choice)[0]], UPGRADE + '_dry_run_choice is not the forward'


def test_no_other_module_reads_nni_private_attributes():
    pattern = re.compile(r'\._(sampled|dry_run_choice)\b')
    package = REPO / 'nni_enas'
    readers = sorted(str(p.relative_to(package)) for p in package.rglob('*.py') if pattern.search(p.read_text()))
    assert readers == ['spaces/supernet.py'], readers
