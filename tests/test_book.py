"""The book's own invariants: bootstrap cells, exercises, table of contents, fresh stored outputs."""

import json
import re
import shutil
import subprocess
import sys

import nbformat
import numpy as np
import pytest
import yaml
from conftest import REPO_ROOT

from sftbook import book, notebooks, status
from sftbook.book import count_and_share
from sftbook.errors import SftbookError

CHAPTERS = notebooks.chapters()


def test_there_are_chapters():
    assert [p.name for p in CHAPTERS][:2] == ["01_background.ipynb", "02_concepts.ipynb"]


def test_every_chapter_is_in_the_table_of_contents():
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = {c["file"] for part in toc["parts"] for c in part["chapters"]}
    assert {f"book/{p.stem}" for p in CHAPTERS} <= files


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_starts_with_the_hidden_bootstrap_cell(path):
    first = nbformat.read(path, as_version=4).cells[0]
    assert first.cell_type == "code"
    assert first.source == book.bootstrap_source(), "regenerate it from sftbook.book.BOOTSTRAP_TEMPLATE"
    assert book.BOOTSTRAP_TAG in first.metadata.get("tags", [])
    assert book.repository_url() in first.source


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_ends_with_exercises_and_hidden_solutions(path):
    markdown = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    exercises = markdown.count("```{exercise}")
    assert "## Exercises" in markdown and exercises >= 2
    assert markdown.count("{solution}") + markdown.count("{solution-start}") == exercises
    assert markdown.count("{solution-start}") == markdown.count("{solution-end}")
    assert markdown.count(":class: dropdown") >= exercises


def unrun_solution_code(markdown: str) -> list[str]:
    """Labels of solutions whose code sits in Markdown — shown to the reader but never executed."""
    return [label for label, body in re.findall(r"````\{solution\} (\S+)\n(.*?)````", markdown, re.S) if "```python" in body]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_solution_with_code_runs_with_the_chapter(path):
    """A solution's code is a code cell between ``{solution-start}`` and ``{solution-end}``, so `make execute`
    and nbval run it and the reader sees its output; code in a Markdown fence would never run."""
    markdown = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    assert unrun_solution_code(markdown) == [], f"{path.name}: make these gated solutions with code cells"


def test_unrun_solution_detector_flags_code_in_a_markdown_solution():
    broken = "````{solution} ex-1-x\n:class: dropdown\n```python\nprint(1)\n```\nText.\n````\n"
    prose_only = "````{solution} ex-1-y\n:class: dropdown\nNSP needs pairs of sentences.\n````\n"
    assert unrun_solution_code(broken) == ["ex-1-x"] and unrun_solution_code(prose_only) == []


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_stored_outputs_come_from_the_current_code(path):
    """The stale-output check: fails when code, helpers, data or pins changed since `make execute`."""
    assert book.stale_output_problems(path) == []


@pytest.fixture
def fake_repo(tmp_path):
    """A minimal repository with one executed chapter, to show the check catches each kind of change."""
    for name in ("src", "data"):
        shutil.copytree(REPO_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "requirements.txt", tmp_path)
    (tmp_path / "book").mkdir()
    path = tmp_path / "book" / "ch.ipynb"
    shutil.copy(CHAPTERS[0], path)
    return tmp_path, path


def test_stale_check_accepts_an_untouched_chapter(fake_repo):
    root, path = fake_repo
    assert book.stale_output_problems(path, repo_root=root) == []


