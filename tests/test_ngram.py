import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sftbook.errors import SftbookError
from sftbook.ngram import BOS, EOS, UNK, BigramLanguageModel

SENTENCES = [["a", "b"], ["a", "c"], ["b"]]


def test_maximum_likelihood_by_hand():
    model = BigramLanguageModel(k=0.0).fit(SENTENCES)
    assert model.prob(BOS, "a") == pytest.approx(2 / 3)
    assert model.prob("a", "b") == pytest.approx(1 / 2)
    assert model.prob("b", EOS) == pytest.approx(1.0)
    assert model.prob("c", "a") == 0.0
    assert model.perplexity([["c", "a"]]) == math.inf


def test_add_one_by_hand():
    model = BigramLanguageModel(k=1.0).fit(SENTENCES)
    vocab = len(model.vocab)  # a, b, c, </s>, <unk>
    assert vocab == 5
    assert model.prob("a", "b") == pytest.approx((1 + 1) / (2 + vocab))
    assert model.prob("a", "zebra") == model.prob("a", UNK) == pytest.approx(1 / (2 + vocab))


@settings(max_examples=30, deadline=None)
@given(
    k=st.floats(0.01, 2.0),
    lam=st.floats(0.0, 1.0),
    context=st.sampled_from([BOS, "a", "b", "c", "never-seen"]),
)
def test_next_word_distribution_sums_to_one(k, lam, context):
    model = BigramLanguageModel(k, lam).fit(SENTENCES)
    assert sum(model.prob(context, w) for w in model.vocab) == pytest.approx(1.0)


def test_uniform_model_perplexity_equals_vocabulary_size():
    model = BigramLanguageModel(k=1e9).fit(SENTENCES)  # k → ∞: every next word equally likely
    assert model.perplexity([["a", "b", "c"]]) == pytest.approx(len(model.vocab), rel=1e-6)


def test_generate_is_seeded_and_uses_the_vocabulary():
    model = BigramLanguageModel(k=0.0).fit(SENTENCES)
    assert model.generate(seed=1) == model.generate(seed=1)
    assert set(model.generate(seed=2)) <= {"a", "b", "c"}


@pytest.mark.parametrize("kwargs, message", [({"k": -1}, "k must be >= 0"), ({"interpolation": 1.5}, r"\[0, 1\]")])
def test_bad_parameters(kwargs, message):
    with pytest.raises(SftbookError, match=message):
        BigramLanguageModel(**kwargs)


def test_bad_usage():
    with pytest.raises(SftbookError, match="no sentences"):
        BigramLanguageModel().fit([])
    with pytest.raises(SftbookError, match="fit"):
        BigramLanguageModel().prob("a", "b")
    with pytest.raises(SftbookError, match="no sentences"):
        BigramLanguageModel().fit(SENTENCES).perplexity([])
