"""Pretraining a small BERT with masked language modelling on the CPU (chapter 3).

The corpus is unlabeled in-domain movie text (MR, SUBJ and the SST training sentences, labels dropped)
with every sentence of every evaluation split removed. The masking follows BERT: 15% of the ordinary
tokens are chosen; of those 80% become ``[MASK]``, 10% a random token and 10% stay unchanged. The
prediction head runs only at the chosen positions (a *sparse* head), which the chapter shows is faster.
"""

from __future__ import annotations

import hashlib
import inspect
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

from sftbook import data
from sftbook.env import cache_root
from sftbook.errors import SftbookError, UnknownNameError
from sftbook.tokenization import SPECIAL_TOKENS, train_wordpiece
from sftbook.training import (
    adamw,
    find_checkpoint,
    length_grouped_batches,
    linear_warmup_decay,
    load_checkpoint_state,
    pad_batch,
    save_checkpoint,
)

IGNORE_INDEX = -100  # label of positions the loss skips (PyTorch's cross_entropy default)

# Sized for a 2-core CPU: `tiny` is Google's BERT-Tiny shape (Turc et al., 2019), `mini` BERT-Mini's.
SIZES: dict[str, dict[str, int]] = {
    # nano and micro exist for chapter 9's scaling study; tiny and mini follow Turc et al. (2019)
    "nano": {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 128},
    "micro": {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 256},
    "tiny": {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512},
    "mini": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024},
}
CORPUS_SOURCES = ("mr", "subj", "sst5-train")


