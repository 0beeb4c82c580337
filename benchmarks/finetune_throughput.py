"""Fine-tuning throughput: sftbook's loop against transformers.Trainer, and model FLOP utilisation.

Both train the same classifier (all-MiniLM-L6-v2 + mean pooling + linear head) on the same SST-2
sentences, batch size, maximum length, length-grouped batches and dynamic padding, in one process, for
the same number of steps. MFU is the loop's achieved FLOP/s — 6 · N · D / seconds, with N the
non-embedding parameters (embedding lookups do no multiply-adds; Kaplan et al., 2020) and D the tokens —
over the peak float32 matmul rate measured in this same run.

    python benchmarks/finetune_throughput.py [--steps 40] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import datasets
import torch

from sftbook import data, env, modeling, training
from sftbook.evaluation import encode_texts


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """Best observed FLOP/s of a square float32 matmul on this device."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def subset(steps: int, batch_size: int) -> datasets.DatasetDict:
    sst2 = data.load("sst2")
    train = sst2["train"].shuffle(seed=0).select(range(steps * batch_size))
    return datasets.DatasetDict({"train": train, "validation": sst2["validation"].select(range(batch_size))})


def new_classifier(label_names: list[str]) -> modeling.TextClassifier:
    torch.manual_seed(0)
    encoder, _ = modeling.load_minilm(attn_implementation="sdpa")
    return modeling.TextClassifier(encoder, 2, "mean", label_names=label_names)


def ours(dataset, batch_size: int, max_length: int) -> float:
    _, tokenizer = modeling.load_minilm()
    model = new_classifier(dataset["train"].features["label"].names)
    config = training.FineTuneConfig(epochs=1, batch_size=batch_size, max_length=max_length, learning_rate=5e-5)
    start = time.perf_counter()
    training.fine_tune(model, tokenizer, dataset, config, progress=False)
    return time.perf_counter() - start


class _TrainerModel(torch.nn.Module):
    """Trainer expects ``forward(**batch)`` to return the loss."""

    def __init__(self, classifier: modeling.TextClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids, attention_mask, labels):
        logits = self.classifier(input_ids, attention_mask)
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def trainer(dataset, batch_size: int, max_length: int) -> float:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    _, tokenizer = modeling.load_minilm()
    texts = list(dataset["train"]["text"])
    train = datasets.Dataset.from_dict(
        {"input_ids": encode_texts(tokenizer, texts, max_length), "labels": list(dataset["train"]["label"])}
    )
    train = train.map(lambda row: {"attention_mask": [1] * len(row["input_ids"]), "length": len(row["input_ids"])})
    model = _TrainerModel(new_classifier(dataset["train"].features["label"].names))
    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(
            output_dir=out, per_device_train_batch_size=batch_size, num_train_epochs=1, learning_rate=5e-5,
            weight_decay=0.01, warmup_steps=max(1, len(train) // batch_size // 10), max_grad_norm=1.0, train_sampling_strategy="group_by_length", length_column_name="length",
            logging_strategy="no", save_strategy="no", eval_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0, disable_tqdm=True, seed=0,
        )
        runner = Trainer(model=model, args=arguments, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer))
        start = time.perf_counter()
        runner.train()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    measure(args.steps, args.batch_size, args.max_length)


def measure(steps: int = 40, batch_size: int = 32, max_length: int = 64) -> dict[str, float]:
    """Run both loops and the matmul peak in this process; print and return samples/s, ratio and MFU."""
    env.configure_environment()
    os.environ.setdefault("ACCELERATE_DISABLE_RICH", "1")
    dataset = subset(steps, batch_size)
    samples = steps * batch_size
    _, tokenizer = modeling.load_minilm()
    tokens = sum(len(ids) for ids in encode_texts(tokenizer, list(dataset["train"]["text"]), max_length))
    classifier = new_classifier(["negative", "positive"])
    parameters = sum(p.numel() for p in classifier.parameters())
    embedding = sum(p.numel() for p in classifier.encoder.embeddings.parameters())

    ours_seconds = ours(dataset, batch_size, max_length)
    trainer_seconds = trainer(dataset, batch_size, max_length)
    peak = matmul_peak()
    achieved = 6 * (parameters - embedding) * tokens / ours_seconds
    print(f"device: {env.get_device(verbose=False).type}, {torch.get_num_threads()} threads; {samples} samples, {tokens} tokens, {parameters / 1e6:.1f}M parameters ({(parameters - embedding) / 1e6:.1f}M outside the embeddings)")
    print(f"sftbook loop:         {samples / ours_seconds:7.1f} samples/s ({ours_seconds:.1f} s, incl. one 32-sentence evaluation)")
    print(f"transformers.Trainer: {samples / trainer_seconds:7.1f} samples/s ({trainer_seconds:.1f} s)")
    print(f"ratio (ours / Trainer): {trainer_seconds / ours_seconds:.2f}x")
    print(f"achieved {achieved / 1e9:.1f} GFLOP/s (6·N·D, non-embedding N) / measured matmul peak {peak / 1e9:.1f} GFLOP/s = MFU {achieved / peak:.1%}")
    return {"ours_samples_per_s": samples / ours_seconds, "trainer_samples_per_s": samples / trainer_seconds,
            "ratio_ours_over_trainer": trainer_seconds / ours_seconds, "mfu": achieved / peak}


if __name__ == "__main__":
    main()
