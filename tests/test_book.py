"""The book's own invariants: bootstrap cells, exercises, table of contents, fresh stored outputs."""

import ast
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
from toys import reworded

from sftbook import artifacts, book, notebooks, status
from sftbook.book import count_and_share
from sftbook.errors import SftbookError

CHAPTERS = notebooks.chapters()


def test_chapters_are_numbered_without_gaps_in_the_order_of_the_table_of_contents():
    numbers = [int(p.name.split("_")[0]) for p in CHAPTERS]
    assert numbers == list(range(1, len(CHAPTERS) + 1)) and len(CHAPTERS) >= 10
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text(encoding="utf-8"))
    listed = [c["file"] for part in toc["parts"] for c in part["chapters"] if c["file"].startswith("book/") and c["file"][5:7].isdigit()]
    assert listed == [f"book/{p.stem}" for p in CHAPTERS]


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


@pytest.mark.slow  # the real chapters' check belongs to `make test`: `make check` stays green while helpers are edited
@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_stored_outputs_come_from_the_current_code(path):
    """The stale-output check: fails when anything a chapter's outputs depend on changed since `make execute`."""
    assert book.stale_output_problems(path) == []


READER = "01_background"  # the chapter the fake repository holds


@pytest.fixture
def fake_repo(tmp_path):
    """A repository with one executed chapter and a result file, to show the check catches each kind of change."""
    for name in ("src", "data"):
        shutil.copytree(REPO_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "requirements.txt", tmp_path)
    (tmp_path / "book").mkdir()
    path = tmp_path / "book" / "ch.ipynb"
    shutil.copy(notebooks.BOOK_DIR / f"{READER}.ipynb", path)
    (tmp_path / "results.json").write_text('{"accuracy": 0.8}')
    record_reads(path, tmp_path, {"files": ["results.json", "data/stsa.binary.dev"], "values": [], "prose": []})
    return tmp_path, path


def record_reads(path, root, reads):
    """Store ``path``'s provenance as if `make execute` had seen it read ``reads``."""
    nb = nbformat.read(path, as_version=4)
    inputs = book.chapter_inputs(nb, reads, root)
    nb.metadata[notebooks.METADATA_KEY].update(inputs=inputs, inputs_sha256=book.inputs_digest(inputs))
    nbformat.write(nb, path)


def edit_definition(root, module, name, body_line):
    """Append ``body_line`` to the body of the top-level function ``module.name`` in the fake repository."""
    source = root / "src" / "sftbook" / f"{module}.py"
    lines = source.read_text().splitlines()
    tree = ast.parse("\n".join(lines))
    node = next(n for n in tree.body if getattr(n, "name", None) == name)
    lines.insert(node.end_lineno, f"    {body_line}")
    source.write_text("\n".join(lines) + "\n")


def append_to_first_code_cell(path, text):
    nb = nbformat.read(path, as_version=4)
    next(c for c in nb.cells[1:] if c.cell_type == "code").source += text
    nbformat.write(nb, path)


def replace_in_requirements(root, old, new):
    requirements = root / "requirements.txt"
    requirements.write_text(requirements.read_text().replace(old, new))


def test_stale_check_accepts_an_untouched_chapter(fake_repo):
    root, path = fake_repo
    assert book.stale_output_problems(path, repo_root=root) == []


@pytest.mark.parametrize(
    "change, named",
    [
        ("code cell", "code cells changed"),
        ("a definition it reaches", "sftbook.data.load changed"),
        ("a runtime pin", "requirement torch 2.13.0 -> 2.99.0"),
        ("a file it read", "file results.json changed"),
        ("a data file it read", "file data/stsa.binary.dev changed"),
    ],
)
def test_stale_check_names_each_changed_input(fake_repo, change, named):
    root, path = fake_repo
    if change == "code cell":
        append_to_first_code_cell(path, "\ny = 1")
    elif change == "a definition it reaches":
        edit_definition(root, "data", "load", "assert True")
    elif change == "a runtime pin":
        replace_in_requirements(root, "torch==2.13.0", "torch==2.99.0")
    elif change == "a file it read":
        (root / "results.json").write_text('{"accuracy": 0.9}')
    else:
        with open(root / "data" / "stsa.binary.dev", "a") as f:
            f.write("1 an added sentence\n")
    problems = book.stale_output_problems(path, repo_root=root)
    assert len(problems) == 1 and named in problems[0] and "make execute-stale" in problems[0], problems


