"""Offline for real: the fast unit tests and one chapter run with networking removed — in a network namespace
with only loopback (``unshare -rn``), or with sockets refused where namespaces are unavailable — and
HF_HUB_OFFLINE *unset*, so nothing is told to stay offline. Every network attempt any process makes is
recorded (tests/offline/sitecustomize.py); the only ones allowed are the book's announced hub checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def network_namespace_available() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
def test_unit_tests_and_a_chapter_pass_without_network(tmp_path):
    log = tmp_path / "network.log"
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "tests" / "offline"), env.get("PYTHONPATH")]))
    env["SFTBOOK_NETWORK_LOG"] = str(log)
    env["SFTBOOK_SCALE"] = "reduced"  # the chapter at make test's scale; the unit tests pin the full scale themselves
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "tests", "book/05_attention.ipynb"]
    if network_namespace_available():
        command = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]
    else:
        env["SFTBOOK_BLOCK_NETWORK"] = "1"
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=2400)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "05_attention.ipynb" not in result.stdout.split("short test summary")[-1]
    attempts = log.read_text().splitlines() if log.exists() else []
    unannounced = [line for line in attempts if line.startswith("UNANNOUNCED")]
    assert unannounced == [], "\n".join(unannounced[:20])
    # the recorder was live in these processes: the tests' announced hub checks were seen
    assert any(line.startswith("deliberate") for line in attempts), "no network attempt was recorded at all"
