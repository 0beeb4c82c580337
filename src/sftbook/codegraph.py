"""What code an artifact or a chapter runs: the package's reference graph, hashed without docstrings or comments.

A cached model is named after the code that trains it (:func:`sftbook.artifacts.cache_key`) and a chapter's
stored outputs are tied to the code it runs (:mod:`sftbook.book`). Both ask the same question — which of the
package's top-level definitions can this entry point reach? — and both hash each reached definition in a
normal form: its syntax tree without docstrings (comments never reach the tree), so rewording a docstring or
renumbering a chapter in a comment re-keys no model and stales no chapter.

The graph is read from the source, not traced: a definition refers to another through a name in its own
module, a name imported ``from sftbook.<module> import name``, or an attribute of an imported module
(``data.load``). A bare module (``(data, tokenization)``) refers to all of that module. Code that finds a
function by a computed name (``getattr(module, name)``) escapes the graph; :func:`called_definitions`
traces a real run, and the tests check that nothing it sees lies outside the graph.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

PACKAGE = "sftbook"
PACKAGE_DIR = Path(__file__).resolve().parent
WHOLE_MODULE = "*"  # a reference to a module as a value: every definition in it
PREAMBLE = "<module>"  # a module's top-level statements that bind no name (imports aside)

Ref = tuple[str, str]  # (module, top-level name), e.g. ("data", "load")


@dataclass(frozen=True)
class Definition:
    fingerprint: str  # sha256 of the normalised syntax tree
    references: frozenset[Ref]


def strip_docstrings(tree: ast.AST) -> ast.AST:
    """Remove the docstring of every module, class and function in ``tree`` (in place) and return it."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def normal_form(nodes: Iterable[ast.AST]) -> str:
    """The nodes' syntax trees as text, without docstrings, line numbers or comments."""
    return "\n".join(ast.dump(strip_docstrings(node)) for node in nodes)


def _fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


EMPTY = _fingerprint("")  # a module whose preamble holds nothing


def package_aliases(tree: ast.Module, modules: set[str]) -> dict[str, tuple[str, str | None]]:
    """Names bound by the imports of ``tree`` that point into the package: name -> (module, definition).

    ``(module, None)`` is a module; ``("", None)`` the package itself (``import sftbook``).
    """
    aliases: dict[str, tuple[str, str | None]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] != PACKAGE:
                    continue
                if alias.asname and len(parts) == 2 and parts[1] in modules:
                    aliases[alias.asname] = (parts[1], None)
                else:  # `import sftbook` or `import sftbook.data`: both bind the package
                    aliases[alias.asname or PACKAGE] = ("", None)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
            parts = node.module.split(".")
            for alias in node.names:
                bound = alias.asname or alias.name
                if len(parts) == 1:
                    aliases[bound] = (alias.name, None) if alias.name in modules else ("__init__", alias.name)
                elif parts[1] in modules:
                    aliases[bound] = (parts[1], alias.name)
    return aliases


class _ReferenceFinder(ast.NodeVisitor):
    """Collects the package definitions a piece of code names."""

    def __init__(self, module: str, local_names: set[str], aliases: dict[str, tuple[str, str | None]], modules: set[str]):
        self.module, self.local_names, self.aliases, self.modules = module, local_names, aliases, modules
        self.found: set[Ref] = set()

    def _resolve(self, parts: list[str]) -> Ref | None:
        head, rest = parts[0], parts[1:]
        if head in self.aliases:
            module, name = self.aliases[head]
            if module == "":  # the package: sftbook.<module>.<name>
                if not rest or rest[0] not in self.modules:
                    return None
                module, rest = rest[0], rest[1:]
                name = None
            if name is not None:
                return (module, name)
            return (module, rest[0]) if rest else (module, WHOLE_MODULE)
        if head in self.local_names:
            return (self.module, head)
        return None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        parts, inner = [node.attr], node.value
        while isinstance(inner, ast.Attribute):
            parts.insert(0, inner.attr)
            inner = inner.value
        if isinstance(inner, ast.Name) and (ref := self._resolve([inner.id, *parts])):
            self.found.add(ref)
            return
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if ref := self._resolve([node.id]):
            self.found.add(ref)


def _bound_names(statement: ast.stmt) -> list[str]:
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [statement.name]
    targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target] if isinstance(statement, ast.AnnAssign) else []
    names = []
    for target in targets:  # `a = 1` and `a, b = 1, 2`
        names += [t.id for t in (target.elts if isinstance(target, ast.Tuple) else [target]) if isinstance(t, ast.Name)]
    return names


def module_definitions(module: str, source: str, modules: set[str]) -> dict[str, Definition]:
    """Each top-level name of a module's source with its fingerprint and references.

    Statements that bind no name (a setting applied at import) form the module's preamble, which every
    definition of the module refers to. Imports are not code here: an import from the package is an edge of
    the graph, and what a third-party name does is pinned by ``requirements.txt``.
    """
    tree = ast.parse(source)
    aliases = package_aliases(tree, modules)
    statements: dict[str, list[ast.stmt]] = {PREAMBLE: []}
    for statement in tree.body:
        names = _bound_names(statement)
        if names:
            for name in names:
                statements.setdefault(name, []).append(statement)
        elif not isinstance(statement, ast.Import | ast.ImportFrom) and not (
            isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant) and isinstance(statement.value.value, str)
        ):
            statements[PREAMBLE].append(statement)
    local = set(statements) - {PREAMBLE}
    definitions = {}
    for name, nodes in statements.items():
        finder = _ReferenceFinder(module, local, aliases, modules)
        for node in nodes:
            finder.visit(node)
        references = finder.found - {(module, name)}
        if name != PREAMBLE:
            references.add((module, PREAMBLE))
        definitions[name] = Definition(_fingerprint(normal_form(nodes)), frozenset(references))
    return definitions


