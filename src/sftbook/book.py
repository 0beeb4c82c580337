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
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
BOOK_DIR = REPO_ROOT / "book"
METADATA_KEY = "sftbook"
BOOTSTRAP_TAG = "remove-cell"
READS_PROSE_OF = "sftbook_reads_prose_of"  # notebook metadata: the chapters whose text it uses

BOOTSTRAP_TEMPLATE = '''\
# Bootstrap (hidden in the HTML): makes `import sftbook` work in JupyterLab, under nbval and on Colab.
import importlib.util, pathlib, subprocess, sys
REPO_URL = "{url}"
if importlib.util.find_spec("sftbook") is None:
    if "google.colab" in sys.modules:  # a fresh Colab runtime: fetch the book with its data, install it
        subprocess.run(["git", "clone", "--depth=1", REPO_URL, "/content/sftbook"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/sftbook[minilm]"], check=True)
        sys.path.insert(0, "/content/sftbook/src")
    else:  # a clone where `pip install -e .` was not run: use the source tree next to book/
        sys.path.insert(0, str(pathlib.Path.cwd().parent / "src"))
import sftbook
sftbook.env.configure_environment()'''


def repository_url(config_path: Path = REPO_ROOT / "_config.yml") -> str:
    """The repository URL, defined once in ``_config.yml`` (launch buttons and bootstrap cells use it)."""
    import yaml

    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    return config["repository"]["url"]


def bootstrap_source(url: str | None = None) -> str:
    """The exact first cell every chapter must start with."""
    return BOOTSTRAP_TEMPLATE.format(url=url or repository_url())


def chapters(book_dir: Path = BOOK_DIR) -> list[Path]:
    """Every chapter notebook, in reading order."""
    return sorted(p for p in book_dir.glob("*.ipynb"))


def glued_values(path: Path) -> dict[str, str]:
    """Every value a stored notebook glued (``glue("name", value)``), as the text myst-nb shows."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    values = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            record = output.get("metadata", {}).get("scrapbook")
            if record:
                values[record["name"]] = output["data"].get(record["mime_prefix"] + "text/plain", "")
    return values


def inputs_digest(notebook: Any, repo_root: Path = REPO_ROOT) -> str:
    """sha256 over what a notebook's outputs depend on: its code, the helpers, the data, the pins —
    and, for a chapter that reads the book itself (metadata ``READS_PROSE_OF``), those chapters' prose
    and glued numbers."""
    import nbformat

    digest = hashlib.sha256()
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    digest.update(json.dumps(code).encode())
    for name in notebook.metadata.get(READS_PROSE_OF, []):
        other = repo_root / "book" / f"{name}.ipynb"
        prose = [cell.source for cell in nbformat.read(other, as_version=4).cells if cell.cell_type == "markdown"]
        digest.update(json.dumps([name, prose, glued_values(other)], sort_keys=True).encode())
    for path in sorted((repo_root / "src" / "sftbook").rglob("*.py")):
        digest.update(path.relative_to(repo_root).as_posix().encode())
        digest.update(path.read_bytes())
    for name in ("data/SHA256SUMS", "requirements.txt"):
        digest.update((repo_root / name).read_bytes())
    return digest.hexdigest()


def stale_output_problems(path: Path, repo_root: Path = REPO_ROOT) -> list[str]:
    """Why the stored outputs of ``path`` cannot be trusted (empty list: they come from the current code)."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    fix = f"run `make execute NB={path.relative_to(repo_root).as_posix()}` and commit the notebook"
    record = notebook.metadata.get(METADATA_KEY)
    if not record or "inputs_sha256" not in record:
        return [f"{path.name} was never executed by `make execute`; {fix}."]
    problems = []
    if record["inputs_sha256"] != inputs_digest(notebook, repo_root):
        problems.append(
            f"{path.name}: stored outputs are stale (its code, src/sftbook, data, requirements.txt or the "
            f"chapters it reads changed since {record.get('executed_at', '?')}); {fix}."
        )
    code = [c for c in notebook.cells if c.cell_type == "code"]
    counts = [c.get("execution_count") for c in code]
    if counts != list(range(1, len(code) + 1)):
        problems.append(f"{path.name}: code cells were not run once each, in order, on a fresh kernel; {fix}.")
    if any(o.get("output_type") == "error" for c in code for o in c.get("outputs", [])):
        problems.append(f"{path.name}: a stored output is an error; fix the chapter, then {fix}.")
    return problems


