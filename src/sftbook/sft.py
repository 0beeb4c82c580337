"""Supervised fine-tuning of a generative LLM (chapter 8): answer-only labels, the LoRA training loop, the
chapter's two tasks built from the book's own data, and the held-out score read by teacher forcing.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sftbook import data
from sftbook.batching import IGNORE_INDEX, epoch_batches, pad_batch
from sftbook.env import at_scale, derived_seed
from sftbook.env import progress as progress_bar
from sftbook.errors import SftbookError, require_positive_integers
from sftbook.llm import Answer, Shots, chat_prompt, generate_batch, messages
from sftbook.lora import add_lora
from sftbook.metrics import rouge_l
from sftbook.optimization import adamw, warmup_schedule
from sftbook.translation import numeral_pairs

# ----------------------------------------------------------------------------- SFT data: answer-only labels


def sft_features(
    tokenizer, prompt: str, answer: str, max_length: int, system: str | None = None, shots: Shots = (), answer_only: bool = True
) -> dict[str, list[int]]:
    """Token ids of one rendered conversation and its labels: ``IGNORE_INDEX`` on every prompt token, so the
    loss is the answer's alone (``answer_only=False``: every token is a label, for the comparison)."""
    if not isinstance(answer, str) or not answer.strip():
        raise SftbookError("An example has an empty answer; give every example the answer the model should learn.")
    prompt_ids = tokenizer(chat_prompt(tokenizer, prompt, system, shots), add_special_tokens=False)["input_ids"]
    text = tokenizer.apply_chat_template(messages(prompt, answer, system, shots), tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if ids[: len(prompt_ids)] != prompt_ids:
        raise SftbookError("The chat template renders the prompt differently once the answer follows; use a template that appends answers.")
    if len(ids) > max_length:
        raise SftbookError(f"An example is {len(ids)} tokens long, over max_length={max_length}; shorten its prompt or raise max_length.")
    if len(ids) == len(prompt_ids):
        raise SftbookError("The chat template renders no answer tokens (every label would be masked); use one that writes the assistant's turn.")
    if not answer_only:
        return {"input_ids": ids, "labels": list(ids)}
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + ids[len(prompt_ids) :]}


