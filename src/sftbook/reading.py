"""The reader of retrieval-augmented question answering (chapter 10): SmolLM2 fine-tuned on SQuAD with
distracting passages beside the one that holds the answer, the span-only baseline, and the scores.

A retriever hands the reader several passages, most of them beside the point. Training the reader with the
right paragraph hidden among retrieved distractors teaches it to find the answer in noisy context
(RAFT, Zhang et al. 2024); here the distractors are the paragraphs of the same article most similar to the
question, as a retriever would rank them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer

from sftbook.data import SquadQuestion
from sftbook.errors import SftbookError
from sftbook.llm import cached_step, chat_prompt
from sftbook.metrics import squad_exact_match, squad_f1
from sftbook.retrieval import contains_answer, question_prompt

# ----------------------------------------------------------------------------- RAFT-style training examples


def article_paragraphs(questions: Sequence[SquadQuestion]) -> dict[str, list[str]]:
    """Each article's paragraphs, in the order they first appear."""
    paragraphs: dict[str, list[str]] = {}
    for question in questions:
        if question.context not in paragraphs.setdefault(question.title, []):
            paragraphs[question.title].append(question.context)
    return paragraphs


def distractors(question: SquadQuestion, paragraphs: Sequence[str], count: int) -> list[str]:
    """The ``count`` paragraphs of ``paragraphs`` (not the question's own) most similar to the question by TF-IDF
    cosine: the passages a retriever would put beside the right one."""
    others = [p for p in paragraphs if p != question.context]
    if count < 0 or count > len(others):
        raise SftbookError(f"{count} distractors asked for, {len(others)} other paragraphs in '{question.title}'; ask for 0 to {len(others)}.")
    if count == 0:
        return []
    vectorizer = TfidfVectorizer(stop_words="english").fit([*others, question.context])
    similarity = (vectorizer.transform(others) @ vectorizer.transform([question.question]).T).toarray()[:, 0]  # (others,)
    return [others[i] for i in np.argsort(-similarity, kind="stable")[:count]]


def reader_passages(question: SquadQuestion, paragraphs: Sequence[str], count: int, seed: int = 0) -> list[str]:
    """The question's own paragraph and ``count`` distractors (:func:`distractors`), in an order drawn from
    ``seed`` and the question's id, so the right passage is not always in the same place."""
    passages = [question.context, *distractors(question, paragraphs, count)]
    random.Random(f"{seed}-{question.id}").shuffle(passages)
    return passages


def reader_examples(questions: Sequence[SquadQuestion], distractor_counts: Sequence[int] = (0, 1, 2), seed: int = 0) -> list[tuple[str, str]]:
    """(prompt, answer) pairs for SFT: each question with its paragraph and, in turn, each of
    ``distractor_counts`` distractors, asked exactly as the book's questions are
    (:func:`sftbook.retrieval.question_prompt`); the answer is the first crowdworker's span."""
    if not questions:
        raise SftbookError("No SQuAD questions to train on; pass data.squad().train or part of it.")
    paragraphs = article_paragraphs(questions)
    examples = []
    for i, question in enumerate(questions):
        count = min(distractor_counts[i % len(distractor_counts)], len(paragraphs[question.title]) - 1)
        examples.append((question_prompt(question.question, reader_passages(question, paragraphs[question.title], count, seed)), question.answers[0]))
    return examples


# ----------------------------------------------------------------------------- the span-only baseline


def _word_aligned(text: str, source: str, whole: bool) -> bool:
    """Whether ``text`` occurs in ``source`` starting at a word's start (and, if ``whole``, ending at a word's end)."""
    return re.search(r"(?<!\w)" + re.escape(text) + (r"(?!\w)" if whole else ""), source) is not None


@torch.no_grad()
def extractive_answer(model, tokenizer, question: str, passages: Sequence[str], max_new_tokens: int = 24, candidates: int = 50) -> str:
    """The stretch of the passages the model finds most probable as the whole answer, end-of-text included:
    a non-generative baseline that can only point. The answer grows greedily, each step taking the most
    probable of the ``candidates`` best next tokens that keeps it a stretch of a passage starting at a word;
    wherever it ends at a word, log p(answer so far) + log p(end-of-text) is a candidate score, and the best
    of those is returned (greedy decoding alone would rarely stop: the model would copy on); an empty string
    when no prefix ever ended at a word."""
    if not passages:
        raise SftbookError("The span-only reader needs passages to point into; pass at least one.")
    source = " ".join(" ".join(passage.split()) for passage in passages)
    prompt = tokenizer(chat_prompt(tokenizer, question_prompt(question, passages)), add_special_tokens=False)["input_ids"]
    step, state = cached_step(model), None
    tokens, written = torch.tensor([prompt], device=model.device), []
    answer, so_far, best, best_score = "", 0.0, "", -float("inf")
    for _ in range(max_new_tokens):
        logits, state = step(tokens, state)  # (1, vocab)
        log_probs = logits[0].float().log_softmax(-1)  # (vocab,)
        if answer and _word_aligned(answer, source, whole=True) and so_far + log_probs[tokenizer.eos_token_id] > best_score:
            best, best_score = answer, so_far + log_probs[tokenizer.eos_token_id].item()
        chosen = None
        for token in log_probs.topk(candidates).indices.tolist():
            text = " ".join(tokenizer.decode([*written, token]).split())
            if token != tokenizer.eos_token_id and text and _word_aligned(text, source, whole=False):
                chosen = token
                break
        if chosen is None:
            break
        written.append(chosen)
        answer, so_far = " ".join(tokenizer.decode(written).split()), so_far + log_probs[chosen].item()
        tokens = torch.cat([tokens, tokens.new_tensor([[chosen]])], dim=1)
    return best or (answer if _word_aligned(answer, source, whole=True) else "")  # "": it never ended at a word


# ----------------------------------------------------------------------------- scores


def answer_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
    """Per question: SQuAD's exact match and token F1 (the best over the references) and containment (some
    reference occurs in the answer, whole words), each 0–1."""
    if len(predictions) != len(references) or not predictions:
        raise SftbookError(f"{len(predictions)} answers for {len(references)} questions; pass one answer per question (at least one).")
    return {
        "exact match": np.array([squad_exact_match(p, r) for p, r in zip(predictions, references)]),
        "F1": np.array([squad_f1(p, r) for p, r in zip(predictions, references)]),
        "contains": np.array([float(any(contains_answer(p, a) for a in r)) for p, r in zip(predictions, references)]),
    }


def score_summary(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Each of :func:`answer_scores` as a percentage, with its standard error (``"… SE"``) over the questions."""
    summary = {}
    for name, values in answer_scores(predictions, references).items():
        summary[name] = float(100 * values.mean())
        summary[f"{name} SE"] = float(100 * values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return summary
