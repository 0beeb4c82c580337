"""ROUGE-L, written by hand for chapter 8, against Google's rouge_score."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from sftbook import metrics

WORDS = st.lists(st.sampled_from(["the", "cat", "sat", "on", "mat", "a", "dog", "Paris", "is", "42", "!"]), max_size=12)


@settings(max_examples=200, deadline=None)
@given(WORDS, WORDS)
def test_rouge_l_equals_googles_rouge_score(prediction, reference):
    theirs = rouge_scorer.RougeScorer(["rougeL"]).score(" ".join(reference), " ".join(prediction))["rougeL"].fmeasure
    assert metrics.rouge_l(" ".join(prediction), " ".join(reference)) == pytest.approx(theirs, abs=1e-12)


def test_rouge_l_rewards_shared_words_in_order_not_meaning():
    assert metrics.rouge_l("The capital of France is Paris.", "the capital of france is paris") == 1.0
    assert metrics.rouge_l("Paris.", "The capital of France is Paris.") == pytest.approx(2 * 1 * (1 / 6) / (1 + 1 / 6))
    assert metrics.rouge_l("Lyon is the capital of France.", "The capital of France is Paris.") > 0.6  # wrong, and scored high
    assert metrics.rouge_l("", "anything") == 0.0


def test_repeats_itself_spots_a_loop_and_nothing_shorter():
    assert metrics.repeats_itself("The cat sat on the mat. The cat sat on the sofa.")  # "the cat sat on" twice
    assert not metrics.repeats_itself("The cat sat on the mat, and the dog sat on the cat.")
    assert not metrics.repeats_itself("no no no", n=4) and metrics.repeats_itself("no no no no no", n=4)
