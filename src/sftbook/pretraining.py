"""Pretraining a small BERT with masked language modelling on the CPU (chapter 3).

The corpus is unlabeled in-domain movie text (MR, SUBJ and the SST training sentences, labels dropped)
with every sentence of every evaluation split removed. The masking follows BERT: 15% of the ordinary
tokens are chosen; of those 80% become ``[MASK]``, 10% a random token and 10% stay unchanged. The
prediction head runs only at the chosen positions (a *sparse* head), which the chapter shows is faster.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from sftbook import data
from sftbook.artifacts import find_checkpoint, load_checkpoint_state, save_checkpoint
from sftbook.batching import IGNORE_INDEX, encode_texts, epoch_batches, pad_batch
from sftbook.env import at_scale, derived_seed
from sftbook.env import progress as progress_bar
from sftbook.errors import SftbookError, UnknownNameError, require_positive_integers
from sftbook.optimization import adamw, warmup_schedule
from sftbook.tokenization import SPECIAL_TOKENS, train_wordpiece

# Sized for a 2-core CPU: `tiny` is Google's BERT-Tiny shape (Turc et al., 2019), `mini` BERT-Mini's.
SIZES: dict[str, dict[str, int]] = {
    # nano and micro exist for chapter 11's scaling study; tiny and mini follow Turc et al. (2019)
    "nano": {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 128},
    "micro": {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 256},
    "tiny": {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512},
    "mini": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024},
}
CORPUS_SOURCES = ("mr", "subj", "sst5-train")


def bert_config(size: str, vocab_size: int, max_length: int, dropout: float = 0.1):
    """A ``BertConfig`` of a named size whose position embeddings cover ``max_length`` tokens."""
    if size not in SIZES:
        raise UnknownNameError("model size", size, sorted(SIZES))
    return BertConfig(
        vocab_size=vocab_size,
        max_position_embeddings=max_length,
        type_vocab_size=2,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        **SIZES[size],
    )


# ----------------------------------------------------------------------------- corpus


def normalize(text: str) -> str:
    """Lower-case letters and digits only: how sentences are compared for overlap across files."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def evaluation_keys() -> set[str]:
    """Normalised text of every validation and test sentence of every named dataset."""
    keys = set()
    for name in data.DATASETS:
        dataset = data.load(name)
        for split in ("validation", "test"):
            keys.update(normalize(t) for t in dataset[split]["text"])
    return keys


@dataclass
class Corpus:
    """Unlabeled pretraining text, split into training sentences and a held-out slice."""

    train: list[str]
    heldout: list[str]
    stats: dict[str, int] = field(default_factory=dict)


def _source_sentences(source: str) -> list[str]:
    if source == "sst5-train":
        return list(data.load("sst5")["train"]["text"])
    if source in data.CORPORA:
        return data.load_corpus(source)
    raise UnknownNameError("corpus source", source, [*sorted(data.CORPORA), "sst5-train"])


def build_corpus(sources: tuple[str, ...] = CORPUS_SOURCES, heldout_every: int = 20, exclude: set[str] | None = None) -> Corpus:
    """Collect, de-duplicate and filter sentences; every ``heldout_every``-th (by hash) is held out.

    ``exclude`` holds normalised sentences that must not appear (default: :func:`evaluation_keys`), so
    no test sentence leaks into pretraining.
    """
    if not sources:
        raise SftbookError("No corpus sources given; use e.g. sources=('mr', 'subj', 'sst5-train').")
    exclude = evaluation_keys() if exclude is None else exclude
    seen: set[str] = set()
    kept: list[str] = []
    stats = {"read": 0, "dropped_evaluation": 0, "dropped_duplicate": 0, "dropped_empty": 0}
    for source in sources:
        for text in _source_sentences(source):
            stats["read"] += 1
            key = normalize(text)
            if not key:
                stats["dropped_empty"] += 1
            elif key in exclude:
                stats["dropped_evaluation"] += 1
            elif key in seen:
                stats["dropped_duplicate"] += 1
            else:
                seen.add(key)
                kept.append(text.strip())
    if not kept:
        raise SftbookError(
            f"The corpus from {', '.join(sources)} is empty after removing evaluation sentences and duplicates; add sources with other text."
        )
    heldout_mask = [int(hashlib.sha1(t.encode()).hexdigest(), 16) % heldout_every == 0 for t in kept]
    corpus = Corpus(
        train=[t for t, h in zip(kept, heldout_mask) if not h],
        heldout=[t for t, h in zip(kept, heldout_mask) if h],
        stats=stats,
    )
    corpus.stats.update(train_sentences=len(corpus.train), heldout_sentences=len(corpus.heldout))
    return corpus


