"""The base class of every error a user can cause and fix (a bad path, file, option or value),
and the errors that belong to no one layer.

The command line prints these as one line naming the fix; any other exception is a bug in reidkit
and keeps its traceback.
"""

from __future__ import annotations


class ReidkitError(Exception):
    """A problem with the user's input, files or settings; the message says how to fix it."""


class MissingDependencyError(ReidkitError, ImportError):
    """An optional dependency (an extra such as ``reidkit[onnx]``) is not installed."""