def bert_config(size: str, vocab_size: int, max_length: int, dropout: float = 0.1):
    """A ``BertConfig`` of a named size whose position embeddings cover ``max_length`` tokens."""
    from transformers import BertConfig

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
            f"The corpus from {', '.join(sources)} is empty after removing evaluation sentences and "
            "duplicates; add sources with other text."
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
    batch_size: int = 32  # measured: more, smaller updates beat fewer large ones in a CPU budget
    steps: int = 6000
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.06
    weight_decay: float = 0.01
    adam_beta2: float = 0.999
    clip_norm: float = 1.0
    mlm_probability: float = 0.15
    dropout: float = 0.0  # the model underfits this corpus; dropout only slowed it down
    seed: int = 0
    eval_every: int = 500
    checkpoint_every: int = 1000

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise UnknownNameError("model size", self.size, sorted(SIZES))
        for name in ("vocab_size", "max_length", "batch_size", "steps", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise SftbookError(f"{name} must be at least 1, got {getattr(self, name)}; pass a positive whole number.")


@dataclass
class PretrainResult:
    model: Any
    tokenizer: Any
    history: list[dict[str, float]]
    evaluations: list[dict[str, float]]
    out_dir: Path
    tokens_processed: int
    seconds: float


def _encode(tokenizer, sentences: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(sentences, truncation=True, max_length=max_length)["input_ids"]


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
    from transformers import AutoTokenizer, BertForMaskedLM

    from sftbook.env import progress as progress_bar

    out_dir = Path(out_dir)
    if overwrite and out_dir.exists():
        shutil.rmtree(out_dir)
    corpus = corpus or build_corpus()
    device = device or torch.device("cpu")
    checkpoint = find_checkpoint(out_dir)
    if checkpoint is not None:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    elif tokenizer is None:
        tokenizer = train_wordpiece(corpus.train, vocab_size=config.vocab_size)
    train_ids = _encode(tokenizer, corpus.train, config.max_length)
    heldout_ids = _encode(tokenizer, corpus.heldout, config.max_length)
    lengths = [len(s) for s in train_ids]

    state: dict[str, Any] = {"step": 0, "history": [], "evaluations": [], "tokens": 0, "seconds": 0.0, "config": asdict(config)}
    if checkpoint is not None:
        saved = json.loads((checkpoint / "state.json").read_text())
        if saved["config"] != asdict(config):
            raise SftbookError(f"{checkpoint} belongs to a run with another configuration; pass overwrite=True or another out_dir.")
        model = BertForMaskedLM.from_pretrained(checkpoint)
    else:
        torch.manual_seed(config.seed)
        model = BertForMaskedLM(bert_config(config.size, len(tokenizer), config.max_length, config.dropout))
    model.to(device)
    optimizer = adamw(model, config.learning_rate, config.weight_decay, config.adam_beta2)
    if checkpoint is not None:
        state = load_checkpoint_state(checkpoint, optimizer)
    warmup = max(1, int(config.warmup_fraction * config.steps))
    model.train()

    epoch_batches: dict[int, list[list[int]]] = {}
    batches_per_epoch = math.ceil(len(train_ids) / config.batch_size)
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    bar = progress_bar(config.steps, f"pretraining BERT-{config.size}", initial=state["step"], disable=not progress)
    start_time = time.perf_counter() - state["seconds"]
    while state["step"] < end:
        step = state["step"]
        epoch, index = divmod(step, batches_per_epoch)
        if epoch not in epoch_batches:
            epoch_batches = {epoch: length_grouped_batches(lengths, config.batch_size, torch.Generator().manual_seed(config.seed * 7919 + epoch))}
        batch = pad_batch([train_ids[i] for i in epoch_batches[epoch][index]], tokenizer.pad_token_id)
        masking = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        inputs, labels = mask_tokens(
            batch["input_ids"], batch["attention_mask"], tokenizer.mask_token_id, len(tokenizer), masking, config.mlm_probability
        )
        inputs, labels, attention_mask = inputs.to(device), labels.to(device), batch["attention_mask"].to(device)
        lr = config.learning_rate * linear_warmup_decay(step, config.steps, warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(config.seed + step)  # dropout masks depend on the step alone
        loss = mlm_loss(model, inputs, attention_mask, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        state["step"] = step + 1
        state["tokens"] += int(batch["attention_mask"].sum())
        state["history"].append({"step": step + 1, "loss": loss.item(), "lr": lr})
        if state["step"] % config.eval_every == 0 or state["step"] == config.steps:
            heldout = evaluate_mlm(model, heldout_ids, tokenizer)
            state["evaluations"].append({"step": state["step"], "heldout_loss": heldout})
            bar.set_postfix(loss=f"{loss.item():.3f}", heldout=f"{heldout:.3f}")
        bar.update(1)
        if state["step"] % config.checkpoint_every == 0 or state["step"] == end:
            state["seconds"] = time.perf_counter() - start_time
            save_checkpoint(out_dir, model, optimizer, state, tokenizer)
    bar.close()
    state["seconds"] = time.perf_counter() - start_time
    if state["step"] == config.steps:
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
        (out_dir / "state.json").write_text(json.dumps({**state, "complete": True}))
    model.eval()
    return PretrainResult(model, tokenizer, state["history"], state["evaluations"], out_dir, state["tokens"], state["seconds"])


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
        hidden = model.bert(
            input_ids=encoded["input_ids"].to(device), attention_mask=encoded["attention_mask"].to(device)
        ).last_hidden_state
        probs = model.cls(hidden[0, positions]).softmax(-1)[0]  # (vocab,)
    values, ids = probs.topk(top_k)
    return [(tokenizer.convert_ids_to_tokens(int(i)), float(v)) for v, i in zip(values, ids)]


def cache_path(config: PretrainConfig) -> Path:
    """A folder named after everything that determines the run: its config, the data, this code."""
    import tokenizers
    import transformers

    from sftbook import training

    digest = hashlib.sha256()
    digest.update(json.dumps(asdict(config), sort_keys=True).encode())
    digest.update(json.dumps(data.expected_checksums(), sort_keys=True).encode())
    for module in (inspect.getmodule(pretrain), training):
        digest.update(inspect.getsource(module).encode())
    digest.update(f"{torch.__version__} {transformers.__version__} {tokenizers.__version__}".encode())
    return cache_root() / f"pretrained-bert-{config.size}-{digest.hexdigest()[:12]}"


def _complete(path: Path) -> bool:
    state = path / "state.json"
    return state.is_file() and bool(json.loads(state.read_text()).get("complete"))


def checkpoint_fingerprint(config: PretrainConfig, build: bool = True) -> str:
    """sha256 of the cached checkpoint's weights and vocabulary (pretrained first when missing and ``build``).

    Chapter 3 pretrains anew on every run, and the WordPiece trainer is not deterministic, so models
    fine-tuned from the checkpoint (chapter 4) key their cache on this, not on the configuration alone.
    """
    path = cache_path(config)
    if not _complete(path):
        if not build:
            raise SftbookError(f"No pretrained checkpoint at {path}; run book/03_pretraining.ipynb or `python -m sftbook pretrain`.")
        load_pretrained(config)
    digest = hashlib.sha256()
    for name in ("model.safetensors", "tokenizer.json"):
        digest.update(data.sha256_file(path / name).encode())
    return digest.hexdigest()


def load_pretrained(config: PretrainConfig | None = None, build: bool = True):
    """The chapter-3 checkpoint for ``config`` as ``(BertForMaskedLM, tokenizer)``; pretrained when missing.

    Later chapters call this, so each still runs alone: without the cache it pretrains (with a
    message saying so and how long it takes) instead of failing.
    """
    from transformers import AutoTokenizer, BertForMaskedLM

    config = config or PretrainConfig()
    path = cache_path(config)
    if not _complete(path):
        if not build:
            raise SftbookError(f"No pretrained checkpoint at {path}; run book/03_pretraining.ipynb or `python -m sftbook pretrain`.")
        print(f"No cached pretrained BERT-{config.size} at {path}: pretraining it now ({config.steps} steps; a few minutes on a CPU).")
        pretrain(config, path)
    return BertForMaskedLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
