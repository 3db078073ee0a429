"""nni-enas: ENAS (Pham et al., 2018) on NNI 3.0."""
import warnings as _warnings

__version__ = '0.1.0'

# NNI 3.0 on torch >= 2.x warns that torch's Buffer class "is found to be not a nn.Module": harmless.
_warnings.filterwarnings('ignore', message=r".*is found to be not a nn\.Module.*", category=RuntimeWarning)

from nni_enas.architecture import load_architecture, save_architecture  # noqa: E402
from nni_enas.search.controller import ReinforceController  # noqa: E402
from nni_enas.search.enas import Enas, EnasModule  # noqa: E402
from nni_enas.search.export import ArchitectureExport, EpochExport, write_exported  # noqa: E402
from nni_enas.spaces.macro import MacroSpace  # noqa: E402
from nni_enas.spaces.micro import MicroSpace  # noqa: E402
from nni_enas.spaces.recurrent import RecurrentSpace  # noqa: E402
from nni_enas.search.trainer import EnasTrainer  # noqa: E402

__all__ = ['MacroSpace', 'MicroSpace', 'RecurrentSpace', 'ReinforceController', 'EnasTrainer', 'Enas', 'EnasModule',
           'ArchitectureExport', 'EpochExport', 'write_exported', 'load_architecture', 'save_architecture']
