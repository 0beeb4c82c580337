"""Chapter 4's teachers: the distillation loop and its two losses, on a model small enough for a unit test."""

import pytest
import torch
import torch.nn.functional as F
from toys import BAD, GOOD, toy_encoder, toy_tokenizer

from sftbook import distillation
from sftbook.errors import SftbookError

TEXTS = GOOD + BAD


def test_cosine_distance_is_zero_for_the_same_direction_and_one_for_orthogonal():
    teacher = F.normalize(torch.randn(4, 8), dim=-1)
    assert distillation.cosine_distance(3 * teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation.cosine_distance(torch.eye(2), torch.eye(2).flip(0)).item() == pytest.approx(1.0)


def test_soft_cross_entropy_equals_cross_entropy_for_one_hot_targets():
    logits, labels = torch.randn(6, 3), torch.tensor([0, 2, 1, 1, 0, 2])
    assert distillation.soft_cross_entropy(logits, F.one_hot(labels, 3).float()) == pytest.approx(F.cross_entropy(logits, labels).item())


def test_embedding_distillation_brings_the_student_towards_the_teacher():
    tokenizer = toy_tokenizer()
    targets = F.normalize(torch.randn(len(TEXTS), 16, generator=torch.Generator().manual_seed(1)), dim=-1)
    student = distillation.EmbeddingStudent(toy_encoder(tokenizer), teacher_size=16)
    config = distillation.DistillConfig(steps=60, batch_size=8, learning_rate=3e-3, max_length=32)
    losses = distillation.distill(student, distillation.cosine_distance, tokenizer, TEXTS, targets, config)
    assert len(losses) == 60 and sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def test_distillation_is_deterministic_for_a_seed():
    tokenizer = toy_tokenizer()
    targets = F.normalize(torch.randn(len(TEXTS), 16, generator=torch.Generator().manual_seed(1)), dim=-1)
    config = distillation.DistillConfig(steps=5, batch_size=4, max_length=32)
    students = [distillation.EmbeddingStudent(toy_encoder(tokenizer), 16) for _ in range(2)]
    runs = [distillation.distill(student, distillation.cosine_distance, tokenizer, TEXTS, targets, config) for student in students]
    assert runs[0] == runs[1]


def test_distill_rejects_targets_that_do_not_match_the_texts():
    tokenizer = toy_tokenizer()
    student = distillation.EmbeddingStudent(toy_encoder(tokenizer), 16)
    with pytest.raises(SftbookError, match="one target per text"):
        distillation.distill(student, distillation.cosine_distance, tokenizer, TEXTS, torch.zeros(3, 16), distillation.DistillConfig(steps=1))
    with pytest.raises(SftbookError, match="steps must be at least 1"):
        distillation.DistillConfig(steps=0)


def test_word_spans_are_shorter_runs_of_consecutive_words_of_their_sentence():
    sentences = ["a gorgeous , witty , seductive movie .", "dull and lifeless .", "ok ."]
    spans = distillation.word_spans(sentences, per_text=4, min_words=3, seed=0)
    assert len(spans) == 8  # "ok ." has too few words to cut
    owners = [next(s for s in sentences if f" {span} " in f" {s} ") for span in spans]
    assert all(3 <= len(span.split()) < len(owner.split()) for span, owner in zip(spans, owners))
    assert spans == distillation.word_spans(sentences, per_text=4, min_words=3, seed=0)
