"""Chapter 8's LoRA SFT run, ours against TRL's SFTTrainer + peft, and a DPO run (``sftbook.preference``)
against TRL's DPOTrainer + peft, each on the same examples in one process.

Like for like: the same settings (``sft.SFTConfig``, ``preference.DPOConfig``: LoRA rank, alpha and layers,
batch, learning rate with warm-up and linear decay, gradient clipping; for DPO β and the reference as the model
with its adapter switched off), float32, answer-only log-probabilities, no activation checkpointing. Then TRL's
SFTTrainer with its own defaults (bf16 autocast and activation checkpointing on), for a few steps. Prints
samples (DPO: pairs) per second and the ratios, and writes them to benchmarks/sft_results.json (which the status
page shows).

    python benchmarks/sft_throughput.py [--steps 6] [--out benchmarks/sft_results.json]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import datasets
import peft
import trl
from transformers import TrainerCallback

from sftbook import artifacts, data, env, llm, lora, preference, sft
from sftbook.errors import SftbookError
from sftbook.status import SFT_BENCHMARK_RESULTS

RECIPE = sft.SFTConfig()  # the chapter's settings
BATCH, RANK, ALPHA, TOP_LAYERS, LR = RECIPE.batch_size, RECIPE.r, RECIPE.alpha, RECIPE.top_layers, RECIPE.learning_rate
DPO_RECIPE = preference.DPOConfig()
TIMED_ON_CPU = {"report_to": "none", "save_strategy": "no", "logging_strategy": "no", "use_cpu": True}  # nothing but the steps


def peft_lora(model, r: int, alpha: float, top_layers: int) -> peft.LoraConfig:
    """peft's LoRA with our settings: the same linear layers of the last ``top_layers`` decoder layers."""
    layers = model.config.num_hidden_layers
    return peft.LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(lora.LORA_TARGETS), layers_to_transform=list(range(layers - top_layers, layers))
    )


def seconds_after_first_step(trainer) -> float:
    """Train, and return the seconds from the end of the first step to the end of the last (TRL's setup,
    tokenisation and first step are not timed, like ours)."""
    marks = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())

    trainer.add_callback(Clock())
    trainer.train()
    return marks[-1] - marks[0]


def ours(model, tokenizer, examples, steps: int) -> float:
    config = dataclasses.replace(RECIPE, steps=steps + 1)
    history = sft.train_lora(copy.deepcopy(model), tokenizer, examples, config, progress=False).history
    return steps * BATCH / (history[-1]["seconds"] - history[0]["seconds"])  # the first step warms up


def trl_run(model, tokenizer, examples, steps: int, like_for_like: bool) -> float:
    rows = [{"prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": a}]} for p, a in examples]
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
            **TIMED_ON_CPU,
            **settings,
        )
        trainer = trl.SFTTrainer(
            copy.deepcopy(model),
            args=config,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_lora(model, RANK, ALPHA, TOP_LAYERS),
        )
        return steps * BATCH / seconds_after_first_step(trainer)


def fits(tokenizer, pair: preference.PreferencePair) -> bool:
    """Both conversations within the recipe's length (TRL would truncate a longer one; ours refuses it)."""
    try:
        preference.preference_features(tokenizer, pair, DPO_RECIPE.max_length)
    except SftbookError:
        return False
    return True


def ours_dpo(model, tokenizer, pairs, steps: int) -> float:
    config = dataclasses.replace(DPO_RECIPE, steps=steps + 1)
    history = preference.train_dpo(copy.deepcopy(model), tokenizer, pairs, config, progress=False).history
    return steps * config.batch_size / (history[-1]["seconds"] - history[0]["seconds"])  # the first step warms up


def trl_dpo(model, tokenizer, pairs, steps: int) -> float:
    rows = preference.trl_rows(pairs)
    recipe = DPO_RECIPE
    with tempfile.TemporaryDirectory() as scratch:
        config = trl.DPOConfig(
            output_dir=scratch,
            max_steps=steps + 1,
            per_device_train_batch_size=recipe.batch_size,
            learning_rate=recipe.learning_rate,
            beta=recipe.beta,
            max_grad_norm=recipe.clip_norm,
            warmup_steps=recipe.warmup_fraction,
            lr_scheduler_type="linear",
            max_length=recipe.max_length,
            bf16=False,
            gradient_checkpointing=False,
            **TIMED_ON_CPU,
        )
        trainer = trl.DPOTrainer(
            copy.deepcopy(model),
            args=config,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_lora(model, recipe.r, recipe.alpha, recipe.top_layers),
        )
        return steps * recipe.batch_size / seconds_after_first_step(trainer)


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
    pairs = [preference.PreferencePair(*triple) for triple in data.style_preferences().train]
    pairs = [pair for pair in pairs if fits(tokenizer, pair)][: DPO_RECIPE.batch_size * (args.steps + 1)]
    results["DPO, ours"] = ours_dpo(model, tokenizer, pairs, args.steps)
    results["DPO, TRL like for like"] = trl_dpo(model, tokenizer, pairs, args.steps)
    for name, value in results.items():
        print(f"{name:<22} {value:6.2f} {'pairs' if name.startswith('DPO') else 'samples'}/s")
    like = results["ours"] / results["TRL, like for like"]
    defaults = results["ours"] / results["TRL, its defaults"]
    dpo_like = results["DPO, ours"] / results["DPO, TRL like for like"]
    print(f"SFT, ours / TRL: {like:.2f}× like for like, {defaults:.2f}× against TRL's defaults; DPO, ours / TRL: {dpo_like:.2f}× like for like")
    record = {
        **env.run_record(),
        "results": {
            "LLM SFT (ch. 8), ours, float32 (samples/s)": f"{results['ours']:.2f}",
            "LLM SFT (ch. 8), TRL SFTTrainer + peft, like for like (samples/s)": f"{results['TRL, like for like']:.2f}",
            "LLM SFT (ch. 8), TRL SFTTrainer + peft, its defaults (samples/s)": f"{results['TRL, its defaults']:.2f}",
            "LLM SFT throughput ratio, ours / TRL, like for like": f"{like:.2f}×",
            "LLM SFT throughput ratio, ours / TRL, against its defaults": f"{defaults:.2f}×",
            "LLM DPO, ours, float32 (pairs/s)": f"{results['DPO, ours']:.2f}",
            "LLM DPO, TRL DPOTrainer + peft, like for like (pairs/s)": f"{results['DPO, TRL like for like']:.2f}",
            "LLM DPO throughput ratio, ours / TRL, like for like": f"{dpo_like:.2f}×",
        },
    }
    artifacts.atomic_write_text(args.out, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
