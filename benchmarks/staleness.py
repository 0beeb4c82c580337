"""How many chapters an edit to a helper stales: for the most-used public function of each module, the
chapters whose stored outputs depend on it (their cells reach it through the package's reference graph,
``book.chapter_code``, the same set the stale-output check hashes).

"Most-used" is counted from the code: the package definitions and chapters whose code names the function.
A chapter that only reads another chapter's glued values is not counted: it goes stale only if the
re-executed chapter's values change.

    python benchmarks/staleness.py [--out benchmarks/staleness.json]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import statistics
from pathlib import Path

from sftbook import artifacts, book, codegraph, notebooks


def public_functions(module: str) -> list[str]:
    loaded = importlib.import_module(f"{codegraph.PACKAGE}.{module}")
    return sorted(
        name for name, obj in vars(loaded).items() if not name.startswith("_") and inspect.isfunction(obj) and obj.__module__ == loaded.__name__
    )


def staleness_table() -> list[dict]:
    graph = codegraph.package_graph()
    chapters = {path.stem: notebooks.read(path) for path in notebooks.chapters()}
    reach = {name: book.chapter_code(nb) for name, nb in chapters.items()}
    named_by_chapter = {name: codegraph.references_in_code([c.source for c in nb.cells if c.cell_type == "code"]) for name, nb in chapters.items()}
    rows = []
    for module in sorted(graph):
        uses = {}
        for function in public_functions(module):
            ref = (module, function)
            in_package = sum(ref in d.references for m in graph for n, d in graph[m].items() if (m, n) != ref)
            uses[function] = in_package + sum(ref in named for named in named_by_chapter.values())
        if not uses:
            continue
        function = max(sorted(uses), key=uses.get)  # most uses; the first name alphabetically on a tie
        stale = sorted(name for name, refs in reach.items() if (module, function) in refs)
        rows.append({"module": module, "function": function, "uses": uses[function], "chapters staled": len(stale), "which": stale})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table as JSON here")
    args = parser.parse_args()
    rows = staleness_table()
    print("| module | most-used public function | uses | chapters an edit stales | which |")
    print("|---|---|---:|---:|---|")
    for row in rows:
        which = ", ".join(name[:2] for name in row["which"]) or "none"
        print(f"| {row['module']} | `{row['function']}` | {row['uses']} | {row['chapters staled']} | {which} |")
    median = statistics.median(row["chapters staled"] for row in rows)
    print(f"\nmedian over {len(rows)} modules: {median:g} chapters")
    if args.out:
        artifacts.atomic_write_text(args.out, json.dumps({"median": median, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
