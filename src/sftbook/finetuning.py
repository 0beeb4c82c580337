"""Supervised fine-tuning of a text classifier (chapter 4): the loop the book's classifiers are trained with.

AdamW with linear warm-up and decay, gradient clipping, length-grouped dynamic padding and bf16
autocast where the hardware has it; the model is evaluated on the validation split after every epoch
and returned as it was at its best epoch. The loop runs through Hugging Face Accelerate, so the same
code trains on the CPU, one GPU or several.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from sftbook.batching import LengthGroupedBatchSampler, encode_texts, pad_batch
from sftbook.env import bf16_pays_off
from sftbook.env import progress as progress_bar
from sftbook.errors import SftbookError, require_positive_integers
from sftbook.evaluation import fit_logistic, predict_logits, sentence_embeddings
from sftbook.metrics import scores
from sftbook.optimization import adamw, warmup_schedule


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
    # "auto": bf16 autocast where it makes training faster on this device (env.bf16_pays_off), else float32
    precision: str = "auto"

    def __post_init__(self) -> None:
        require_positive_integers(self, ("epochs", "batch_size", "max_length"))
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
    check_precision(precision)
    if precision == "auto":
        return "bf16" if bf16_pays_off(device) else "no"
    return "bf16" if precision == "bf16" else "no"


@dataclass
class FineTuneResult:
    model: Any
    history: list[dict[str, float]]  # one row per epoch: train loss, validation accuracy and F1
    best_epoch: int
    seconds: float


def fine_tune(model, tokenizer, dataset, config: FineTuneConfig, progress: bool = True, accelerator=None) -> FineTuneResult:
    """Supervised fine-tuning with AdamW, linear warm-up/decay, clipping and dynamic padding.

    Runs through Hugging Face Accelerate, so the same loop trains on the CPU, on one GPU or on several
    (``accelerate launch``); with ``precision="auto"`` the forward pass runs in bf16 autocast only where
    that makes training faster — a CUDA GPU with bf16, or a CPU with bf16 instructions that a timed step
    shows to be faster (:func:`sftbook.env.bf16_pays_off`) — and in float32 elsewhere. Evaluates on
    ``dataset["validation"]`` after every epoch and returns the model restored to its best epoch. On the
    CPU a run is deterministic for a given seed.
    """
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
    schedule = warmup_schedule(optimizer, total, int(config.warmup_fraction * total))
    history, best, best_state = [], -1.0, None
    bar = progress_bar(total, "fine-tuning", disable=not progress or not accelerator.is_main_process)
    start, step = time.perf_counter(), 0
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        model.train()
        running = 0.0
        for batch in loader:
            with accelerator.autocast(), torch.autocast(accelerator.device.type, torch.bfloat16, enabled=bf16):
                logits = model(batch["input_ids"], batch["attention_mask"])
                loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
            if not torch.isfinite(loss):
                raise SftbookError(f"The loss became {loss.item()} at step {step}; lower the learning rate (now {config.learning_rate}).")
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            running += loss.item()
            step += 1
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update(1)
        unwrapped = accelerator.unwrap_model(model)
        logits = predict_logits(unwrapped, tokenizer, list(dataset["validation"]["text"]), limit)
        metrics = scores(logits.argmax(-1).tolist(), list(dataset["validation"]["label"]), unwrapped.num_labels)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": running / max(1, len(loader)),
                **{f"validation_{k}": v for k, v in metrics.items()},
                "seconds": time.perf_counter() - start,  # cumulative, evaluation included
            }
        )
        if metrics["accuracy"] > best:
            best, best_epoch = metrics["accuracy"], epoch + 1
            best_state = {k: v.detach().cpu().clone() for k, v in unwrapped.state_dict().items()}
    bar.close()
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.load_state_dict(best_state)
    return FineTuneResult(unwrapped.eval(), history, best_epoch, time.perf_counter() - start)


def start_head_at_probe(model, tokenizer, train, validation, max_length: int = 64) -> None:
    """Start a classifier's head at the linear probe: the logistic regression fitted on the frozen encoder's
    sentence vectors of ``train`` (mean pooling, as the classifier uses; its regularisation chosen on
    ``validation``). Fine-tuning then starts from a working classifier — linear probing, then fine-tuning."""
    texts = {"train": list(train["text"]), "validation": list(validation["text"])}
    vectors = {split: sentence_embeddings(model.encoder, tokenizer, texts[split], max_length) for split in texts}
    probe = fit_logistic(vectors["train"], list(train["label"]), vectors["validation"], list(validation["label"]))
    weight, bias = torch.from_numpy(probe.coef_).float(), torch.from_numpy(probe.intercept_).float()
    if weight.shape[0] != model.classifier.out_features and not (weight.shape[0] == 1 and model.classifier.out_features == 2):
        raise SftbookError(f"The probe has {len(probe.classes_)} classes and the head {model.classifier.out_features}; fit it on the head's labels.")
    if weight.shape[0] == 1:  # two classes: softmax over (-z/2, z/2) is the sigmoid of z = w·x + b
        weight, bias = torch.cat([-weight / 2, weight / 2]), torch.cat([-bias / 2, bias / 2])
    with torch.no_grad():
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(bias)