def pad_features(features: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """A batch of :func:`sft_features`: ``input_ids``, ``attention_mask`` and ``labels``, padded on the right.
    Padding is told apart by position (past each row's length), never by token id: the pad id may be the
    end-of-text id, whose label must stay."""
    return pad_batch([f["input_ids"] for f in features], pad_id, labels=[f["labels"] for f in features])


Collate = Callable[[Sequence[dict[str, list[int]]], int], dict[str, torch.Tensor]]


def pad_eos_and_mask_pad_labels(tokenizer) -> Collate:
    """The commonest SFT bug, for chapter 8 to demonstrate: ``pad = eos`` (a usual way to give a tokenizer a
    pad token) and labels masked wherever the *token* is the pad id — which masks every end-of-text label
    too, so the model never learns to stop."""
    eos_id = tokenizer.eos_token_id

    def collate(features, pad_id):
        batch = pad_features(features, eos_id)
        return {**batch, "labels": batch["labels"].masked_fill(batch["input_ids"] == eos_id, IGNORE_INDEX)}

    return collate


# ----------------------------------------------------------------------------- training


@dataclass
class SFTConfig:
    """Settings of a LoRA SFT run; the chapter chose them by measured step time (its table shows why)."""

    steps: int = field(default_factory=lambda: at_scale(240, 3))  # 1.6 passes over the 1,200 training pairs; 3 at the reduced scale
    batch_size: int = 8
    learning_rate: float = 2e-3
    warmup_fraction: float = 0.1
    clip_norm: float = 1.0
    r: int = 8
    alpha: float = 16
    top_layers: int = 16  # LoRA on the last layers only: backpropagation stops below them
    max_length: int = 128
    answer_only_loss: bool = True  # False: the loss covers the prompt and template tokens too
    seed: int = 0

    def __post_init__(self) -> None:
        require_positive_integers(self, ("steps", "batch_size", "r", "top_layers", "max_length"))


@dataclass
class SFTResult:
    history: list[dict[str, float]]  # one row per step: loss, learning rate, examples seen so far
    seconds: float
    trainable_parameters: int


def train_lora(
    model,
    tokenizer,
    examples: Sequence[tuple[str, str]],
    config: SFTConfig,
    system: str | None = None,
    progress: bool = True,
    evaluate: Callable[[Any], dict[str, float]] | None = None,
    evaluate_every: int = 0,
    collate: Collate = pad_features,
    full: bool = False,
) -> SFTResult:
    """Supervised fine-tuning of ``model`` with LoRA on the last ``config.top_layers`` decoder layers
    (``full=True``: every weight trained instead, no adapter): answer-only labels, AdamW, warm-up then linear
    decay, gradient clipping, length-grouped batches.

    ``evaluate(model)`` (in eval mode) runs before the first step and every ``evaluate_every`` steps; its
    numbers join that step's row of the history, which makes learning curves. ``collate`` pads a batch
    (:func:`pad_features`; :func:`pad_eos_and_mask_pad_labels` for the bug chapter 8 shows)."""
    features = [
        sft_features(tokenizer, prompt, answer, config.max_length, system, answer_only=config.answer_only_loss) for prompt, answer in examples
    ]
    if not features:
        raise SftbookError("No training examples; pass (prompt, answer) pairs.")
    layers = model.config.num_hidden_layers
    if full:
        model.requires_grad_(True)
    else:
        add_lora(model, config.r, config.alpha, layers=range(max(0, layers - config.top_layers), layers), seed=config.seed)
    optimizer = adamw(model, config.learning_rate, weight_decay=0.0)
    schedule = warmup_schedule(optimizer, config.steps, int(config.warmup_fraction * config.steps))
    lengths = [len(f["input_ids"]) for f in features]
    per_epoch = math.ceil(len(features) / config.batch_size)
    bar = progress_bar(config.steps, "LoRA fine-tuning", disable=not progress)
    history, evaluating = [], 0.0  # seconds spent in evaluate(), left out of the training time
    if evaluate and evaluate_every:
        history.append({"step": 0, "examples seen": 0, "seconds": 0.0, **evaluate(model.eval())})
    start = time.perf_counter()
    model.train()
    for step in range(config.steps):
        epoch, index = divmod(step, per_epoch)
        rows = epoch_batches(lengths, config.batch_size, config.seed, epoch)[index]
        batch = collate([features[i] for i in rows], tokenizer.pad_token_id)
        torch.manual_seed(derived_seed(config.seed, "dropout", step))
        loss = model(**batch).loss  # mean cross-entropy over the labelled tokens: the answer only, unless answer_only_loss=False
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.clip_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        seen = (history[-1]["examples seen"] if history else 0) + len(rows)
        history.append({"step": step + 1, "loss": loss.item(), "examples seen": seen, "seconds": time.perf_counter() - start - evaluating})
        if evaluate and evaluate_every and ((step + 1) % evaluate_every == 0 or step + 1 == config.steps):
            began = time.perf_counter()
            history[-1].update(evaluate(model.eval()))
            evaluating += time.perf_counter() - began
            model.train()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.update(1)
    bar.close()
    model.eval()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return SFTResult(history, time.perf_counter() - start - evaluating, trainable)


# ----------------------------------------------------------------------------- the chapter's tasks

SENTIMENT_PROMPT = "Is this movie review positive or negative? Answer with one word.\n\nReview: {text}"
NUMERAL_PROMPT = "Write this Chinese number in English words: {zh}"
LABEL_WORDS = ("negative", "positive")  # SST-2's label names, in label order
SCORED_WORDS = ("negative", "positive", "Negative", "Positive")  # a first answer token in either capitalisation counts


def sentiment_labels(scores: torch.Tensor) -> np.ndarray:
    """Labels read from ``first_token_scores(..., SCORED_WORDS)``: 1 (positive) where either spelling of
    ``positive`` is more probable than both spellings of ``negative``, else 0."""
    negative, positive = scores[:, [0, 2]].max(1).values, scores[:, [1, 3]].max(1).values
    return (positive > negative).numpy().astype(int)


@dataclass
class InstructionData:
    """Prompt/answer pairs built from the book's own data; the held-out ones are never trained on."""

    train: list[tuple[str, str]]  # SST-2 and numerals, shuffled together
    sentiment_test: list[tuple[str, int]]  # (review, label) from SST-2's test split
    numeral_test: list[tuple[str, str]]  # (Chinese numeral, English words), numbers never trained on
    numeral_validation: list[tuple[str, str]]  # other unseen numbers: learning curves and choices are read here, not on the test
    shots: dict[str, list[tuple[str, str]]]  # solved examples for few-shot prompts (two of each label or kind)
    numbers_seen: set[int]  # every number in a training pair or a few-shot example


def instruction_data(
    sentiment_train: int | None = None,
    numeral_train: int | None = None,
    sentiment_test: int | None = None,
    numeral_test: int | None = None,
    numeral_validation: int | None = None,
    seed: int = 0,
) -> InstructionData:
    """SST-2 reviews answered with a label word and Chinese numerals answered in English words.

    Defaults: 300 reviews and 900 numbers to train on (writing a number takes more learning than choosing
    a label word), 200 test reviews, 50 test numbers and 50 validation numbers (far fewer at the reduced scale).
    """
    asked = ((sentiment_train, 300, 24), (numeral_train, 900, 24), (sentiment_test, 200, 16), (numeral_test, 50, 8), (numeral_validation, 50, 8))
    sizes = [at_scale(full, reduced) if given is None else given for given, full, reduced in asked]
    sst2 = data.load("sst2")
    names = sst2["train"].features["label"].names
    reviews = data.subsample(sst2["train"], sizes[0], seed=seed)
    sentiment = [(SENTIMENT_PROMPT.format(text=t), names[y]) for t, y in zip(reviews["text"], reviews["label"])]
    held_reviews = data.subsample(sst2["test"], sizes[2], seed=seed + 1)
    numbers = numeral_pairs(sizes[1] + 4, seed=seed)
    held_numbers = numeral_pairs(sizes[3], seed=seed + 1, exclude={n for _, _, n in numbers})
    validation_numbers = numeral_pairs(sizes[4], seed=seed + 2, exclude={n for _, _, n in numbers + held_numbers})
    numerals = [(NUMERAL_PROMPT.format(zh=zh), en) for zh, en, _ in numbers[4:]]
    train = sentiment + numerals
    random.Random(seed).shuffle(train)
    by_label = [[pair for pair in sentiment if pair[1] == word][:2] for word in LABEL_WORDS]  # two solved reviews of each label
    return InstructionData(
        train=train,
        sentiment_test=list(zip(held_reviews["text"], held_reviews["label"])),
        numeral_test=[(zh, en) for zh, en, _ in held_numbers],
        numeral_validation=[(zh, en) for zh, en, _ in validation_numbers],
        shots={
            "sentiment": [pair for pairs in zip(*by_label) for pair in pairs],
            "numeral": [(NUMERAL_PROMPT.format(zh=zh), en) for zh, en, _ in numbers[:4]],
        },
        numbers_seen={n for _, _, n in numbers},
    )


def answer_span(feature: dict[str, list[int]], eos_token_id: int) -> tuple[int, int]:
    """``(start, end)`` of the answer in ``feature["input_ids"]``: its first token to its ``<|im_end|>``, inclusive."""
    start = next(i for i, label in enumerate(feature["labels"]) if label != IGNORE_INDEX)
    return start, feature["input_ids"].index(eos_token_id, start) + 1


@torch.no_grad()
def teacher_forced_exact(
    model, tokenizer, pairs: Sequence[tuple[str, str]], system: str | None = None, shots: Shots = (), batch_size: int = 16
) -> list[bool]:
    """Whether greedy decoding would write each answer exactly, read from one forward pass per batch.

    Greedy decoding reproduces an answer (and stops) exactly when, at every answer position, the most
    probable next token is the answer's own token up to ``<|im_end|>`` — which teacher forcing shows at once.
    """
    features = [sft_features(tokenizer, p, a, model.config.max_position_embeddings, system, shots) for p, a in pairs]
    exact = []
    for start in range(0, len(features), batch_size):
        chunk = features[start : start + batch_size]
        batch = pad_features(chunk, tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"].to(model.device), attention_mask=batch["attention_mask"].to(model.device)).logits
        guesses = logits[:, :-1].argmax(-1).cpu()  # (batch, seq - 1): the guess for token j + 1 after reading 0..j
        for row, feature in enumerate(chunk):
            first, end = answer_span(feature, tokenizer.eos_token_id)
            exact.append(guesses[row, first - 1 : end - 1].tolist() == feature["input_ids"][first:end])
    return exact


def numeral_exact_match(model, tokenizer, numeral_test: Sequence[tuple[str, str]]) -> dict[str, float]:
    """The held-out score of chapters 8 and 10: the share of ``(Chinese, English)`` numeral pairs that greedy
    decoding would write exactly (:func:`teacher_forced_exact`), keyed as an SFT history row expects."""
    pairs = [(NUMERAL_PROMPT.format(zh=zh), en) for zh, en in numeral_test]
    return {"numeral exact match": sum(teacher_forced_exact(model, tokenizer, pairs)) / len(pairs)}


# ----------------------------------------------------------------------------- general instructions: what SFT does to everything else


@torch.no_grad()
def answer_loss(model, tokenizer, pairs: Sequence[tuple[str, str]], max_length: int = 512, batch_size: int = 8) -> float:
    """Mean cross-entropy (nats per token) of the reference answers, end-of-text included, given their prompts:
    how likely the model finds the answer a person wrote, with no generation and no judge."""
    total, count = 0.0, 0
    for start in range(0, len(pairs), batch_size):
        batch = pad_features([sft_features(tokenizer, p, a, max_length) for p, a in pairs[start : start + batch_size]], tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"].to(model.device), attention_mask=batch["attention_mask"].to(model.device)).logits
        targets = batch["labels"][:, 1:].to(model.device)  # (batch, seq - 1): token j + 1 is predicted after reading 0..j
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2).float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
        total, count = total + losses.item(), count + int((targets != IGNORE_INDEX).sum())
    return total / count


def general_scores(model, tokenizer, pairs: Sequence[tuple[str, str]], max_new_tokens: int = 64) -> tuple[dict[str, float], list[Answer]]:
    """What chapter 8 measures on held-out general instructions: the share of greedy answers that end with the
    end-of-text token, their mean ROUGE-L against the reference, their mean length in words, and the reference
    answers' loss (:func:`answer_loss`); and the answers themselves."""
    answers = generate_batch(model, tokenizer, [p for p, _ in pairs], max_new_tokens)
    scores = {
        "stops": float(np.mean([a.stopped for a in answers])),
        "ROUGE-L": float(np.mean([rouge_l(a.text, reference) for a, (_, reference) in zip(answers, pairs)])),
        "words": float(np.mean([len(a.text.split()) for a in answers])),
        "answer loss": answer_loss(model, tokenizer, pairs),
    }
    return scores, answers
