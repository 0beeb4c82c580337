"""What a reader sees in the published pages: whole tables, no local paths or progress bars, headings in
Markdown, citations that resolve, a figure in every chapter."""

from __future__ import annotations

import dataclasses
import html
import re
import tempfile
from pathlib import Path

import matplotlib
import nbformat
import pandas as pd
import pytest
from conftest import REPO_ROOT
from matplotlib import font_manager

from sftbook import metrics, notebooks, plotting, status

CHAPTERS = notebooks.chapters()
PANDAS_DEFAULT_COLWIDTH = 50  # pandas cuts a longer cell to about 47 characters and "..."
TABLE_CELL = re.compile(r"<t[dh][^>]*>(.*?)</t[dh]>", re.S)
PROGRESS = re.compile(r"\d+%\|| \d+(\.\d+)?(it/s|s/it)\]|: [\d,]+/[\d,]+ \(\d+ s\)")
FONT_WARNING = re.compile(r"findfont: Font family .* not found")
CITATION = re.compile(r"\{cite(?::\w+)?\}`([^`]+)`")
UNLINKED_CITATION = re.compile(r"\b[A-Z][a-z]+ et al\.? \(\d{4}\)")
HEADING_IN_A_COMMENT = re.compile(r"^#\s*#{1,6}\s+\S", re.M)


def outputs(path: Path):
    """``(cell index, output)`` for every stored output of a chapter."""
    for index, cell in enumerate(notebooks.read(path).cells):
        if cell.cell_type == "code":
            for output in cell.get("outputs", []):
                yield index, output


def output_text(output) -> str:
    if "text" in output:
        return output["text"]
    data = output.get("data", {})
    return "\n".join(data.get(kind, "") for kind in ("text/plain", "text/html", "text/markdown"))


def truncated_cells(table_html: str) -> list[str]:
    """The cells of an HTML table that pandas shortened: a '...' row or column, or a text cut at the default width."""
    cells = [html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in TABLE_CELL.findall(table_html)]
    cut = [cell for cell in cells if cell.endswith("...") and PANDAS_DEFAULT_COLWIDTH - 4 <= len(cell) <= PANDAS_DEFAULT_COLWIDTH]
    return cut + [cell for cell in cells if cell == "..."]


def test_truncation_detector_flags_what_pandas_cuts_by_default():
    long = pd.DataFrame({"text": ["a sentence that is long enough to be cut by pandas at fifty characters"]})
    wide = pd.DataFrame([[0] * 30])
    with pd.option_context("display.max_colwidth", PANDAS_DEFAULT_COLWIDTH, "display.max_columns", 20):
        assert truncated_cells(long._repr_html_()) and truncated_cells(wide._repr_html_())
    with pd.option_context("display.max_colwidth", None, "display.max_columns", None):
        assert not truncated_cells(long._repr_html_()) and not truncated_cells(wide._repr_html_())


def test_book_style_shows_whole_tables():
    with pd.option_context("display.max_colwidth", 50, "display.max_columns", 20):
        plotting.use_book_style()
        assert pd.get_option("display.max_colwidth") is None and pd.get_option("display.max_columns") is None


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_no_stored_table_is_truncated(path):
    problems = [
        (index, truncated_cells(output["data"]["text/html"]))
        for index, output in outputs(path)
        if "<table" in output.get("data", {}).get("text/html", "")
    ]
    assert not [p for p in problems if p[1]], f"{path.name}: tables cut by pandas in cells {problems}; call plotting.use_book_style()"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_no_stored_output_shows_a_local_path_a_progress_bar_or_a_font_warning(path):
    local = {str(Path.home()), tempfile.gettempdir(), str(REPO_ROOT)}
    found = [
        (index, line)
        for index, output in outputs(path)
        for line in output_text(output).splitlines()
        if any(folder in line for folder in local) or PROGRESS.search(line) or FONT_WARNING.search(line)
    ]
    assert not found, f"{path.name}: local paths, progress lines or font warnings stored: {found[:3]}"


def test_progress_and_font_detectors_flag_what_they_look_for():
    assert PROGRESS.search("fine-tuning:  40%|████      | 4/10 [00:01<00:02,  2.50it/s]")
    assert PROGRESS.search("pretraining BERT-nano: 400/2,000 (2 s)")
    assert not PROGRESS.search("accuracy 88.2% on 872 sentences (3/4 of them long)")
    assert FONT_WARNING.search("findfont: Font family ['cmmi10'] not found. Falling back to DejaVu Sans.")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_no_code_cell_holds_a_markdown_heading(path):
    cells = notebooks.read(path).cells
    found = [index for index, cell in enumerate(cells) if cell.cell_type == "code" and HEADING_IN_A_COMMENT.search(cell.source)]
    assert not found, f"{path.name}: headings written as comments in code cells {found}; move them to a Markdown cell"


def book_texts() -> dict[str, str]:
    """The prose of every chapter and page, by file name."""
    texts = {p.name: p.read_text(encoding="utf-8") for p in (REPO_ROOT / "book").glob("*.md")}
    for path in CHAPTERS:
        texts[path.name] = "\n".join(c.source for c in notebooks.read(path).cells if c.cell_type == "markdown")
    return texts


