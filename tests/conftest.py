"""Shared fixtures. Tests run offline and quietly, as the chapters do."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sftbook.env import LOG_PROGRESS_VARIABLE, configure_environment

REPO_ROOT = Path(__file__).resolve().parents[1]
configure_environment()
# Chapters run by nbval inherit this: progress as lines, as in the stored outputs (see sftbook.env.progress).
os.environ[LOG_PROGRESS_VARIABLE] = "1"


@pytest.fixture
def data_copy(tmp_path, monkeypatch) -> Path:
    """A private copy of data/ that a test may corrupt; sftbook.data reads it via SFTBOOK_DATA_DIR."""
    target = tmp_path / "data"
    shutil.copytree(REPO_ROOT / "data", target)
    monkeypatch.setenv("SFTBOOK_DATA_DIR", str(target))
    return target