@pytest.mark.parametrize(
    "change",
    [
        "docstrings and comments everywhere",
        "a definition it does not reach",
        "a build-only pin",
        "a data set added",
        "a comment in a cell",
    ],
)
def test_stale_check_ignores_what_the_outputs_do_not_depend_on(fake_repo, change):
    root, path = fake_repo
    if change == "docstrings and comments everywhere":
        for source in (root / "src" / "sftbook").glob("*.py"):
            source.write_text(reworded(source.read_text()))
    elif change == "a definition it does not reach":
        edit_definition(root, "llm", "load_smollm2", "assert True")
    elif change == "a build-only pin":
        replace_in_requirements(root, "pytest==", "pytest==0.0.1 # was ")
    elif change == "a data set added":
        (root / "data" / "squad.json").write_text("{}")
        with open(root / "data" / "SHA256SUMS", "a") as f:
            f.write(f"{artifacts.sha256_file(root / 'data' / 'squad.json')}  squad.json\n")
    else:
        append_to_first_code_cell(path, "\n# a comment changes no output")
    assert book.stale_output_problems(path, repo_root=root) == []


def test_stale_check_catches_unexecuted_and_failed_cells(fake_repo):
    root, path = fake_repo
    nb = nbformat.read(path, as_version=4)
    del nb.metadata[notebooks.METADATA_KEY]
    nbformat.write(nb, path)
    assert "never executed" in book.stale_output_problems(path, repo_root=root)[0]

    nb = nbformat.read(notebooks.BOOK_DIR / f"{READER}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    code[2].execution_count = None
    code[3].outputs.append(nbformat.v4.new_output("error", ename="ValueError", evalue="x", traceback=[]))
    nbformat.write(nb, path)
    record_reads(path, root, {})
    problems = " ".join(book.stale_output_problems(path, repo_root=root))
    assert "in order" in problems and "error" in problems


def test_glue_stores_numpy_scalars_as_python_numbers(monkeypatch):
    stored = {}
    monkeypatch.setattr("myst_nb.glue", lambda name, value, display: stored.update({name: value}))
    book.glue("x", np.float64(0.25))
    assert type(stored["x"]) is float and stored["x"] == 0.25


@pytest.mark.slow
def test_execute_notebook_records_what_the_chapter_reads(tmp_path, monkeypatch):
    root = tmp_path
    for name in ("src", "data"):
        shutil.copytree(REPO_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "requirements.txt", root)
    (root / "book").mkdir()
    shutil.copy(notebooks.BOOK_DIR / "04_fine_tuning.ipynb", root / "book")
    (root / "results.json").write_text('{"accuracy": 0.8}')
    monkeypatch.setenv("SFTBOOK_DATA_DIR", str(root / "data"))  # the kernel inherits it: it reads the copy under root
    nb = nbformat.v4.new_notebook()
    bar = {book.WIDGET_VIEW: {"model_id": "bar", "version_major": 2, "version_minor": 0}, "text/plain": "  0%|          | 0/272"}
    nb.cells = [
        nbformat.v4.new_code_cell(f"from IPython.display import display\ndisplay({bar!r}, raw=True)\nx = 6 * 7\nprint(x)"),
        nbformat.v4.new_code_cell(
            "import json, pathlib\nfrom sftbook import data, notebooks\n"
            "questions = data.read_lines('TREC.test.all')\n"
            "accuracy = json.loads(pathlib.Path('../results.json').read_text())['accuracy']\n"
            "quoted = notebooks.stored_result('04_fine_tuning', 'minilm_acc')\n"
            "open('../written.txt', 'w').write('a file the chapter writes is not an input')\nx"
        ),
    ]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb.metadata["sftbook_reads_files"] = ["a hand-kept list, replaced by the recording"]
    path = root / "book" / "tiny.ipynb"
    nbformat.write(nb, path)
    elapsed = book.execute_notebook(path, timeout=120, repo_root=root)
    done = nbformat.read(path, as_version=4)
    assert [o["text"] for o in done.cells[0].outputs] == ["42\n"]  # the widget (a progress bar) is not stored
    assert "widgets" not in done.metadata and "sftbook_reads_files" not in done.metadata
    assert [c.execution_count for c in done.cells] == [1, 2]  # the recorder ran before, outside the count
    record = done.metadata[notebooks.METADATA_KEY]
    assert record["run_time_s"] == round(elapsed, 1) and record["machine"]["cores"] >= 1
    assert list(record["inputs"]["files"]) == ["data/TREC.test.all", "results.json"]  # not data/SHA256SUMS, which it also opened
    assert list(record["inputs"]["values"]) == ["04_fine_tuning:minilm_acc"]
    assert "notebooks.stored_result" in record["inputs"]["code"] and "data.load" not in record["inputs"]["code"]
    assert book.stale_output_problems(path, repo_root=root) == []
    (root / "results.json").write_text('{"accuracy": 0.9}')
    assert "file results.json changed" in book.stale_output_problems(path, repo_root=root)[0]


def test_stale_check_follows_the_values_and_prose_a_chapter_reads(fake_repo):
    """Chapter 10 summarises chapters 1-7 and chapter 8 quotes chapter 4: what they read makes them stale, nothing else."""
    root, path = fake_repo
    reader = root / "book" / "reader.ipynb"
    shutil.copy(path, reader)
    glued = sorted(notebooks.glued_values(path))
    record_reads(reader, root, {"files": [], "values": [f"ch:{glued[0]}"], "prose": ["ch"]})
    assert book.stale_output_problems(reader, repo_root=root) == []
    source = nbformat.read(path, as_version=4)
    change_glued_value(source, glued[1])  # another value: the reader did not read it
    nbformat.write(source, path)
    shown_in_prose = {name for cell in source.cells if cell.cell_type == "markdown" for name in notebooks.GLUE_ROLE.findall(cell.source)}
    assert book.stale_output_problems(reader, repo_root=root) == [] or glued[1] in shown_in_prose
    next(c for c in source.cells if c.cell_type == "markdown").source += " An edited sentence."
    nbformat.write(source, path)
    assert "prose of ch changed" in book.stale_output_problems(reader, repo_root=root)[0]
    record_reads(reader, root, {"files": [], "values": [f"ch:{glued[0]}"], "prose": []})
    change_glued_value(source, glued[0])
    nbformat.write(source, path)
    assert f"value ch:{glued[0]} changed" in book.stale_output_problems(reader, repo_root=root)[0]


def change_glued_value(notebook, name):
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("metadata", {}).get("scrapbook", {}).get("name") == name:
                for kind in [k for k in output["data"] if k.endswith("text/plain")]:
                    output["data"][kind] = "'changed'"


def test_execution_order_puts_a_chapter_after_the_chapters_it_reads(fake_repo):
    root, path = fake_repo
    first, second = root / "book" / "a_first.ipynb", root / "book" / "z_last.ipynb"
    shutil.copy(path, first)
    shutil.copy(path, second)
    record_reads(first, root, {"values": ["z_last:x"]})
    assert [p.name for p in book.execution_order([first, second])] == ["z_last.ipynb", "a_first.ipynb"]
    record_reads(second, root, {"prose": ["a_first"]})
    with pytest.raises(SftbookError, match="in a circle"):
        book.execution_order([first, second])


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
