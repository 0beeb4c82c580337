"""Chapter 8's LoRA SFT run, ours against TRL's SFTTrainer + peft, on the same examples in one process.

Like for like: the chapter's settings (``sft.SFTConfig``: LoRA rank, alpha and layers, batch, learning
rate with warm-up and linear decay), float32, answer-only loss, no activation checkpointing. Then TRL with
its own defaults (bf16 autocast and activation checkpointing on), for a few steps. Prints samples per second and the ratios, and writes them to
benchmarks/sft_results.json (which the status page shows).

    python benchmarks/sft_throughput.py [--steps 6] [--out benchmarks/sft_results.json]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import datasets
import peft
import trl
from transformers import TrainerCallback

from sftbook import env, llm, lora, sft
from sftbook.status import SFT_BENCHMARK_RESULTS

RECIPE = sft.SFTConfig()  # the chapter's settings
BATCH, RANK, ALPHA, TOP_LAYERS, LR = RECIPE.batch_size, RECIPE.r, RECIPE.alpha, RECIPE.top_layers, RECIPE.learning_rate


def ours(model, tokenizer, examples, steps: int) -> float:
    config = dataclasses.replace(RECIPE, steps=steps + 1)
    history = sft.train_lora(copy.deepcopy(model), tokenizer, examples, config, progress=False).history
    return steps * BATCH / (history[-1]["seconds"] - history[0]["seconds"])  # the first step warms up


def trl_run(model, tokenizer, examples, steps: int, like_for_like: bool) -> float:
    rows = [{"prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": a}]} for p, a in examples]
    layers = model.config.num_hidden_layers
    peft_config = peft.LoraConfig(
        r=RANK,
        lora_alpha=ALPHA,
        lora_dropout=0.0,
        target_modules=list(lora.LORA_TARGETS),
        layers_to_transform=list(range(layers - TOP_LAYERS, layers)),
    )
    settings = (
        {"bf16": False, "gradient_checkpointing": False, "learning_rate": LR, "warmup_steps": 0.1, "lr_scheduler_type": "linear"}
        if like_for_like
        else {}
    )
    with tempfile.TemporaryDirectory() as scratch:
        config = trl.SFTConfig(
            output_dir=scratch,
            max_steps=steps + 1,
            per_device_train_batch_size=BATCH,
            completion_only_loss=True,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            use_cpu=True,
            **settings,
        )
        trainer = trl.SFTTrainer(
            copy.deepcopy(model), args=config, train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer, peft_config=peft_config
        )
        marks = []

        class Clock(TrainerCallback):  # when each step ends: TRL's own setup and tokenisation are not timed
            def on_step_end(self, args, state, control, **kwargs):
                marks.append(time.perf_counter())

        trainer.add_callback(Clock())
        trainer.train()
    return steps * BATCH / (marks[-1] - marks[0])  # from the end of the first step, like ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", type=Path, default=SFT_BENCHMARK_RESULTS)
    args = parser.parse_args()
    env.configure_environment()
    env.set_seed(0)
    model, tokenizer = llm.load_smollm2()
    examples = sft.instruction_data().train[: BATCH * (args.steps + 1)]
    results = {
        "ours": ours(model, tokenizer, examples, args.steps),
        "TRL, like for like": trl_run(model, tokenizer, examples, args.steps, like_for_like=True),
        "TRL, its defaults": trl_run(model, tokenizer, examples, 2, like_for_like=False),
    }
    for name, value in results.items():
        print(f"{name:<22} {value:6.2f} samples/s")
    like = results["ours"] / results["TRL, like for like"]
    defaults = results["ours"] / results["TRL, its defaults"]
    print(f"ours / TRL: {like:.2f}× like for like, {defaults:.2f}× against TRL's defaults")
    machine = env.machine_info()
    record = {
        "run_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{machine['cpu']}, {machine['cores']} cores, {machine['device']}, torch {machine['torch']}",
        "results": {
            "LLM SFT (ch. 8), ours, float32 (samples/s)": f"{results['ours']:.2f}",
            "LLM SFT (ch. 8), TRL SFTTrainer + peft, like for like (samples/s)": f"{results['TRL, like for like']:.2f}",
            "LLM SFT (ch. 8), TRL SFTTrainer + peft, its defaults (samples/s)": f"{results['TRL, its defaults']:.2f}",
            "LLM SFT throughput ratio, ours / TRL, like for like": f"{like:.2f}×",
            "LLM SFT throughput ratio, ours / TRL, against its defaults": f"{defaults:.2f}×",
        },
    }
    args.out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
