"""The exceptions autoshrink raises for bad input.

Every error a user can cause -- a malformed cell file, a wrong path, an unknown op, a corrupt
benchmark table, a learning rate that makes a training diverge -- is an
:class:`AutoshrinkError` whose message names the input and what was expected. The command line
prints it as one line and exits with status 2, as it does an :class:`OSError` (a path that
cannot be read or written), in the words of :func:`os_error_line`.
"""

from __future__ import annotations


class AutoshrinkError(Exception):
    """Bad input or an unusable setting; the message is meant for the user."""


class CellError(AutoshrinkError, ValueError):
    """A cell genotype or cell file is malformed."""


class DataError(AutoshrinkError):
    """A data set path or file is missing or malformed."""


class ConfigError(AutoshrinkError, ValueError):
    """A configuration value is out of range or inconsistent."""


class JournalError(AutoshrinkError):
    """A run folder or its journal cannot be used to resume."""


class BenchmarkError(AutoshrinkError):
    """A tabular benchmark file is missing or malformed, or a query asks for what it lacks."""


class HardwareError(AutoshrinkError):
    """A latency backend or device is not available, or a latency table does not fit."""


class TrainingError(AutoshrinkError):
    """A final training could not go on (its loss diverged); what it had finished is kept."""


def os_error_line(err: OSError) -> str:
    """One line for an :class:`OSError`: the path(s) it names and the system's reason."""
    paths = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
    reason = err.strerror or str(err)
    return f"{paths}: {reason}" if paths else reason