def test_every_citation_resolves_and_every_reference_is_cited():
    bibliography = (REPO_ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    entries = set(re.findall(r"^@\w+\{([^,]+),", bibliography, re.M))
    cited = {key.strip() for text in book_texts().values() for keys in CITATION.findall(text) for key in keys.split(",")}
    assert cited - entries == set(), "cited but not in book/references.bib"
    assert entries - cited == set(), "in book/references.bib but never cited"


def test_authors_are_cited_with_the_cite_role_not_typed():
    typed = {name: UNLINKED_CITATION.findall(text) for name, text in book_texts().items()}
    assert not {name: found for name, found in typed.items() if found}, "write {cite:t}`key` and add the entry to references.bib"


def shows_a_figure(path: Path) -> bool:
    return any("image/png" in output.get("data", {}) for _, output in outputs(path))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_chapter_has_a_figure(path):
    assert shows_a_figure(path), f"{path.name} shows no figure"


def test_figure_detector_flags_a_chapter_whose_plot_was_not_stored(tmp_path):
    notebook = notebooks.read(CHAPTERS[0])
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if "image/png" not in o.get("data", {})]
    nbformat.write(notebook, tmp_path / "no_figure.ipynb")
    assert shows_a_figure(CHAPTERS[0]) and not shows_a_figure(tmp_path / "no_figure.ipynb")


def test_heading_and_citation_detectors_flag_what_they_look_for():
    assert HEADING_IN_A_COMMENT.search("x = 1\n\n# ## What attention costs\n# For a sequence of n tokens")
    assert not HEADING_IN_A_COMMENT.search("# the fused kernel does not return weights\nx = 1  # ## not at a line start")
    assert UNLINKED_CITATION.search("Wettig et al. (2023) found higher rates")
    assert CITATION.findall("as {cite:p}`hu2022lora,devlin2019bert` and {cite:t}`wettig2023mask`") == ["hu2022lora,devlin2019bert", "wettig2023mask"]


def test_a_font_cache_from_another_installation_is_rebuilt(monkeypatch, tmp_path):
    monkeypatch.setattr(matplotlib, "get_cachedir", lambda: str(tmp_path))
    fonts = font_manager.fontManager.ttflist
    ghost = dataclasses.replace(fonts[0], fname=str(tmp_path / "deleted-venv" / "DejaVuSans.ttf"))
    monkeypatch.setattr(font_manager.fontManager, "ttflist", [ghost, *fonts])
    assert plotting.refresh_stale_font_cache() is True
    assert all(Path(font.fname).exists() for font in font_manager.fontManager.ttflist)
    assert list(tmp_path.glob("fontlist-*.json")) and plotting.refresh_stale_font_cache() is False
    system_only = [font for font in font_manager.fontManager.ttflist if "mpl-data" not in font.fname]  # a distribution's matplotlib
    monkeypatch.setattr(font_manager.fontManager, "ttflist", system_only)
    assert plotting.refresh_stale_font_cache() is True
    assert font_manager.findfont("cmmi10", fallback_to_default=False).endswith("cmmi10.ttf")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_a_chapter_that_speaks_of_the_article_cites_it(path):
    assert not notebooks.mentions_article_without_citing(path), f"{path.name} speaks of the article without {{cite}}`zenSftArticle`"


def test_article_citation_check_flags_a_chapter_that_quotes_the_article_uncited(tmp_path):
    def chapter(markdown: str) -> Path:
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.ipynb"
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(markdown)]), path)
        return path

    assert notebooks.mentions_article_without_citing(chapter("The article's formula drops a bracket."))
    assert notebooks.mentions_article_without_citing(chapter("As the source article says, fine-tuning adapts."))
    assert not notebooks.mentions_article_without_citing(chapter("The article {cite:p}`zenSftArticle` uses Adam."))
    assert not notebooks.mentions_article_without_citing(chapter("Exact match ignores the articles a, an and the."))


def test_the_status_page_headlines_only_values_its_chapters_prose_shows(tmp_path):
    assert status.headlines_not_in_prose() == []
    source = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("Means: {glue:text}`tiny_random_seed_mean:.1f`%.")])
    nbformat.write(source, tmp_path / "04_fine_tuning.ipynb")
    planted = (
        ("04_fine_tuning", "tiny_random_seed_mean", "the mean the chapter concludes from", "{:.1f}"),
        ("04_fine_tuning", "tiny_random_acc", "a single run the chapter draws no conclusion from", "{:.1f}"),
    )
    assert status.headlines_not_in_prose(planted, tmp_path) == ["04_fine_tuning:tiny_random_acc"]


def test_chapter_10_s_final_summaries_have_no_repetition_loop():
    """The summaries chapter 10 presents after its decoding fix (greedy ones are shown looping on purpose)."""
    summaries = notebooks.stored_result("10_applications", "abs_final_summaries")
    assert summaries and all(isinstance(summary, str) for summary in summaries)
    assert [summary for summary in summaries if metrics.repeats_itself(summary)] == []
