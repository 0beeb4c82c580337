"""Fine-tuning throughput: sftbook's loop against transformers.Trainer, and model FLOP utilisation.

Both train the same classifier (all-MiniLM-L6-v2 + mean pooling + linear head) on the same SST-2
sentences, batch size, maximum length, length-grouped batches and dynamic padding, in one process, for
the same number of steps, each loop in float32 and in bf16 autocast (four runs; ours defaults to bf16
where the hardware has it, Trainer to float32, both use fused AdamW), so the ratio of the defaults can
be told apart from what precision alone buys. MFU is a run's achieved FLOP/s —
6 · N · D / seconds, with N the non-embedding parameters (embedding lookups do no multiply-adds; Kaplan
et al., 2020) and D the tokens — over the peak matmul rate, in the precision that run multiplied in,
measured in this same process.

    python benchmarks/finetune_throughput.py [--steps 40] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import datasets
import torch

from sftbook import data, env, finetuning, modeling
from sftbook.batching import encode_texts


def matmul_peak(size: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """Best observed FLOP/s of a square matmul in ``dtype`` on this CPU."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
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


def _fresh_accelerate_state() -> None:
    """Trainer builds an Accelerator whose precision Accelerate fixes once per process; forget it between runs."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def ours(dataset, batch_size: int, max_length: int, precision: str = "auto") -> float:
    _fresh_accelerate_state()
    _, tokenizer = modeling.load_minilm()
    model = new_classifier(dataset["train"].features["label"].names)
    config = finetuning.FineTuneConfig(epochs=1, batch_size=batch_size, max_length=max_length, learning_rate=5e-5, precision=precision)
    start = time.perf_counter()
    finetuning.fine_tune(model, tokenizer, dataset, config, progress=False)
    return time.perf_counter() - start


class _TrainerModel(torch.nn.Module):
    """Trainer expects ``forward(**batch)`` to return the loss."""

    def __init__(self, classifier: modeling.TextClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids, attention_mask, labels):
        logits = self.classifier(input_ids, attention_mask)
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def trainer(dataset, batch_size: int, max_length: int, bf16: bool = False) -> float:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    _fresh_accelerate_state()
    _, tokenizer = modeling.load_minilm()
    texts = list(dataset["train"]["text"])
    train = datasets.Dataset.from_dict({"input_ids": encode_texts(tokenizer, texts, max_length), "labels": list(dataset["train"]["label"])})
    train = train.map(lambda row: {"attention_mask": [1] * len(row["input_ids"]), "length": len(row["input_ids"])})
    model = _TrainerModel(new_classifier(dataset["train"].features["label"].names))
    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batch_size,
            num_train_epochs=1,
            learning_rate=5e-5,
            weight_decay=0.01,
            warmup_steps=max(1, len(train) // batch_size // 10),
            max_grad_norm=1.0,
            train_sampling_strategy="group_by_length",
            length_column_name="length",
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=0,
            bf16=bf16,
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
    """Run both loops (defaults, float32, bf16) and the matmul peaks in this process; print and return
    samples/s, ratios and MFU."""
    env.configure_environment()
    os.environ.setdefault("ACCELERATE_DISABLE_RICH", "1")
    device = env.get_device(verbose=False)
    dataset = subset(steps, batch_size)
    samples = steps * batch_size
    _, tokenizer = modeling.load_minilm()
    tokens = sum(len(ids) for ids in encode_texts(tokenizer, list(dataset["train"]["text"]), max_length))
    classifier = new_classifier(["negative", "positive"])
    parameters = sum(p.numel() for p in classifier.parameters())
    embedding = sum(p.numel() for p in classifier.encoder.embeddings.parameters())
    default_kind = "bf16" if finetuning.mixed_precision("auto", device) == "bf16" else "fp32"
    other_kind = "fp32" if default_kind == "bf16" else "bf16"
    seconds = {
        f"ours, {default_kind}": ours(dataset, batch_size, max_length, "auto"),
        "Trainer, fp32": trainer(dataset, batch_size, max_length),  # Trainer's default precision
        f"ours, {other_kind}": ours(dataset, batch_size, max_length, other_kind),
        "Trainer, bf16": trainer(dataset, batch_size, max_length, bf16=True),
    }
    peak = {"fp32": matmul_peak(), "bf16": matmul_peak(dtype=torch.bfloat16)}
    flops = 6 * (parameters - embedding) * tokens
    print(
        f"device: {device.type}, {torch.get_num_threads()} threads, bf16 instructions: {env.has_bf16_instructions(device)}, "
        f"bf16 autocast {env.bf16_speedup_cpu():.2f}x float32's speed on a feed-forward block; "
        f"{samples} samples, {tokens} tokens, {parameters / 1e6:.1f}M parameters ({(parameters - embedding) / 1e6:.1f}M outside the embeddings)"
    )
    print(f"our defaults: {'bf16 autocast' if default_kind == 'bf16' else 'float32'}, fused AdamW; Trainer's: float32, fused AdamW")
    for name, s in seconds.items():
        print(f"{name:<18} {samples / s:7.1f} samples/s ({s:.1f} s{', incl. one 32-sentence evaluation' if name.startswith('ours') else ''})")
    seconds["ours, defaults"], seconds["Trainer, defaults"] = seconds[f"ours, {default_kind}"], seconds["Trainer, fp32"]
    ratio = {kind: seconds[f"Trainer, {kind}"] / seconds[f"ours, {kind}"] for kind in ("defaults", "fp32", "bf16")}
    print(
        f"ratio ours / Trainer: {ratio['defaults']:.2f}x with each one's defaults; {ratio['fp32']:.2f}x both float32; {ratio['bf16']:.2f}x both bf16"
    )
    mfu = {kind: flops / seconds[f"ours, {kind}"] / peak[kind] for kind in ("fp32", "bf16")}
    for kind in ("fp32", "bf16"):
        print(
            f"ours, {kind}: {flops / seconds[f'ours, {kind}'] / 1e9:.1f} GFLOP/s (6·N·D, non-embedding N) / measured {kind} "
            f"matmul peak {peak[kind] / 1e9:.1f} GFLOP/s = MFU {mfu[kind]:.1%}"
        )
    return {
        "ours_samples_per_s": samples / seconds["ours, defaults"],
        "trainer_samples_per_s": samples / seconds["Trainer, defaults"],
        "ratio_ours_over_trainer": ratio["defaults"],
        "ratio_fp32": ratio["fp32"],
        "ratio_bf16": ratio["bf16"],
        "ours_precision": default_kind,
        "mfu": mfu[default_kind],
        "mfu_fp32": mfu["fp32"],
        "mfu_bf16": mfu["bf16"],
    }


if __name__ == "__main__":
    main()