def _source_files(package_dir: Path) -> tuple[tuple[str, int, int], ...]:
    return tuple((p.stem, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(package_dir.glob("*.py")) if p.stem != "__main__")


@functools.lru_cache(maxsize=8)
def _graph(package_dir: Path, stamp: tuple) -> dict[str, dict[str, Definition]]:
    modules = {name for name, _, _ in stamp}
    return {name: module_definitions(name, (package_dir / f"{name}.py").read_text(encoding="utf-8"), modules) for name in modules}


def package_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, dict[str, Definition]]:
    """module -> top-level name -> :class:`Definition`, for every module of the package (re-read when a file changes)."""
    return _graph(Path(package_dir), _source_files(Path(package_dir)))


def reachable(entries: Iterable[Ref], package_dir: Path = PACKAGE_DIR, exclude: frozenset[Ref] = frozenset()) -> set[Ref]:
    """Every definition that ``entries`` reach through the graph, the entries included, not passing through ``exclude``."""
    graph = package_graph(package_dir)
    seen: set[Ref] = set()
    todo = list(entries)
    while todo:
        module, name = todo.pop()
        if (module, name) in seen or module not in graph or (module, name) in exclude:
            continue
        if name == WHOLE_MODULE:
            todo += [(module, n) for n in graph[module]]
            seen.add((module, name))
            continue
        definition = graph[module].get(name)
        if definition is None:  # a name the module imports from elsewhere in the package: follow the import
            tree_aliases = _reexports(package_dir, module)
            if name in tree_aliases:
                target_module, target_name = tree_aliases[name]
                todo.append((target_module, target_name or WHOLE_MODULE))
            continue
        seen.add((module, name))
        todo += definition.references
    return {ref for ref in seen if ref[1] != WHOLE_MODULE}


def _reexports(package_dir: Path, module: str) -> dict[str, tuple[str, str | None]]:
    modules = set(package_graph(package_dir))
    return package_aliases(ast.parse((package_dir / f"{module}.py").read_text(encoding="utf-8")), modules)


def fingerprints(refs: Iterable[Ref], package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """``"module.name" -> fingerprint`` for the given definitions, sorted by name (an empty preamble left out)."""
    graph = package_graph(package_dir)
    return {f"{m}.{n}": graph[m][n].fingerprint for m, n in sorted(refs) if graph[m][n].fingerprint != EMPTY}


def entry_point(obj: Any) -> Ref:
    """The definition a function, class or module of the package is: ``fine_tune`` -> ``("finetuning", "fine_tune")``."""
    if isinstance(obj, ModuleType):
        module, name = obj.__name__, WHOLE_MODULE
    else:
        module, name = getattr(obj, "__module__", ""), getattr(obj, "__qualname__", "").split(".")[0]
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) != 2 or not name:
        raise TypeError(f"{obj!r} is not a module, function or class of the {PACKAGE} package; pass one of its definitions.")
    return parts[1], name


def code_fingerprint(entries: Iterable[Any], package_dir: Path = PACKAGE_DIR, exclude: frozenset[Ref] = frozenset()) -> tuple[str, set[Ref]]:
    """One sha256 over every definition the entry points (functions, classes, modules) reach, and that set."""
    refs = reachable([entry_point(e) for e in entries], package_dir, exclude)
    return _fingerprint(repr(sorted(fingerprints(refs, package_dir).items()))), refs


def parse_cell(source: str) -> ast.Module:
    """A notebook cell's syntax tree; IPython's ``%magic`` and ``!shell`` lines are left out."""
    return ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))


def cell_normal_form(source: str) -> str:
    """A cell's code as :func:`normal_form` writes it: a comment or a blank line changes nothing."""
    return normal_form([parse_cell(source)])


def references_in_code(sources: Iterable[str], package_dir: Path = PACKAGE_DIR) -> set[Ref]:
    """The package definitions that code outside the package (a chapter's cells) names directly."""
    modules = set(package_graph(package_dir))
    trees = [parse_cell(source) for source in sources]
    aliases: dict[str, tuple[str, str | None]] = {}
    for tree in trees:
        aliases.update(package_aliases(tree, modules))
    finder = _ReferenceFinder("", set(), aliases, modules)
    for tree in trees:
        finder.visit(tree)
    return finder.found


def called_definitions(run: Callable[[], Any], package_dir: Path = PACKAGE_DIR) -> set[Ref]:
    """The package's top-level definitions whose code runs while ``run()`` runs (a profile of the real calls).

    The check on the static graph: whatever is called here but not :func:`reachable` from the entry point
    that names an artifact is code its cache key misses.
    """
    prefix, found = str(Path(package_dir).resolve()), set()

    def profile(frame, event, arg):
        if event == "call":
            code = frame.f_code
            if code.co_filename.startswith(prefix) and code.co_name != "<module>":
                qualname = getattr(code, "co_qualname", code.co_name)
                found.add((Path(code.co_filename).stem, qualname.split(".")[0]))

    before = sys.getprofile()
    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(before)
    return {ref for ref in found if ref[0] not in ("__init__", "codegraph")}
