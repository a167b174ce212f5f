"""reidkit: person re-identification on PyTorch. ``reidkit.load / extract / search / evaluate``
are the Python API in four calls (:mod:`reidkit.api`), imported on first use so that
``import reidkit`` (and the command line) stays fast."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "evaluate", "extract", "load", "search"]


def __getattr__(name: str) -> Any:
    if name in ("evaluate", "extract", "load", "search"):
        return getattr(importlib.import_module("reidkit.api"), name)
    raise AttributeError(f"module 'reidkit' has no attribute {name!r}")
