"""ROUGE-L, written by hand for chapter 8, against Google's rouge_score."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from sftbook import metrics
from sftbook.errors import SftbookError

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


def test_squad_scores_follow_the_official_normalisation_and_take_the_best_reference():
    assert metrics.squad_normalize("The  Denver Broncos!") == "denver broncos"
    assert metrics.squad_normalize("an apple, a pear") == "apple pear"
    assert metrics.squad_exact_match("Denver Broncos.", ["the Carolina Panthers", "denver broncos"]) == 1.0
    assert metrics.squad_exact_match("Broncos", ["Denver Broncos"]) == 0.0
    # "the Broncos" -> ["broncos"] against ["denver", "broncos"]: precision 1, recall 1/2
    assert metrics.squad_f1("the Broncos", ["Denver Broncos"]) == pytest.approx(2 / 3)
    assert metrics.squad_f1("the Broncos", ["Carolina", "Denver Broncos", "Broncos"]) == 1.0
    assert metrics.squad_f1("seven seven", ["seven"]) == pytest.approx(2 * 0.5 * 1 / 1.5)  # repeats counted once each
    assert metrics.squad_f1("Paris", ["London"]) == 0.0 and metrics.squad_f1("the", ["a"]) == 1.0  # both empty after normalising
    with pytest.raises(SftbookError, match="No reference answers"):
        metrics.squad_f1("Paris", [])
