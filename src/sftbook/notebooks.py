"""Reading the book's stored chapters: where they are, in which order, and the values they glued.

Chapter 9 reads the book's own prose, and the status page reads every chapter's results; both go
through here, so the chapters are read one way only.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parents[2]
BOOK_DIR = REPO_ROOT / "book"
METADATA_KEY = "sftbook"  # notebook metadata written by `make execute`: digest, run time, machine


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
