"""sftbook: the tested helpers behind *Supervised Fine-Tuning, Demystified*.

The modules follow the book's table of contents; each docstring names the chapter that derives it.
Submodules load on first use (``sftbook.data``), so ``import sftbook`` stays fast.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from sftbook.errors import SftbookError

__version__ = "0.1.0"

_SUBMODULES = (
    "applications",
    "attention",
    "book",
    "cli",
    "data",
    "env",
    "evaluation",
    "losses",
    "modeling",
    "ngram",
    "plotting",
    "pretraining",
    "retrieval",
    "scale",
    "tokenization",
    "training",
    "translation",
)

__all__ = ["SftbookError", "__version__", *_SUBMODULES]


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(f"sftbook.{name}")
    raise AttributeError(f"module 'sftbook' has no attribute {name!r}")