def execute_notebook(path: Path, timeout: int = 1800, repo_root: Path = REPO_ROOT) -> float:
    """Run a chapter top to bottom on a fresh kernel, record provenance, write it back atomically."""
    import nbformat
    from nbclient import NotebookClient

    from sftbook.env import LOG_PROGRESS_VARIABLE, machine_info

    notebook = nbformat.read(path, as_version=4)
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
    os.environ[LOG_PROGRESS_VARIABLE] = "1"  # the kernel inherits it: progress as lines, not widgets
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    notebook.metadata[METADATA_KEY] = {
        "inputs_sha256": inputs_digest(notebook, repo_root),
        "executed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "run_time_s": round(elapsed, 1),
        "machine": machine_info(),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".ipynb.tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        nbformat.write(notebook, f)
    os.replace(tmp, path)
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


# ----------------------------------------------------------------------------- the status page

STATUS_PAGE = BOOK_DIR / "status.md"
BENCHMARK_RESULTS = REPO_ROOT / "benchmarks" / "results.json"

# (chapter, glued name, what it is, format): the book's headline numbers, gathered on the status page
HEADLINES: tuple[tuple[str, str, str, str], ...] = (
    ("03_pretraining", "pt_heldout_loss", "BERT-tiny pretraining: final held-out MLM loss", "{:.2f}"),
    ("03_pretraining", "sparse_speedup", "Sparse MLM head: speed-up per training step", "{:.2f}×"),
    ("03_pretraining", "probe_pretrained", "SST-2 linear probe, pretrained BERT-tiny (%)", "{:.1f}"),
    ("03_pretraining", "probe_random", "SST-2 linear probe, random BERT-tiny (%)", "{:.1f}"),
    ("04_fine_tuning", "tfidf_acc", "SST-2 test accuracy, TF-IDF + logistic regression (%)", "{:.1f}"),
    ("04_fine_tuning", "tiny_random_acc", "SST-2 test accuracy, BERT-tiny from random init (%)", "{:.1f}"),
    ("04_fine_tuning", "tiny_pre_acc", "SST-2 test accuracy, BERT-tiny pretrained in chapter 3 (%)", "{:.1f}"),
    ("04_fine_tuning", "probe_acc", "SST-2 test accuracy, MiniLM frozen + linear probe (%)", "{:.1f}"),
    ("04_fine_tuning", "bf16_speedup", "Fine-tuning MiniLM: bf16 autocast speed-up over float32 on this CPU", "{:.2f}×"),
    ("04_fine_tuning", "minilm_acc", "SST-2 test accuracy, MiniLM fine-tuned (%)", "{:.1f}"),
    ("05_attention", "z_row_diff", "Attention as printed (per-row Z) vs PyTorch: largest absolute difference", "{:.1e}"),
    ("05_attention", "z_global_diff", "Z⁰ read as one global normaliser: largest absolute difference", "{:.2f}"),
    ("05_attention", "bert_max_diff", "Our multi-head attention vs a real BERT layer: largest absolute difference", "{:.1e}"),
    ("06_loss_functions", "ce_max_diff", "Cross-entropy by hand vs PyTorch: largest absolute difference", "{:.1e}"),
    ("06_loss_functions", "acc_bce", "Toy classifier trained with correct BCE: accuracy (%)", "{:.1f}"),
    ("06_loss_functions", "acc_article", "Same classifier trained with the article's BCE: accuracy (%)", "{:.1f}"),
    ("07_classifier_code", "hf_difference", "TextClassifier vs BertForSequenceClassification: largest absolute logit difference", "{:.1e}"),
    ("08_applications", "sst3_acc", "SST-3 test accuracy, MiniLM fine-tuned (%)", "{:.1f}"),
    ("08_applications", "mt_exact", "Numeral translation, exact match on unseen numbers (%)", "{:.2f}"),
    ("08_applications", "sum_centroid", "Summaries: content-word recall, centroid (%)", "{:.1f}"),
    ("08_applications", "sum_lead", "Summaries: content-word recall, lead-3 (%)", "{:.1f}"),
    ("08_applications", "trec_acc", "TREC-6 test accuracy, MiniLM fine-tuned (%)", "{:.1f}"),
    ("09_outlook", "scaling_loss_tiny", "Scaling study: held-out MLM loss of BERT-tiny after 2,000 steps", "{:.2f}"),
    ("09_outlook", "scaling_ft_tiny", "Scaling study: BERT-tiny fine-tuned on SST-2 (%)", "{:.1f}"),
    ("09_outlook", "gpt3_years", "Years GPT-3's training would take on this CPU", "{:,.0f}"),
    ("10_faq", "q1_tfidf_100", "SST-2 with 100 labels: TF-IDF (%)", "{:.1f}"),
    ("10_faq", "q1_ft_100", "SST-2 with 100 labels: MiniLM fine-tuned (%)", "{:.1f}"),
    ("10_faq", "q2_scratch", "2,000 labels, MiniLM architecture from random init (%)", "{:.1f}"),
    ("10_faq", "q2_sft", "2,000 labels, MiniLM pretrained + fine-tuned (%)", "{:.1f}"),
    ("10_faq", "q3_bert_over_minilm", "CPU latency, BERT-base over MiniLM", "{:.1f}×"),
)


def _format(value: str, spec: str) -> str:
    try:
        return spec.format(float(value))
    except ValueError:
        return value


def render_status(book_dir: Path = BOOK_DIR) -> str:
    """The status page: run time and machine of every chapter, and the book's headline numbers,
    all read from the stored notebooks (and the last benchmark run), never typed."""
    import nbformat

    lines = [
        "# Status and results",
        "",
        "```{note}",
        "This page is generated by `python -m sftbook status` (and at the end of `make execute`) from the",
        "metadata and glued values stored in the executed chapters; `make test` fails if it is out of date.",
        "```",
        "",
        "## Chapters",
        "",
        "| Chapter | Run time | Executed (UTC) | Machine | torch | transformers |",
        "|---|---:|---|---|---|---|",
    ]
    total = 0.0
    for path in chapters(book_dir):
        record = nbformat.read(path, as_version=4).metadata.get(METADATA_KEY, {})
        machine = record.get("machine", {})
        seconds = record.get("run_time_s")
        total += seconds or 0.0
        lines.append(
            f"| {{doc}}`{path.stem}` | {'—' if seconds is None else f'{seconds:,.0f} s'} | "
            f"{record.get('executed_at', 'never').replace('T', ' ').replace('+00:00', '')} | "
            f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, {machine.get('device', '?')} | "
            f"{machine.get('torch', '?')} | {machine.get('transformers', '?')} |"
        )
    lines += [f"| **all chapters** | **{total / 60:.1f} min** | | | | |", "", "## Headline results", "",
              "| Result | Value | Chapter |", "|---|---:|---|"]
    for chapter, name, label, spec in HEADLINES:
        value = glued_values(book_dir / f"{chapter}.ipynb").get(name)
        cell = "missing" if value is None else _format(value, spec)
        lines.append(f"| {label.replace('|', '¦')} | {cell} | {{doc}}`{chapter}` |")  # a | would split the cell
    if BENCHMARK_RESULTS.is_file() and book_dir == BOOK_DIR:
        bench = json.loads(BENCHMARK_RESULTS.read_text())
        lines += ["", "## Benchmarks", "", f"From `benchmarks/run_all.py`, run {bench['run_at']} on {bench['machine']}:", "",
                  "| Measurement | Value |", "|---|---:|"]
        lines += [f"| {key} | {value} |" for key, value in bench["results"].items()]
    return "\n".join(lines) + "\n"


def write_status(path: Path = STATUS_PAGE) -> Path:
    path.write_text(render_status(), encoding="utf-8")
    return path