@pytest.mark.parametrize(
    "change",
    ["code cell", "helper", "requirements", "data checksums", "a results file it reads"],
)
def test_stale_check_catches_each_input(fake_repo, change):
    root, path = fake_repo
    (root / "results.json").write_text('{"accuracy": 0.8}')
    nb = nbformat.read(path, as_version=4)
    nb.metadata[book.READS_FILES] = ["results.json"]
    nb.metadata[notebooks.METADATA_KEY]["inputs_sha256"] = book.inputs_digest(nb, root)
    nbformat.write(nb, path)
    assert book.stale_output_problems(path, repo_root=root) == []
    if change == "a results file it reads":
        (root / "results.json").write_text('{"accuracy": 0.9}')
    elif change == "code cell":
        nb = nbformat.read(path, as_version=4)
        next(c for c in nb.cells[1:] if c.cell_type == "code").source += "\n# edited"
        nbformat.write(nb, path)
    elif change == "helper":
        with open(root / "src" / "sftbook" / "data.py", "a") as f:
            f.write("\n# edited\n")
    elif change == "requirements":
        with open(root / "requirements.txt", "a") as f:
            f.write("six==1.16.0\n")
    else:
        with open(root / "data" / "SHA256SUMS", "a") as f:
            f.write("0" * 64 + "  extra.txt\n")
    problems = book.stale_output_problems(path, repo_root=root)
    assert len(problems) == 1 and "stale" in problems[0] and "make execute NB=book/ch.ipynb" in problems[0]


def test_stale_check_catches_unexecuted_and_failed_cells(fake_repo):
    root, path = fake_repo
    nb = nbformat.read(path, as_version=4)
    del nb.metadata[notebooks.METADATA_KEY]
    nbformat.write(nb, path)
    assert "never executed" in book.stale_output_problems(path, repo_root=root)[0]

    nb = nbformat.read(CHAPTERS[0], as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    code[2].execution_count = None
    code[3].outputs.append(nbformat.v4.new_output("error", ename="ValueError", evalue="x", traceback=[]))
    nbformat.write(nb, path)
    problems = " ".join(book.stale_output_problems(path, repo_root=root))
    assert "in order" in problems and "error" in problems


def test_glue_stores_numpy_scalars_as_python_numbers(monkeypatch):
    stored = {}
    monkeypatch.setattr("myst_nb.glue", lambda name, value, display: stored.update({name: value}))
    book.glue("x", np.float64(0.25))
    assert type(stored["x"]) is float and stored["x"] == 0.25


@pytest.mark.slow
def test_execute_notebook_records_provenance(tmp_path):
    root = tmp_path
    for name in ("src", "data"):
        shutil.copytree(REPO_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "requirements.txt", root)
    (root / "book").mkdir()
    nb = nbformat.v4.new_notebook()
    bar = {book.WIDGET_VIEW: {"model_id": "bar", "version_major": 2, "version_minor": 0}, "text/plain": "  0%|          | 0/272"}
    nb.cells = [
        nbformat.v4.new_code_cell(f"from IPython.display import display\ndisplay({bar!r}, raw=True)\nx = 6 * 7\nprint(x)"),
        nbformat.v4.new_code_cell("x"),
    ]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    path = root / "book" / "tiny.ipynb"
    nbformat.write(nb, path)
    elapsed = book.execute_notebook(path, timeout=120, repo_root=root)
    done = nbformat.read(path, as_version=4)
    assert [o["text"] for o in done.cells[0].outputs] == ["42\n"]  # the widget (a progress bar) is not stored
    assert "widgets" not in done.metadata
    assert [c.execution_count for c in done.cells] == [1, 2]
    record = done.metadata[notebooks.METADATA_KEY]
    assert record["run_time_s"] == round(elapsed, 1) and record["machine"]["cores"] >= 1
    assert book.stale_output_problems(path, repo_root=root) == []


def test_stale_check_follows_the_prose_a_chapter_reads(fake_repo):
    """Chapter 9 summarises chapters 1-7: editing their text makes its stored outputs stale."""
    root, path = fake_repo
    reader = root / "book" / "reader.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.metadata[book.READS_PROSE_OF] = ["ch"]
    nb.metadata[notebooks.METADATA_KEY]["inputs_sha256"] = book.inputs_digest(nb, root)
    nbformat.write(nb, reader)
    assert book.stale_output_problems(reader, repo_root=root) == []
    read = nbformat.read(path, as_version=4)
    next(c for c in read.cells if c.cell_type == "markdown").source += " An edited sentence."
    nbformat.write(read, path)
    assert "chapters or results it reads" in book.stale_output_problems(reader, repo_root=root)[0]


def test_glued_values_are_read_from_stored_outputs():
    values = notebooks.glued_values(REPO_ROOT / "book" / "04_fine_tuning.ipynb")
    assert 50 < float(values["minilm_acc"]) <= 100 and 50 < float(values["tfidf_acc"]) <= 100


def test_status_page_is_current_and_complete():
    page = (REPO_ROOT / "book" / "status.md").read_text(encoding="utf-8")
    assert page == status.render_status(), "book/status.md is out of date; run `python -m sftbook status` and commit it."
    assert "missing" not in page and "never" not in page
    for chapter in CHAPTERS:
        assert f"{{doc}}`{chapter.stem}`" in page
    assert len(status.HEADLINES) >= 20


def test_status_page_reads_metadata_not_typed_numbers(tmp_path):
    shutil.copytree(REPO_ROOT / "book", tmp_path / "book")
    path = tmp_path / "book" / "05_attention.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.metadata[notebooks.METADATA_KEY]["run_time_s"] = 4321.0
    nbformat.write(nb, path)
    assert "| {doc}`05_attention` | 4,321 s |" in status.render_status(tmp_path / "book")


@pytest.mark.slow
def test_benchmark_runner_times_chapters_into_json(tmp_path):
    out = tmp_path / "results.json"
    committed = (REPO_ROOT / "book" / "01_background.ipynb").read_bytes()
    result = subprocess.run(
        [sys.executable, "benchmarks/run_all.py", "--chapters", "01_background", "--skip-throughput", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert float(results["run time, 01_background"].split()[0]) > 0
    assert (REPO_ROOT / "book" / "01_background.ipynb").read_bytes() == committed  # ran on a copy


def test_each_benchmark_run_is_shown_with_its_own_date_and_machine(tmp_path, monkeypatch):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"run_at": "day one", "machine": "machine A", "results": {"speed": "1.5×"}}))
    second.write_text(json.dumps({"run_at": "day two", "machine": "machine B", "results": {"ratio": "0.9×"}}))
    monkeypatch.setattr(status, "BENCHMARKS", ((first, "bench_a.py"), (tmp_path / "missing.json", "x.py"), (second, "bench_b.py")))
    page = status.render_status()
    assert "From `bench_a.py`, run day one on machine A:" in page and "| speed | 1.5× |" in page
    assert "From `bench_b.py`, run day two on machine B:" in page and "| ratio | 0.9× |" in page
    assert "x.py" not in page