# ----------------------------------------------------------------------------- masking and loss


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator,
    probability: float = 0.15,
    num_special: int = len(SPECIAL_TOKENS),
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking. Returns ``(inputs, labels)``; labels are ``IGNORE_INDEX`` where nothing is predicted.

    Only ordinary tokens (id >= ``num_special``, not padding) can be chosen; of the chosen ones 80%
    become ``mask_id``, 10% a random ordinary token and 10% keep their id. At least one token per
    batch is chosen, so the loss is always defined.
    """
    if input_ids.shape != attention_mask.shape:
        raise SftbookError(f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} differ in shape.")
    if not 0.0 < probability < 1.0:
        raise SftbookError(f"Masking probability must lie in (0, 1), got {probability}.")
    eligible = (input_ids >= num_special) & attention_mask.bool()  # (batch, seq)
    if not eligible.any():
        raise SftbookError("No ordinary token to mask: the batch holds only special or padding tokens.")
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & eligible
    if not chosen.any():
        positions = eligible.nonzero()
        pick = positions[torch.randint(len(positions), (1,), generator=generator)][0]
        chosen[pick[0], pick[1]] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    roll = torch.rand(input_ids.shape, generator=generator)
    to_mask = chosen & (roll < 0.8)
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)
    random_ids = torch.randint(num_special, vocab_size, input_ids.shape, generator=generator)
    inputs = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, labels


def check_sequence_length(input_ids: torch.Tensor, model) -> None:
    """A clear error, instead of an index error deep in the embedding, for too-long inputs."""
    limit = model.config.max_position_embeddings
    if input_ids.shape[-1] > limit:
        raise SftbookError(
            f"A sequence of {input_ids.shape[-1]} tokens exceeds the model's {limit} position embeddings; "
            f"tokenize with truncation=True, max_length={limit}."
        )


def mlm_loss(model, inputs: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, sparse: bool = True) -> torch.Tensor:
    """Mean cross-entropy over the masked positions of a ``BertForMaskedLM``.

    ``sparse=True`` runs the prediction head (transform + vocabulary projection) only at the masked
    ~15% of positions; ``sparse=False`` computes logits everywhere, as ``BertForMaskedLM.forward`` does.
    """
    check_sequence_length(inputs, model)
    hidden = model.bert(input_ids=inputs, attention_mask=attention_mask).last_hidden_state  # (batch, seq, hidden)
    if sparse:
        chosen = labels != IGNORE_INDEX  # (batch, seq)
        logits = model.cls(hidden[chosen])  # (n_masked, vocab)
        return F.cross_entropy(logits, labels[chosen])
    logits = model.cls(hidden)  # (batch, seq, vocab)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


# ----------------------------------------------------------------------------- training


@dataclass
class PretrainConfig:
    """Everything that determines a pretraining run (and so its cache key)."""

    size: str = "tiny"
    vocab_size: int = 8000
    max_length: int = 64
    batch_size: int = 32
    steps: int = field(default_factory=lambda: at_scale(6000, 200))  # 200 at the reduced scale (make test)
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.06
    weight_decay: float = 0.01
    adam_beta2: float = 0.999
    clip_norm: float = 1.0
    mlm_probability: float = 0.15
    dropout: float = 0.0  # off (BERT used 0.1): a short run whose held-out loss still falls to the end (chapter 3)
    seed: int = 0
    eval_every: int = field(default_factory=lambda: at_scale(500, 50))
    checkpoint_every: int = field(default_factory=lambda: at_scale(1000, 100))

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise UnknownNameError("model size", self.size, sorted(SIZES))
        require_positive_integers(self, ("vocab_size", "max_length", "batch_size", "steps", "eval_every", "checkpoint_every"))


@dataclass
class PretrainResult:
    model: Any
    tokenizer: Any
    history: list[dict[str, float]]
    evaluations: list[dict[str, float]]
    out_dir: Path
    tokens_processed: int
    seconds: float


def evaluate_mlm(model, sequences: list[list[int]], tokenizer, batch_size: int = 256, seed: int = 1234) -> float:
    """Mean masked-LM loss on ``sequences`` with a fixed masking, so evaluations are comparable."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            batch = pad_batch(sequences[start : start + batch_size], tokenizer.pad_token_id)
            inputs, labels = mask_tokens(batch["input_ids"], batch["attention_mask"], tokenizer.mask_token_id, len(tokenizer), generator)
            n = int((labels != IGNORE_INDEX).sum())
            loss = mlm_loss(model, inputs.to(device), batch["attention_mask"].to(device), labels.to(device))
            total += loss.item() * n
            count += n
    model.train()
    return total / count


