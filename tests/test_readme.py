"""The README describes the tree as it is: the package's floors and the repository's layout."""

from __future__ import annotations

import re
import subprocess

import pytest
from conftest import REPO_ROOT

import sftbook

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def table_after(heading_row: str, text: str = README) -> list[list[str]]:
    """The rows of the Markdown table whose header row starts with ``heading_row``, as lists of cells."""
    lines = text[text.index(heading_row) :].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def names_in(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_the_floor_table_is_sftbook_floors():
    table = {int(row[0]): tuple(names_in(row[1])) for row in table_after("| floor | modules |")}
    assert table == sftbook.FLOORS, "update the README's floor table to match sftbook.FLOORS"


def test_the_table_reader_sees_a_missing_module():
    edited = README.replace("`errors`, `codegraph`", "`errors`")
    table = {int(row[0]): tuple(names_in(row[1])) for row in table_after("| floor | modules |", edited)}
    assert table != sftbook.FLOORS


def test_the_layout_table_names_every_tracked_top_level_path_and_benchmark_script():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    top = {path.split("/")[0] + ("/" if "/" in path else "") for path in tracked} - {".gitattributes", ".gitignore", "README.md"}
    layout = " ".join(" ".join(names_in(row[0]) + names_in(row[1])) for row in table_after("| path | what |"))
    named = set(re.findall(r"[\w./-]+", layout))
    named |= {name.split("/")[0] + "/" for name in named if "/" in name}  # `src/sftbook/` names src/
    assert sorted(top - named) == [], "add these to the README's layout table"
    scripts = {path.split("/")[1] for path in tracked if path.startswith("benchmarks/") and path.endswith(".py")}
    assert sorted(scripts - named) == [], "name these benchmark scripts in the README's layout table"
