"""Preference tuning written out (chapter 9): direct preference optimisation (DPO) on pairs of answers to one
prompt — pairs made from a model's own wrong answers, the chosen answer's and the rejected answer's
log-probabilities under the model being trained and under a frozen reference, the loss (with the optional NLL
term of RPO), and a LoRA training loop whose reference is the same model with its adapter switched off (no second
copy in memory). Tests hold the loss, the log-probabilities and the rewards equal to TRL's ``DPOTrainer`` on the
same batch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from sftbook.batching import IGNORE_INDEX, epoch_batches
from sftbook.env import at_scale
from sftbook.env import progress as progress_bar
from sftbook.errors import SftbookError, require_positive_integers
from sftbook.llm import Answer, generate_batch
from sftbook.lora import add_lora, lora_modules, switched_off
from sftbook.optimization import adamw, warmup_schedule
from sftbook.sft import NUMERAL_PROMPT, InstructionData, SFTResult, pad_features, sft_features
from sftbook.translation import numeral_pairs

# ----------------------------------------------------------------------------- pairs


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str  # the answer to make likelier
    rejected: str  # the answer to make less likely


def on_policy_pairs(
    model, tokenizer, prompts: Sequence[str], references: Sequence[str], max_new_tokens: int = 32
) -> tuple[list[PreferencePair], list[Answer]]:
    """Pairs from the model's own mistakes: its greedy answer to each prompt, when that is not the reference
    answer, is the rejected side and the reference the chosen one. Also returns every answer (the exact match
    of the model that wrote them is the share equal to their references)."""
    if len(prompts) != len(references):
        raise SftbookError(f"{len(prompts)} prompts but {len(references)} reference answers; pass one reference per prompt.")
    answers = generate_batch(model, tokenizer, prompts, max_new_tokens)
    pairs = [
        PreferencePair(prompt, reference, answer.text)
        for prompt, reference, answer in zip(prompts, references, answers)
        if answer.text.strip() and answer.text.strip() != reference.strip()
    ]
    return pairs, answers


def preference_numbers(tasks: InstructionData, counts: dict[str, int] | None = None, seed: int = 10) -> dict[str, list[tuple[str, str]]]:
    """Fresh (Chinese numeral, English words) pairs for preference tuning, in parts (training, validation, test
    pairs): none trained on in SFT, none among chapter 8's test or validation numbers."""
    counts = counts or {"train": at_scale(1500, 24), "validation": at_scale(400, 12), "test": at_scale(950, 12)}
    unseen = {zh for zh, _ in tasks.numeral_test + tasks.numeral_validation}
    drawn = numeral_pairs(sum(counts.values()) + len(unseen), seed=seed, exclude=tasks.numbers_seen)
    fresh = [(zh, en) for zh, en, _ in drawn if zh not in unseen]
    parts, begin = {}, 0
    for part, count in counts.items():
        parts[part], begin = fresh[begin : begin + count], begin + count
    return parts


