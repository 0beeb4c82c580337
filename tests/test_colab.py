"""The Colab path of every chapter's hidden bootstrap cell, exercised for real: in a fresh virtual
environment where `sftbook` is not importable, with `google.colab` present, the cell clones the book
(here from this repository, not GitHub), installs it with `pip install -e .[minilm]`, and the chapter's
`import sftbook` then loads the clone — data included. Dependencies come from this machine's .venv and
pip is told not to use an index, so the test needs no network."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap

import pytest
from conftest import REPO_ROOT

from sftbook import book


@pytest.mark.slow
def test_bootstrap_cell_installs_the_book_on_a_fresh_colab_runtime(tmp_path):
    venv = tmp_path / "colab-venv"
    # without its own pip and setuptools: those, like every library, come from the "preinstalled" set below
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    # the runtime's preinstalled libraries (Colab has torch, transformers, ...): this machine's, minus sftbook
    with open(os.path.join(site, "preinstalled.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    content = tmp_path / "content"
    cell = book.bootstrap_source(url=f"file://{REPO_ROOT}").replace("/content/sftbook", str(content / "sftbook"))
    script = (
        textwrap.dedent("""
        import importlib.util, sys, types
        assert importlib.util.find_spec("sftbook") is None, "sftbook must not be importable before the cell runs"
        sys.modules["google.colab"] = types.ModuleType("google.colab")  # what Colab's runtime provides
    """)
        + cell
        + textwrap.dedent("""
        print("LOADED", sftbook.__file__)
        print("SST2", len(sftbook.data.load("sst2")["test"]))
    """)
    )
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([str(python), "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"LOADED {content / 'sftbook' / 'src' / 'sftbook' / '__init__.py'}" in result.stdout
    assert "SST2 1821" in result.stdout
    assert (content / "sftbook" / "book").is_dir() and (content / "sftbook" / "data" / "SHA256SUMS").is_file()
