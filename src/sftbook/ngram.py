"""A count-based bigram language model (chapter 2): the simplest model of P(next word | history).

Language modelling is the task BERT-style pretraining generalises: predict words from context. A bigram
model predicts from one word of context, so its held-out perplexity is a floor later chapters beat.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence

from sftbook.errors import SftbookError

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


class BigramLanguageModel:
    """Bigram model with add-k smoothing, optionally interpolated with an add-one unigram model.

    ``P(w | v) = λ · (c(v, w) + k) / (c(v) + k·V) + (1 − λ) · P_unigram(w)``. With ``k = 0`` and
    ``λ = 1`` it is the maximum-likelihood estimate, which gives probability 0 (perplexity ∞) to any
    bigram never seen in training.
    """

    def __init__(self, k: float = 1.0, interpolation: float = 1.0) -> None:
        if k < 0:
            raise SftbookError(f"Smoothing constant k must be >= 0, got {k}.")
        if not 0.0 <= interpolation <= 1.0:
            raise SftbookError(f"interpolation (lambda) must lie in [0, 1], got {interpolation}.")
        self.k = k
        self.interpolation = interpolation
        self.vocab: set[str] = set()
        self.unigrams: Counter[str] = Counter()
        self.bigrams: Counter[tuple[str, str]] = Counter()
        self.context_counts: Counter[str] = Counter()

    def fit(self, sentences: Iterable[Sequence[str]]) -> BigramLanguageModel:
        """Count unigrams and bigrams of tokenized sentences, each wrapped in ``<s> … </s>``."""
        for tokens in sentences:
            padded = [BOS, *tokens, EOS]
            self.unigrams.update(padded[1:])
            self.bigrams.update(zip(padded, padded[1:]))
            self.context_counts.update(padded[:-1])
        if not self.unigrams:
            raise SftbookError("Cannot fit a language model on no sentences.")
        self.vocab = set(self.unigrams) | {UNK}
        self._total = sum(self.unigrams.values())
        return self

    def _word(self, token: str) -> str:
        return token if token in self.vocab or token == BOS else UNK

    def prob(self, previous: str, token: str) -> float:
        """P(token | previous), with out-of-vocabulary words mapped to ``<unk>``."""
        if not self.vocab:
            raise SftbookError("Call fit() before asking for probabilities.")
        v, w = self._word(previous), self._word(token)
        size = len(self.vocab)
        denominator = self.context_counts[v] + self.k * size
        bigram = (self.bigrams[(v, w)] + self.k) / denominator if denominator else 0.0
        unigram = (self.unigrams[w] + 1) / (self._total + size)
        return self.interpolation * bigram + (1 - self.interpolation) * unigram

    def perplexity(self, sentences: Iterable[Sequence[str]]) -> float:
        """exp of the mean negative log-probability per predicted token (``</s>`` included)."""
        log_prob, count = 0.0, 0
        for tokens in sentences:
            padded = [BOS, *tokens, EOS]
            for previous, token in zip(padded, padded[1:]):
                p = self.prob(previous, token)
                if p == 0.0:
                    return math.inf
                log_prob += math.log(p)
                count += 1
        if count == 0:
            raise SftbookError("Cannot compute perplexity on no sentences.")
        return math.exp(-log_prob / count)

    def generate(self, seed: int, max_tokens: int = 25) -> list[str]:
        """Sample a sentence word by word from P(next | previous)."""
        rng = random.Random(seed)
        words = sorted(self.vocab - {UNK})
        previous, out = BOS, []
        for _ in range(max_tokens):
            weights = [self.prob(previous, w) for w in words]
            previous = rng.choices(words, weights=weights)[0]
            if previous == EOS:
                break
            out.append(previous)
        return out
