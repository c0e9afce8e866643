"""``python -m autoshrink`` runs the command line."""

import sys

from autoshrink.cli import main

sys.exit(main())