def test_stored_result_reads_a_chapters_glued_value_as_python():
    values = notebooks.glued_values(notebooks.BOOK_DIR / "04_fine_tuning.ipynb")
    accuracy = notebooks.stored_result("04_fine_tuning", "minilm_acc")
    assert isinstance(accuracy, float) and repr(accuracy) == values["minilm_acc"]
    predictions = notebooks.stored_result("04_fine_tuning", "minilm_test_predictions")
    assert set(predictions) <= {"0", "1"} and len(predictions) == 1821
    with pytest.raises(SftbookError, match="stores no result named 'nothing'"):
        notebooks.stored_result("04_fine_tuning", "nothing")
    with pytest.raises(SftbookError, match="No chapter"):
        notebooks.stored_result("99_missing", "minilm_acc")


def test_a_share_is_never_rounded_to_all_or_nothing():
    assert count_and_share(1999, 2000) == "1,999 of 2,000 (99.95%)"
    assert count_and_share(2000, 2000) == "2,000 of 2,000 (100.0%)"
    assert count_and_share(1, 100_000) == "1 of 100,000 (0.001%)"
    assert count_and_share(173, 200) == "173 of 200 (86.5%)"
    with pytest.raises(SftbookError, match="pass counts"):
        count_and_share(3, 2)


def test_the_status_page_never_rounds_a_percentage_to_all_or_nothing():
    assert status._format("99.97", "{:.1f}", "exact match (%)") == "99.97"
    assert status._format("100.0", "{:.2f}", "exact match (%)") == "100.00"
    assert status._format("0.04", "{:.1f}", "share (%)") == "0.04"
    assert status._format("88.24", "{:.1f}", "accuracy (%)") == "88.2"
    assert status._format("5.613", "{:.1f}×", "latency ratio") == "5.6×"
