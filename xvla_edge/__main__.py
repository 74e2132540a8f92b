"""``python -m xvla_edge`` is ``xvla-edge``."""

import sys

from xvla_edge.cli import main

sys.exit(main())
