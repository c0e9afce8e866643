"""matplotlib's classes, imported in one place for every plot and picture.

matplotlib reads ``$MPLBACKEND`` when it is imported and fails on a name it does not know.
The plots here are drawn with the object API straight into files and need no backend, so such
a value is a one-line :class:`~autoshrink.errors.ConfigError` naming the variable instead of a
traceback from inside matplotlib.
"""

from __future__ import annotations

import os

from autoshrink.errors import ConfigError

try:
    import matplotlib  # noqa: F401  (reads $MPLBACKEND)
except ValueError as err:
    raise ConfigError(
        f"MPLBACKEND={os.environ.get('MPLBACKEND', '')!r} is not a matplotlib backend ({err}); "
        "unset it: autoshrink draws its plots into files and needs none"
    ) from None

from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["Figure", "ListedColormap", "MaxNLocator"]
