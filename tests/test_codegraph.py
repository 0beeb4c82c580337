"""Which code an artifact or a chapter runs: the package's reference graph, and what it hashes."""

from __future__ import annotations

import importlib
import textwrap

import pytest
from toys import reworded, toy_dataset, toy_encoder, toy_tokenizer

from sftbook import batching, codegraph, finetuning, modeling

PACKAGE_FILES = {
    "base.py": '''
        """A module docstring."""
        LIMIT = 3
        A, B = 1, 2


        def helper(x):
            """Helper's docstring."""
            return x + LIMIT  # a comment


        def unused():
            return A
    ''',
    "middle.py": """
        from sftbook import base
        from sftbook.base import helper as renamed


        class Thing:
            def method(self):
                return renamed(1)


        def uses_attribute():
            return base.helper(2) + B_LOCAL


        B_LOCAL = 5


        def uses_module_as_value():
            return (base,)
    """,
    "top.py": """
        import sftbook
        from sftbook.middle import Thing


        def entry():
            return Thing().method() + sftbook.middle.uses_attribute()
    """,
}


@pytest.fixture
def package(tmp_path):
    for name, source in PACKAGE_FILES.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    return tmp_path


def test_references_follow_imports_attributes_and_local_names(package):
    graph = codegraph.package_graph(package)
    assert graph["base"]["helper"].references == {("base", "LIMIT"), ("base", codegraph.PREAMBLE)}
    assert ("base", "helper") in graph["middle"]["Thing"].references  # an import under another name
    assert {("base", "helper"), ("middle", "B_LOCAL")} <= graph["middle"]["uses_attribute"].references
    assert ("base", codegraph.WHOLE_MODULE) in graph["middle"]["uses_module_as_value"].references
    assert {"A", "B"} <= set(graph["base"])  # a, b = 1, 2 binds both


def test_reachable_is_the_transitive_closure_and_nothing_more(package):
    reached = codegraph.reachable([("top", "entry")], package)
    assert {("top", "entry"), ("middle", "Thing"), ("middle", "uses_attribute"), ("base", "helper"), ("base", "LIMIT")} <= reached
    assert ("base", "unused") not in reached and ("middle", "uses_module_as_value") not in reached
    assert ("base", "unused") in codegraph.reachable([("middle", "uses_module_as_value")], package)  # a module as a value: all of it


def test_docstrings_comments_and_blank_lines_change_no_fingerprint_anywhere(tmp_path):
    before = codegraph.package_graph()
    for path in codegraph.PACKAGE_DIR.glob("*.py"):
        (tmp_path / path.name).write_text(reworded(path.read_text()))
    after = codegraph.package_graph(tmp_path)
    assert {m: {n: d.fingerprint for n, d in defs.items()} for m, defs in after.items()} == {
        m: {n: d.fingerprint for n, d in defs.items()} for m, defs in before.items()
    }


def test_a_code_edit_changes_the_fingerprint_of_that_definition_only(package):
    before = codegraph.package_graph(package)
    source = package / "base.py"
    source.write_text(source.read_text().replace("return x + LIMIT", "return x - LIMIT"))
    after = codegraph.package_graph(package)
    changed = {(m, n) for m in before for n in before[m] if before[m][n].fingerprint != after[m][n].fingerprint}
    assert changed == {("base", "helper")}


def test_cells_are_read_like_the_package_magics_and_comments_aside():
    cell = "%matplotlib inline\nfrom sftbook import data\nsplits = data.load('sst2')  # a comment\n!ls"
    assert codegraph.references_in_code([cell]) == {("data", "load")}
    assert codegraph.cell_normal_form(cell) == codegraph.cell_normal_form(cell.replace("# a comment", "# reworded") + "\n\n")
    assert codegraph.cell_normal_form(cell) != codegraph.cell_normal_form(cell.replace("sst2", "sst5"))


def test_entry_point_names_package_definitions_and_rejects_others():
    assert codegraph.entry_point(finetuning.fine_tune) == ("finetuning", "fine_tune")
    assert codegraph.entry_point(modeling.TextClassifier.forward) == ("modeling", "TextClassifier")
    assert codegraph.entry_point(batching) == ("batching", codegraph.WHOLE_MODULE)
    with pytest.raises(TypeError, match="not a module, function or class of the sftbook package"):
        codegraph.entry_point(len)


def toy_fine_tune():
    """A real fine-tuning run on toy data; what it trains (the model, built first) is an input, like a cache key's."""
    tokenizer = toy_tokenizer()
    model = modeling.TextClassifier(toy_encoder(tokenizer), 2)
    return lambda: finetuning.fine_tune(model, tokenizer, toy_dataset(), finetuning.FineTuneConfig(epochs=1, batch_size=4), progress=False)


# a fine-tuned classifier is the loop's output for the model class it is given: a key must cover both
FINE_TUNED_CLASSIFIER = (finetuning.fine_tune, modeling.TextClassifier)


def uncovered(entries, run) -> set:
    """What ``run`` calls in the package that the graph does not reach from ``entries``: code a key on them misses."""
    return codegraph.called_definitions(run) - codegraph.reachable([codegraph.entry_point(e) for e in entries])


def test_the_graph_covers_every_function_a_real_training_run_calls():
    run = toy_fine_tune()
    called = codegraph.called_definitions(run)
    assert {("finetuning", "fine_tune"), ("batching", "pad_batch"), ("modeling", "TextClassifier")} <= called  # the trace sees the loop
    assert uncovered(FINE_TUNED_CLASSIFIER, run) == set()
    assert ("modeling", "TextClassifier") in uncovered(FINE_TUNED_CLASSIFIER[:1], run)  # the loop alone would miss the model's code


def test_the_coverage_check_fails_on_a_planted_dependency_the_graph_cannot_see(monkeypatch):
    """A function found by a computed name escapes the graph; the traced run catches it."""

    def pad_and_call_by_name(*args, **kwargs):
        vars(importlib.import_module("sftbook.ngram"))["BigramLanguageModel"]()
        return batching.pad_batch(*args, **kwargs)

    monkeypatch.setattr(finetuning, "pad_batch", pad_and_call_by_name)
    assert uncovered(FINE_TUNED_CLASSIFIER, toy_fine_tune()) == {("ngram", "BigramLanguageModel")}
