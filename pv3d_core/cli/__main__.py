"""``python -m pv3d_core.cli``: the same as ``pv3d``."""
import sys

from . import main

sys.exit(main())
