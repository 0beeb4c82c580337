"""Training machinery shared by pretraining (chapter 3) and supervised fine-tuning (chapter 4).

Batches are length-grouped and padded only to their longest member (dynamic padding); the learning
rate warms up linearly, then decays linearly to zero; checkpoints are written atomically, so an
interrupted run resumes from its last checkpoint and ends where an uninterrupted one would.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sftbook.errors import SftbookError

CHECKPOINT = "checkpoint"


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator, group_factor: int = 50
) -> list[list[int]]:
    """Shuffle, then sort each window of ``group_factor`` batches by length and cut it into batches.

    Sentences of similar length share a batch, so little compute is spent on padding, while the order
    of batches stays random. The result depends only on ``generator``'s state.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * group_factor
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` padded to the longest sequence of this batch."""
    if not sequences:
        raise ValueError("Cannot pad an empty batch.")
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)  # (batch, seq)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def linear_warmup_decay(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier: 0 → 1 over ``warmup_steps``, then 1 → 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def adamw(model, learning_rate: float, weight_decay: float, beta2: float = 0.999) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay on weight matrices only, not on biases and LayerNorm gains.

    The fused kernel (one pass over all parameters; Trainer's default too) where the parameters live on
    the CPU or a CUDA GPU: it made a MiniLM fine-tuning step 1.19x faster on the 2-core CPU (chapter 4).
    """
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in decay + no_decay)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=learning_rate,
        betas=(0.9, beta2),
        fused=fused or None,
    )


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state into tensors (for safetensors) and JSON-able settings — no pickle."""
    state = optimizer.state_dict()
    tensors, meta = {}, {"param_groups": state["param_groups"], "scalars": {}}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.contiguous()
            else:
                meta["scalars"][f"{index}.{key}"] = value
    return tensors, meta


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in [*tensors.items(), *meta["scalars"].items()]:
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(run_dir: Path, model, optimizer: torch.optim.Optimizer, state: dict[str, Any], tokenizer=None) -> Path:
    """Write model (safetensors), optimizer state and ``state.json`` to ``run_dir/checkpoint`` atomically.

    Everything goes to a temporary folder first, which then replaces the old checkpoint by renames, so
    a crash at any moment leaves one complete checkpoint behind.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=run_dir))
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    tensors, meta = optimizer_state_tensors(optimizer)
    save_file(tensors, tmp / "optimizer.safetensors")
    (tmp / "optimizer.json").write_text(json.dumps(meta))
    (tmp / "state.json").write_text(json.dumps(state))
    final, old = run_dir / CHECKPOINT, run_dir / f"{CHECKPOINT}.old"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint to resume from, also after a crash between the two renames of a save."""
    for name in (CHECKPOINT, f"{CHECKPOINT}.old"):
        candidate = run_dir / name
        if (candidate / "state.json").is_file():
            return candidate
    return None


def load_checkpoint_state(checkpoint: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore the optimizer from ``checkpoint`` and return its ``state.json``."""
    load_optimizer_state(
        optimizer,
        load_file(checkpoint / "optimizer.safetensors"),
        json.loads((checkpoint / "optimizer.json").read_text()),
    )
    return json.loads((checkpoint / "state.json").read_text())


# ----------------------------------------------------------------------------- fine-tuning (chapter 4)

@dataclass
class FineTuneConfig:
    """Settings of a supervised fine-tuning run."""

    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    clip_norm: float = 1.0
    max_length: int = 64
    seed: int = 0
    # "auto": bf16 autocast where the device has bf16 hardware (env.native_bf16), else float32
    precision: str = "auto"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise SftbookError(f"{name} must be at least 1, got {getattr(self, name)}; pass a positive whole number.")
        if not self.learning_rate > 0:
            raise SftbookError(f"learning_rate must be positive, got {self.learning_rate}.")
        check_precision(self.precision)


PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise SftbookError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}; pass one of those.")


def mixed_precision(precision: str, device: torch.device) -> str:
    """The autocast a :class:`FineTuneConfig` precision means on ``device``: ``"bf16"`` or ``"no"``.

    Weights, gradients and optimizer state stay float32; only the forward pass runs in bfloat16 autocast.
    """
    from sftbook.env import native_bf16

    check_precision(precision)
    if precision == "auto":
        return "bf16" if native_bf16(device) else "no"
    return "bf16" if precision == "bf16" else "no"


@dataclass
class FineTuneResult:
    model: Any
    history: list[dict[str, float]]  # one row per epoch: train loss, validation accuracy and F1
    best_epoch: int
    seconds: float


class LengthGroupedBatchSampler:
    """Batch sampler over :func:`length_grouped_batches`, reshuffled by ``set_epoch`` (Accelerate shards it)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return iter(length_grouped_batches(self.lengths, self.batch_size, generator))

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size) if self.lengths else 0


def fine_tune(model, tokenizer, dataset, config: FineTuneConfig, progress: bool = True, accelerator=None) -> FineTuneResult:
    """Supervised fine-tuning with AdamW, linear warm-up/decay, clipping and dynamic padding.

    Runs through Hugging Face Accelerate, so the same loop trains on the CPU, on one GPU or on several
    (``accelerate launch``); with ``precision="auto"`` the forward pass runs in bf16 autocast wherever
    the hardware has bf16 (CUDA GPUs, recent x86 CPUs — :func:`mixed_precision`). Evaluates on
    ``dataset["validation"]`` after every epoch and returns the model restored to its best epoch. On the
    CPU a run is deterministic for a given seed.
    """
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from sftbook.env import progress as progress_bar
    from sftbook.evaluation import encode_texts, predict_logits, scores

    accelerator = accelerator or Accelerator()
    # autocast here rather than Accelerator(mixed_precision=...): Accelerate fixes that once per process
    bf16 = mixed_precision(config.precision, accelerator.device) == "bf16"
    torch.manual_seed(config.seed)
    texts, labels = list(dataset["train"]["text"]), list(dataset["train"]["label"])
    if not texts:
        raise SftbookError("The training split is empty; fine-tuning needs labelled examples.")
    bad = [y for y in labels if not 0 <= y < model.num_labels]
    if bad:
        raise SftbookError(f"Label {bad[0]} is outside the model's label set 0..{model.num_labels - 1}; check num_labels.")
    limit = min(config.max_length, model.encoder.config.max_position_embeddings)
    train_ids = encode_texts(tokenizer, texts, limit)
    pad_id = tokenizer.pad_token_id

    def collate(indices: list[int]) -> dict[str, torch.Tensor]:
        batch = pad_batch([train_ids[i] for i in indices], pad_id)
        batch["labels"] = torch.tensor([labels[i] for i in indices])
        return batch

    sampler = LengthGroupedBatchSampler([len(s) for s in train_ids], config.batch_size, config.seed)
    loader = DataLoader(list(range(len(train_ids))), batch_sampler=sampler, collate_fn=lambda b: collate(b))
    optimizer = adamw(model, config.learning_rate, config.weight_decay)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    total = config.epochs * len(loader)
    warmup = max(1, int(config.warmup_fraction * total))
    history, best, best_state = [], -1.0, None
    bar = progress_bar(total, "fine-tuning", disable=not progress or not accelerator.is_main_process)
    start, step = time.perf_counter(), 0
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        model.train()
        running = 0.0
        for batch in loader:
            lr = config.learning_rate * linear_warmup_decay(step, total, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with accelerator.autocast(), torch.autocast(accelerator.device.type, torch.bfloat16, enabled=bf16):
                logits = model(batch["input_ids"], batch["attention_mask"])
                loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
            if not torch.isfinite(loss):
                raise SftbookError(f"The loss became {loss.item()} at step {step}; lower the learning rate (now {config.learning_rate}).")
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            running += loss.item()
            step += 1
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update(1)
        unwrapped = accelerator.unwrap_model(model)
        logits = predict_logits(unwrapped, tokenizer, list(dataset["validation"]["text"]), limit)
        metrics = scores(logits.argmax(-1).tolist(), list(dataset["validation"]["label"]), unwrapped.num_labels)
        history.append({
            "epoch": epoch + 1,
            "train_loss": running / max(1, len(loader)),
            **{f"validation_{k}": v for k, v in metrics.items()},
            "seconds": time.perf_counter() - start,  # cumulative, evaluation included
        })
        if metrics["accuracy"] > best:
            best, best_epoch = metrics["accuracy"], epoch + 1
            best_state = {k: v.detach().cpu().clone() for k, v in unwrapped.state_dict().items()}
    bar.close()
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.load_state_dict(best_state)
    return FineTuneResult(unwrapped.eval(), history, best_epoch, time.perf_counter() - start)


FINETUNE_DEFAULTS: dict[str, dict[str, Any]] = {
    # chosen on SST-2 validation accuracy; MiniLM, bf16 autocast, 2-core CPU: lr 5e-5 x 3 epochs 0.877,
    # 1e-4 x 2 0.882, 1e-4 x 3 0.882, 2e-4 x 2 0.891, 3e-4 x 2 0.876
    "minilm": {"learning_rate": 2e-4, "epochs": 2},
    "minilm-random": {"learning_rate": 2e-4, "epochs": 2},  # the same recipe, to isolate pretraining (chapter 10)
    "tiny": {"learning_rate": 3e-4, "epochs": 3},
    "tiny-random": {"learning_rate": 3e-4, "epochs": 3},
}


def finetuned_classifier(
    model_name: str, dataset_name: str, pooling: str = "mean", build: bool = True, train_size: int | None = None, **overrides: Any
):
    """A fine-tuned ``(TextClassifier, tokenizer, history)`` from the cache, trained (with a message) when missing.

    Chapters 5, 7, 8 and 10 use the classifiers chapter 4 trains; each still runs alone. ``train_size``
    fine-tunes on a stratified subset of the training split (:func:`sftbook.data.subsample`, seed 0).
    """
    import hashlib
    import inspect
    from dataclasses import asdict

    from transformers import AutoTokenizer

    from sftbook import data, modeling
    from sftbook.env import cache_root, get_device

    config = FineTuneConfig(**{**FINETUNE_DEFAULTS.get(model_name, {}), **overrides})
    in_use = mixed_precision(config.precision, get_device(verbose=False))  # "auto" differs between machines
    digest = hashlib.sha256(json.dumps([model_name, dataset_name, pooling, asdict(config), train_size, in_use], sort_keys=True).encode())
    digest.update(json.dumps(data.expected_checksums(), sort_keys=True).encode())
    for module in (inspect.getmodule(fine_tune), modeling):
        digest.update(inspect.getsource(module).encode())
    if model_name in ("tiny", "tiny-random"):  # chapter 3 re-pretrains: its weights and vocabulary are inputs too
        from sftbook import pretraining

        digest.update(pretraining.checkpoint_fingerprint(pretraining.PretrainConfig(), build=build).encode())
    subset = "" if train_size is None else f"-n{train_size}"
    path = cache_root() / f"finetuned-{Path(model_name).name}-{dataset_name}{subset}-{digest.hexdigest()[:12]}"
    if (path / modeling.CLASSIFIER_CONFIG).is_file() and (path / "history.json").is_file():
        history = json.loads((path / "history.json").read_text())
        return modeling.TextClassifier.from_pretrained(path), AutoTokenizer.from_pretrained(path), history
    if not build:
        raise SftbookError(f"No fine-tuned {model_name} on {dataset_name} at {path}; run book/04_fine_tuning.ipynb.")
    print(f"No cached {model_name} fine-tuned on {dataset_name} at {path}: fine-tuning it now.")
    dataset = data.load(dataset_name)
    if train_size is not None:
        dataset["train"] = data.subsample(dataset["train"], train_size)
    encoder, tokenizer = modeling.load_encoder(model_name)
    names = dataset["train"].features["label"].names
    model = modeling.TextClassifier(encoder, len(names), pooling, label_names=names, seed=config.seed)
    result = fine_tune(model, tokenizer, dataset, config)
    result.model.save_pretrained(path, tokenizer)
    (path / "history.json").write_text(json.dumps(result.history))  # written last: marks the save complete
    return result.model, tokenizer, result.history
