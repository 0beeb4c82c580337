"""Chapter 8's question "LoRA or full fine-tuning?", measured on this CPU: SmolLM2-135M-Instruct trained on
the chapter's two tasks with the chapter's data, steps and batch (``sft.SFTConfig``), once with LoRA (the
chapter's adapter, from the cache) and once with every weight trained. For each: trainable parameters, the memory of the
weights, gradients, optimizer state and activations (counted from the tensors themselves at one step), the
process's peak resident memory, seconds per step, the held-out task scores and the held-out general
instructions (forgetting). Each arm runs in its own process, so each peak is its own. Too long for the
chapter's time budget; the chapter reads benchmarks/lora_vs_full.json, with the date and machine of the run.

    python benchmarks/lora_vs_full.py [--steps N] [--out benchmarks/lora_vs_full.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from sftbook import artifacts, data, env, llm, sft, zoo
from sftbook.optimization import adamw
from sftbook.status import LORA_VS_FULL_RESULTS

FULL_LEARNING_RATE = 1e-4  # every weight moves: the usual order for full SFT of a model this size, 20 times below LoRA's
ARMS = {"LoRA": {"full": False}, "full fine-tuning": {"full": True, "learning_rate": FULL_LEARNING_RATE}}


def tensor_bytes(tensors) -> int:
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def memory_at_one_step(model, tokenizer, examples, config: sft.SFTConfig) -> dict[str, float]:
    """Bytes of weights, gradients, AdamW state and saved activations at one training step of ``model`` as
    trained (LoRA layers in place, or every weight trainable), counted from the tensors, in MiB."""
    batch = sft.pad_features([sft.sft_features(tokenizer, p, a, config.max_length) for p, a in examples[: config.batch_size]], tokenizer.pad_token_id)
    parameters = list(model.parameters())
    weight_ptrs = {p.untyped_storage().data_ptr() for p in parameters}
    saved = []

    def pack(t):
        if t.untyped_storage().data_ptr() not in weight_ptrs:
            saved.append(t)
        return t

    model.train()
    optimizer = adamw(model, config.learning_rate, weight_decay=0.0)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    activations = tensor_bytes(saved)
    loss.backward()
    optimizer.step()
    trainable = [p for p in parameters if p.requires_grad]
    mib = 2**20
    return {
        "weights (MiB)": tensor_bytes(parameters) / mib,
        "gradients (MiB)": tensor_bytes([p.grad for p in trainable if p.grad is not None]) / mib,
        "AdamW state (MiB)": tensor_bytes([t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t) and t.ndim]) / mib,
        "activations saved for backward (MiB)": activations / mib,
        "tokens in the batch": int(batch["attention_mask"].sum()),
    }


def run_arm(name: str, steps: int) -> dict:
    env.configure_environment()
    env.set_seed(0)
    settings = ARMS[name]
    config = dataclasses.replace(sft.SFTConfig(), steps=steps, learning_rate=settings.get("learning_rate", sft.SFTConfig().learning_rate))
    tasks = sft.instruction_data()
    general_test = data.instructions().test[:50]
    model, tokenizer = llm.load_smollm2()
    if settings["full"]:
        result = sft.train_lora(model, tokenizer, tasks.train, config, full=True)
    else:  # the chapter's own run, from the cache (trained and cached now if missing)
        result = zoo.instruction_tuned_smollm2(model, tokenizer, config)
    model.eval()
    reviews = [sft.SENTIMENT_PROMPT.format(text=t) for t, _ in tasks.sentiment_test]
    labels = np.array([y for _, y in tasks.sentiment_test])
    sst = float((sft.sentiment_labels(llm.first_token_scores(model, tokenizer, reviews, sft.SCORED_WORDS)) == labels).mean())
    numerals = sft.numeral_exact_match(model, tokenizer, tasks.numeral_test)["numeral exact match"]
    general, _ = sft.general_scores(model, tokenizer, general_test, 48)
    memory = memory_at_one_step(model, tokenizer, tasks.train, config)  # last: its optimizer step changes the model
    return {
        "learning rate": config.learning_rate,
        "trainable parameters": result.trainable_parameters,
        "seconds per step": result.seconds / steps,
        "peak resident memory (MiB)": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **memory,
        "SST-2 accuracy": sst,
        "numeral exact match": numerals,
        **{f"general {key}": value for key, value in general.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=sft.SFTConfig().steps)
    parser.add_argument("--out", type=Path, default=LORA_VS_FULL_RESULTS)
    parser.add_argument("--arm", choices=list(ARMS), help="run one arm in this process and print its JSON (used by the default run)")
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.steps)))
        return
    arms = {}
    for name in ARMS:
        done = subprocess.run([sys.executable, __file__, "--arm", name, "--steps", str(args.steps)], check=True, capture_output=True, text=True)
        arms[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, {k: round(v, 3) if isinstance(v, float) else v for k, v in arms[name].items()}, flush=True)
    record = {
        **env.run_record(),
        "config": dataclasses.asdict(dataclasses.replace(sft.SFTConfig(), steps=args.steps)),
        "arms": arms,
    }
    artifacts.atomic_write_text(args.out, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
