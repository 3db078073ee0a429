"""``python3 -m nni_enas.draw ARCH -o IMAGE``: see :mod:`nni_enas.draw.cli`."""
import sys

from nni_enas.draw.cli import main

sys.exit(main())