def numeral_prompts(numbers: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """The SFT prompts of ``numbers`` and their reference answers."""
    return [NUMERAL_PROMPT.format(zh=zh) for zh, _ in numbers], [en for _, en in numbers]


@dataclass
class NumeralPreferences:
    """What an SFT model wrote for fresh numbers, part by part, and the pairs its wrong answers make."""

    numbers: dict[str, list[tuple[str, str]]]  # part -> (Chinese numeral, English words)
    pairs: dict[str, list[PreferencePair]]  # part -> the pairs its wrong answers made
    answers: dict[str, list[str]]  # part -> the SFT model's greedy answer to each number

    def exact(self, part: str) -> list[bool]:
        """Whether each of the SFT model's answers in ``part`` is exactly right."""
        return [answer.strip() == english for answer, (_, english) in zip(self.answers[part], self.numbers[part])]

    def to_json(self) -> str:
        pairs = {part: [[p.prompt, p.chosen, p.rejected] for p in rows] for part, rows in self.pairs.items()}
        return json.dumps({"numbers": self.numbers, "pairs": pairs, "answers": self.answers}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> NumeralPreferences:
        stored = json.loads(text)
        numbers = {part: [tuple(row) for row in rows] for part, rows in stored["numbers"].items()}
        return cls(numbers, {part: [PreferencePair(*row) for row in rows] for part, rows in stored["pairs"].items()}, stored["answers"])


def preference_features(tokenizer, pair: PreferencePair, max_length: int, system: str | None = None) -> dict[str, dict[str, list[int]]]:
    """The chosen and the rejected conversation as :func:`sftbook.sft.sft_features` renders them: the same
    prompt, labels on each answer (and its end-of-text token) only."""
    if not isinstance(pair, PreferencePair):
        raise SftbookError(f"A preference pair must be a PreferencePair(prompt, chosen, rejected), not {type(pair).__name__}.")
    if pair.chosen.strip() == pair.rejected.strip():
        raise SftbookError(
            f"A pair's chosen and rejected answers are the same text ({pair.chosen[:40]!r}); DPO learns nothing from it — drop the pair."
        )
    return {side: sft_features(tokenizer, pair.prompt, getattr(pair, side), max_length, system) for side in ("chosen", "rejected")}


def trl_rows(pairs: Sequence[PreferencePair]) -> list[dict[str, list[dict[str, str]]]]:
    """``pairs`` as TRL's ``DPOTrainer`` reads a conversational preference data set, for the comparisons with it."""
    return [
        {"prompt": [{"role": "user", "content": p.prompt}], "chosen": [{"role": "assistant", "content": p.chosen}],
         "rejected": [{"role": "assistant", "content": p.rejected}]}
        for p in pairs
    ]  # fmt: skip


def pair_batch(features: Sequence[dict[str, dict[str, list[int]]]], pad_id: int) -> dict[str, torch.Tensor]:
    """One padded batch: the chosen conversations first, then the rejected ones in the same order (TRL's
    layout), so ``logprobs.chunk(2)`` splits them."""
    return pad_features([f["chosen"] for f in features] + [f["rejected"] for f in features], pad_id)


def check_pairing(model, tokenizer) -> None:
    """One clear error for a tokenizer that is not the model's (ids past the embedding would fail deep inside)."""
    vocabulary = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocabulary:
        raise SftbookError(
            f"The tokenizer has {len(tokenizer):,} tokens and the model's embedding {vocabulary:,}: "
            "they are not a pair; load the tokenizer saved with the model."
        )


def answer_logprobs(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log p(answer | prompt) of each row: the sum of the log-probabilities of its labelled tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]  # (rows, seq - 1, vocab)
    labels = batch["labels"][:, 1:]  # (rows, seq - 1): the token each position predicts
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bfloat16 sums lose the answer's small differences
    token_logprobs = -F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")  # 0 where unlabelled
    return token_logprobs.sum(dim=1)  # (rows,)


# ----------------------------------------------------------------------------- the loss


@dataclass
class DPOTerms:
    loss: torch.Tensor  # the mean over pairs, what the step minimises
    chosen_rewards: torch.Tensor  # (pairs,): β · (log π(chosen) − log π_ref(chosen)), the implicit reward
    rejected_rewards: torch.Tensor  # (pairs,)


def dpo_loss(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor, reference_rejected: torch.Tensor, beta: float
) -> DPOTerms:
    """``−log σ(β [(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))])``, averaged over pairs
    (Rafailov et al. 2023, eq. 7); each argument holds one log-probability per pair."""
    chosen_rewards = beta * (policy_chosen - reference_chosen)  # (pairs,)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return DPOTerms(loss, chosen_rewards.detach(), rejected_rewards.detach())


def dpo_terms(model, batch: dict[str, torch.Tensor], beta: float, nll_weight: float = 0.0) -> DPOTerms:
    """The loss of one :func:`pair_batch`: the reference pass runs the same model with its LoRA adapter
    switched off (no gradient), the policy pass with it on. ``nll_weight`` > 0 adds that multiple of the chosen
    answers' mean negative log-likelihood per token (RPO, Pang et al. 2024; TRL's ``loss_type=["sigmoid", "sft"]``),
    which keeps the chosen answers likely while the margin grows."""
    with torch.no_grad(), switched_off(model):
        reference = answer_logprobs(model, batch)
    policy = answer_logprobs(model, batch)
    policy_chosen, policy_rejected = policy.chunk(2)
    terms = dpo_loss(policy_chosen, policy_rejected, *reference.chunk(2), beta)
    if nll_weight:
        chosen_tokens = (batch["labels"][: len(policy_chosen), 1:] != IGNORE_INDEX).sum()
        terms.loss = terms.loss - nll_weight * policy_chosen.sum() / chosen_tokens
    return terms


# ----------------------------------------------------------------------------- training


@dataclass
class DPOConfig:
    """Settings of a DPO run on top of an SFT model (its adapter merged in first: that model is the reference)."""

    steps: int = field(default_factory=lambda: at_scale(60, 3))
    batch_size: int = 8  # pairs per step: 16 conversations
    learning_rate: float = 5e-4
    beta: float = 0.1  # how far the policy may move from the reference: small β, far
    nll_weight: float = 0.0  # > 0: RPO, the chosen answers' likelihood kept up (see dpo_terms)
    warmup_fraction: float = 0.1
    clip_norm: float = 1.0
    r: int = 8
    alpha: float = 16
    top_layers: int = 16
    max_length: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        require_positive_integers(self, ("steps", "batch_size", "r", "top_layers", "max_length"))
        if not self.beta > 0:
            raise SftbookError(f"beta={self.beta} must be positive; it scales the implicit reward (0.1 is usual).")
        if self.nll_weight < 0:
            raise SftbookError(f"nll_weight={self.nll_weight} must be 0 (plain DPO) or positive (RPO; 1 is usual).")


def train_dpo(
    model,
    tokenizer,
    pairs: Sequence[PreferencePair],
    config: DPOConfig,
    system: str | None = None,
    progress: bool = True,
    evaluate: Callable[[Any], dict[str, float]] | None = None,
    evaluate_every: int = 0,
) -> SFTResult:
    """DPO of ``model`` with a new LoRA adapter on its last ``config.top_layers`` layers; the model as it is
    when called (merge an SFT adapter into it first) is the reference. AdamW, warm-up then linear decay,
    gradient clipping, length-grouped batches, as :func:`sftbook.sft.train_lora`; ``evaluate(model)`` as there."""
    features = [preference_features(tokenizer, pair, config.max_length, system) for pair in pairs]
    if not features:
        raise SftbookError("No preference pairs; pass PreferencePair(prompt, chosen, rejected) rows.")
    check_pairing(model, tokenizer)
    if lora_modules(model):
        raise SftbookError("The model already has a LoRA adapter; merge it first (lora.merge_lora): the merged model is DPO's reference.")
    layers = model.config.num_hidden_layers
    add_lora(model, config.r, config.alpha, layers=range(max(0, layers - config.top_layers), layers), seed=config.seed)
    optimizer = adamw(model, config.learning_rate, weight_decay=0.0)
    schedule = warmup_schedule(optimizer, config.steps, int(config.warmup_fraction * config.steps))
    lengths = [len(f["chosen"]["input_ids"]) + len(f["rejected"]["input_ids"]) for f in features]
    per_epoch = math.ceil(len(features) / config.batch_size)
    bar = progress_bar(config.steps, "DPO", disable=not progress)
    history, evaluating = [], 0.0  # seconds spent in evaluate(), left out of the training time
    if evaluate and evaluate_every:
        history.append({"step": 0, "pairs seen": 0, "seconds": 0.0, **evaluate(model.eval())})
    start = time.perf_counter()
    model.train()
    for step in range(config.steps):
        epoch, index = divmod(step, per_epoch)
        rows = epoch_batches(lengths, config.batch_size, config.seed, epoch)[index]
        terms = dpo_terms(model, pair_batch([features[i] for i in rows], tokenizer.pad_token_id), config.beta, config.nll_weight)
        terms.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.clip_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        seen = (history[-1]["pairs seen"] if history else 0) + len(rows)
        history.append({
            "step": step + 1, "loss": terms.loss.item(), "pairs seen": seen, "seconds": time.perf_counter() - start - evaluating,
            **reward_summary(terms),
        })  # fmt: skip
        if evaluate and evaluate_every and ((step + 1) % evaluate_every == 0 or step + 1 == config.steps):
            began = time.perf_counter()
            history[-1].update(evaluate(model.eval()))
            evaluating += time.perf_counter() - began
            model.train()
        bar.set_postfix(loss=f"{terms.loss.item():.3f}")
        bar.update(1)
    bar.close()
    model.eval()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return SFTResult(history, time.perf_counter() - start - evaluating, trainable)


def reward_summary(terms: DPOTerms) -> dict[str, float]:
    """What DPO runs are watched by: the share of pairs whose chosen answer has the higher implicit reward,
    the mean margin, and each side's mean reward (a chosen reward that falls is common, and not a failure)."""
    return {
        "reward accuracy": float((terms.chosen_rewards > terms.rejected_rewards).float().mean()),
        "reward margin": float((terms.chosen_rewards - terms.rejected_rewards).mean()),
        "chosen reward": float(terms.chosen_rewards.mean()),
        "rejected reward": float(terms.rejected_rewards.mean()),
    }


@torch.no_grad()
def held_out_rewards(model, tokenizer, pairs: Sequence[PreferencePair], beta: float, max_length: int = 128, batch_size: int = 8) -> dict[str, float]:
    """:func:`reward_summary` and the DPO loss over held-out ``pairs`` (the policy with its adapter on, the reference with it off)."""
    features = [preference_features(tokenizer, pair, max_length) for pair in pairs]
    if not features:
        raise SftbookError("No held-out preference pairs to score; pass at least one PreferencePair.")
    check_pairing(model, tokenizer)
    chosen, rejected, losses = [], [], []
    for begin in range(0, len(features), batch_size):
        part = features[begin : begin + batch_size]
        terms = dpo_terms(model, pair_batch(part, tokenizer.pad_token_id), beta)
        chosen.append(terms.chosen_rewards)
        rejected.append(terms.rejected_rewards)
        losses.append(terms.loss * len(part))
    every = DPOTerms(torch.stack(losses).sum() / len(features), torch.cat(chosen), torch.cat(rejected))
    return {"loss": float(every.loss), **reward_summary(every)}
