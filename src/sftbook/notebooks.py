"""Reading the book's stored chapters: where they are, in which order, and the values they glued.

Chapter 10 reads the book's own prose, chapters quote each other's results, and the status page reads
every chapter's results; all go through here, so the chapters are read one way only.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import nbformat

from sftbook.errors import SftbookError

REPO_ROOT = Path(__file__).resolve().parents[2]
BOOK_DIR = REPO_ROOT / "book"
METADATA_KEY = "sftbook"  # notebook metadata written by `make execute`: digest, run time, machine
GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([^`:]+)")  # the name in a {glue:text}`name:format` of the prose
ARTICLE_CITE_KEY = "zenSftArticle"  # the source article's entry in book/references.bib
ARTICLE_MENTION = re.compile(r"\bthe (?:source )?article\b|\barticle's\b", re.IGNORECASE)


def chapters(book_dir: Path = BOOK_DIR) -> list[Path]:
    """Every chapter notebook, in reading order."""
    return sorted(p for p in book_dir.glob("*.ipynb"))


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def glued_values(path: Path) -> dict[str, str]:
    """Every value a stored notebook glued (``glue("name", value)``), as the text myst-nb shows."""
    values = {}
    for cell in read(path).cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            record = output.get("metadata", {}).get("scrapbook")
            if record:
                values[record["name"]] = output["data"].get(record["mime_prefix"] + "text/plain", "")
    return values


def stored_result(chapter: str, name: str, book_dir: Path = BOOK_DIR) -> Any:
    """The value ``chapter`` (e.g. ``"04_fine_tuning"``) glued as ``name``: how one chapter quotes another's result.

    A run under ``make execute`` records each value read this way (:func:`sftbook.book.record_reads`), so
    the quoting chapter's outputs go stale when the quoted value changes.
    """
    path = book_dir / f"{chapter}.ipynb"
    if not path.is_file():
        raise SftbookError(f"No chapter {chapter!r} in {book_dir}; give a notebook name from book/, such as '04_fine_tuning'.")
    values = glued_values(path)
    if name not in values:
        raise SftbookError(f"{path.name} stores no result named {name!r}; run `make execute NB=book/{path.name}` first.")
    return ast.literal_eval(values[name])


def prose(path: Path) -> str:
    """A chapter's Markdown cells, joined: what a reader reads besides the outputs."""
    return "\n\n".join(cell.source for cell in read(path).cells if cell.cell_type == "markdown")


def mentions_article_without_citing(path: Path) -> bool:
    """Whether a chapter's prose speaks of the source article but never cites it (``{cite}`zenSftArticle```)."""
    text = prose(path)
    return bool(ARTICLE_MENTION.search(text)) and ARTICLE_CITE_KEY not in text