def pretrain(
    config: PretrainConfig,
    out_dir: Path,
    corpus: Corpus | None = None,
    tokenizer=None,
    overwrite: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    device: torch.device | None = None,
) -> PretrainResult:
    """Pretrain a ``BertForMaskedLM`` with MLM; resumable from ``out_dir/checkpoint``.

    Every random choice is a function of ``(config.seed, step)`` — batch order, masking, dropout — so a
    run resumed from a checkpoint ends with exactly the weights of an uninterrupted one (on the CPU).
    ``tokenizer`` defaults to a WordPiece vocabulary of ``config.vocab_size`` trained on the corpus;
    ``stop_after`` ends the run early after that many steps (used to test resuming).
    """
    run = _start_or_resume(config, Path(out_dir), corpus or build_corpus(), tokenizer, overwrite, device or torch.device("cpu"))
    model, optimizer, schedule, state = run.model, run.optimizer, run.schedule, run.state
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    bar = progress_bar(config.steps, f"pretraining BERT-{config.size}", initial=state["step"], disable=not progress)
    start_time = time.perf_counter() - state["seconds"]
    model.train()
    while state["step"] < end:
        step = state["step"]
        inputs, labels, attention_mask = run.batch(step)
        lr = schedule.get_last_lr()[0]
        torch.manual_seed(derived_seed(config.seed, "dropout", step))
        loss = mlm_loss(model, inputs, attention_mask, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)

        state["step"] = step + 1
        state["tokens"] += int(attention_mask.sum())
        state["history"].append({"step": step + 1, "loss": loss.item(), "lr": lr})
        if state["step"] % config.eval_every == 0 or state["step"] == config.steps:
            heldout = evaluate_mlm(model, run.heldout_ids, run.tokenizer)
            state["evaluations"].append({"step": state["step"], "heldout_loss": heldout})
            bar.set_postfix(loss=f"{loss.item():.3f}", heldout=f"{heldout:.3f}")
        bar.update(1)
        if state["step"] % config.checkpoint_every == 0 or state["step"] == end:
            state["seconds"] = time.perf_counter() - start_time
            save_checkpoint(run.out_dir, model, optimizer, state, run.tokenizer)
    bar.close()
    state["seconds"] = time.perf_counter() - start_time
    if state["step"] == config.steps:
        _save_final(run.out_dir, model, run.tokenizer, state)
    model.eval()
    return PretrainResult(model, run.tokenizer, state["history"], state["evaluations"], run.out_dir, state["tokens"], state["seconds"])


