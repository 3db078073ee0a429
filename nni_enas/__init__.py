"""nni-enas: ENAS (Pham et al., 2018) on NNI 3.0."""
import warnings as _warnings

__version__ = '0.1.0'

# NNI 3.0 on torch >= 2.x warns that torch's Buffer class "is found to be not a nn.Module": harmless.
_warnings.filterwarnings('ignore', message=r".*is found to be not a nn\.Module.*", category=RuntimeWarning)

from .architecture import load_architecture, save_architecture  # noqa: E402
from .controller import ReinforceController  # noqa: E402
from .enas import Enas, EnasModule  # noqa: E402
from .export import ArchitectureExport, EpochExport, write_exported  # noqa: E402
from .macro import MacroSpace  # noqa: E402
from .micro import MicroSpace  # noqa: E402
from .trainer import EnasTrainer  # noqa: E402

__all__ = ['MacroSpace', 'MicroSpace', 'ReinforceController', 'EnasTrainer', 'Enas', 'EnasModule',
           'ArchitectureExport', 'EpochExport', 'write_exported', 'load_architecture', 'save_architecture']
