"""sftbook: the tested helpers behind *Supervised Fine-Tuning, Demystified*.

The package is layered like the book: each module imports only modules on lower floors of
:data:`FLOORS` (``tests/test_layers.py`` holds it to that), so it reads from the foundations up.
Submodules load on first use (``sftbook.data``), so ``import sftbook`` stays fast.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from sftbook.errors import SftbookError

__version__ = "0.1.0"

# floor: the modules on it (a module may import only modules on lower floors)
FLOORS: dict[int, tuple[str, ...]] = {
    0: ("errors", "codegraph"),  # what every deliberate error is; which code an artifact or chapter runs
    1: ("env",),  # device, seeds, scale, progress
    2: ("artifacts",),  # checksums, cache keys, atomic writes, checkpoints
    3: ("data", "tokenization", "batching", "decoding", "metrics", "optimization", "landmarks", "notebooks", "applications", "formatting"),
    4: ("ngram", "attention", "losses", "modeling", "lora", "llm"),  # what chapters 2, 5, 6, 7 and 8 derive; the chat LLM
    5: ("evaluation", "pretraining", "translation"),  # using encoders; training from scratch
    6: ("finetuning", "distillation", "sft", "retrieval"),  # fine-tuning classifiers and an LLM; teachers; sentence vectors
    7: ("preference", "reading"),  # preference tuning (DPO) on top of an SFT model; the fine-tuned reader of question answering
    8: ("zoo",),  # the book's models by name, trained once and cached
    9: ("scaling",),  # chapter 11's study
    10: ("book", "status", "plotting"),  # provenance and glue, the status page, figures
    11: ("cli",),
}
FLOOR_OF: dict[str, int] = {name: floor for floor, names in FLOORS.items() for name in names}

__all__ = ["FLOORS", "SftbookError", "__version__", *FLOOR_OF]


def __getattr__(name: str) -> ModuleType:
    if name in FLOOR_OF:
        return importlib.import_module(f"sftbook.{name}")
    raise AttributeError(f"module 'sftbook' has no attribute {name!r}")