@dataclass
class _Run:
    """What :func:`pretrain` needs at every step: built afresh or restored from the last checkpoint."""

    config: PretrainConfig
    out_dir: Path
    model: Any
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    schedule: Any
    state: dict[str, Any]
    train_ids: list[list[int]]
    heldout_ids: list[list[int]]
    device: torch.device
    _epoch: tuple[int, list[list[int]]] = (-1, [])

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(inputs, labels, attention_mask)`` of ``step``: its batch and its masking depend on the step alone."""
        config = self.config
        epoch, index = divmod(step, math.ceil(len(self.train_ids) / config.batch_size))
        if self._epoch[0] != epoch:
            self._epoch = (epoch, epoch_batches([len(s) for s in self.train_ids], config.batch_size, config.seed, epoch))
        batch = pad_batch([self.train_ids[i] for i in self._epoch[1][index]], self.tokenizer.pad_token_id)
        masking = torch.Generator().manual_seed(derived_seed(config.seed, "masking", step))
        inputs, labels = mask_tokens(
            batch["input_ids"], batch["attention_mask"], self.tokenizer.mask_token_id, len(self.tokenizer), masking, config.mlm_probability
        )
        return inputs.to(self.device), labels.to(self.device), batch["attention_mask"].to(self.device)


def _start_or_resume(config: PretrainConfig, out_dir: Path, corpus: Corpus, tokenizer, overwrite: bool, device: torch.device) -> _Run:
    if overwrite and out_dir.exists():
        shutil.rmtree(out_dir)
    checkpoint = find_checkpoint(out_dir)
    state: dict[str, Any] = {"step": 0, "history": [], "evaluations": [], "tokens": 0, "seconds": 0.0, "config": asdict(config)}
    if checkpoint is not None:
        saved = json.loads((checkpoint / "state.json").read_text())
        if saved["config"] != asdict(config):
            raise SftbookError(f"{checkpoint} belongs to a run with another configuration; pass overwrite=True or another out_dir.")
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        model = BertForMaskedLM.from_pretrained(checkpoint)
    else:
        tokenizer = tokenizer or train_wordpiece(corpus.train, vocab_size=config.vocab_size)
        torch.manual_seed(config.seed)
        model = BertForMaskedLM(bert_config(config.size, len(tokenizer), config.max_length, config.dropout))
    model.to(device)
    optimizer = adamw(model, config.learning_rate, config.weight_decay, config.adam_beta2)
    if checkpoint is not None:
        state = load_checkpoint_state(checkpoint, optimizer)
    schedule = warmup_schedule(optimizer, config.steps, int(config.warmup_fraction * config.steps), done_steps=state["step"])
    return _Run(
        config,
        out_dir,
        model,
        tokenizer,
        optimizer,
        schedule,
        state,
        train_ids=encode_texts(tokenizer, corpus.train, config.max_length),
        heldout_ids=encode_texts(tokenizer, corpus.heldout, config.max_length),
        device=device,
    )


COMPLETE = "state.json"  # written last: a folder with it holds a finished run


def _save_final(out_dir: Path, model, tokenizer, state: dict[str, Any]) -> None:
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / COMPLETE).write_text(json.dumps({**state, "complete": True}))


def is_complete(path: Path) -> bool:
    """Whether ``path`` holds a finished pretraining run (not only checkpoints)."""
    state = Path(path) / COMPLETE
    return state.is_file() and bool(json.loads(state.read_text()).get("complete"))


# ----------------------------------------------------------------------------- using the model


def fill_mask(model, tokenizer, text: str, top_k: int = 5) -> list[tuple[str, float]]:
    """The ``top_k`` most probable tokens (with probabilities) for the single ``[MASK]`` in ``text``."""
    if not text or not text.strip():
        raise SftbookError("fill_mask needs a non-empty text containing one [MASK].")
    encoded = tokenizer(text, return_tensors="pt")
    positions = (encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten()
    if len(positions) != 1:
        raise SftbookError(f"fill_mask needs exactly one {tokenizer.mask_token} in the text, found {len(positions)}.")
    check_sequence_length(encoded["input_ids"], model)
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        hidden = model.bert(input_ids=encoded["input_ids"].to(device), attention_mask=encoded["attention_mask"].to(device)).last_hidden_state
        probs = model.cls(hidden[0, positions]).softmax(-1)[0]  # (vocab,)
    values, ids = probs.topk(top_k)
    return [(tokenizer.convert_ids_to_tokens(int(i)), float(v)) for v, i in zip(values, ids)]
