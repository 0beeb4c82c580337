"""Shared fixtures. Tests run offline and quietly, as the chapters do."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import huggingface_hub
import pytest
from toys import toy_chat_tokenizer, toy_llama

from sftbook.env import QUIET_PROGRESS_VARIABLE, SCALE_VARIABLE, configure_environment

REPO_ROOT = Path(__file__).resolve().parents[1]
configure_environment()
# No usage reports from TRL's trainers (a thread that calls the Hub): here, and in the chapters nbval starts.
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
huggingface_hub.constants.HF_HUB_DISABLE_TELEMETRY = True
# Chapters run by nbval inherit this: no progress bars, as in the stored outputs (see sftbook.env.progress).
os.environ[QUIET_PROGRESS_VARIABLE] = "1"


@pytest.fixture
def data_copy(tmp_path, monkeypatch) -> Path:
    """A private copy of data/ that a test may corrupt; sftbook.data reads it via SFTBOOK_DATA_DIR."""
    target = tmp_path / "data"
    shutil.copytree(REPO_ROOT / "data", target)
    monkeypatch.setenv("SFTBOOK_DATA_DIR", str(target))
    return target


@pytest.fixture(autouse=True, scope="module")
def full_scale():
    """Unit tests check the real data and defaults; only the chapters run at `make test`'s reduced scale.

    Module-scoped, so it is in force before a test module's own module-scoped fixtures are built; the
    chapters (nbval items, outside tests/) never see it."""
    before = os.environ.get(SCALE_VARIABLE)
    os.environ[SCALE_VARIABLE] = "full"
    yield
    if before is None:
        os.environ.pop(SCALE_VARIABLE, None)
    else:
        os.environ[SCALE_VARIABLE] = before


def pytest_collection_modifyitems(config, items):
    """At the reduced scale (`make test`) a chapter's numbers differ from its stored full-scale outputs by
    design, so nbval only checks that every cell runs; `make test-full` also compares the cells tagged
    ``nbval-check-output``, and the stale-output test ties every stored output to the current code."""
    if os.environ.get(SCALE_VARIABLE) != "reduced":
        return
    for item in items:
        if getattr(item, "options", None) and "check" in item.options:
            item.options["check"] = False


@pytest.fixture(scope="module")
def tokenizer():
    """A toy byte-level tokenizer with SmolLM2's chat template (tests/toys.py); a module may define its own."""
    return toy_chat_tokenizer()


@pytest.fixture
def model(tokenizer):
    """A tiny random Llama for that tokenizer, fresh for each test (tests change it in place)."""
    return toy_llama(tokenizer)
