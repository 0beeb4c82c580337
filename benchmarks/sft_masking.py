"""Chapter 8's question: does the loss on the answer only beat the loss on every token, at the same budget?

Two LoRA SFT runs of SmolLM2-135M-Instruct with the chapter's settings and data (``sft.SFTConfig``,
``sft.instruction_data``), identical but for the labels: answer-only (the chapter's run) and every token of
the rendered conversation. Each records the held-out numeral exact match (teacher-forced, see
``sft.teacher_forced_exact``) while it trains, and ends with the held-out SST-2 accuracy read from the
first answer token. Too long for the chapter's time budget, so it runs here and the chapter reads
benchmarks/sft_masking.json, with the date and machine of the run.

    python benchmarks/sft_masking.py [--steps N] [--out benchmarks/sft_masking.json]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np

from sftbook import env, llm, sft
from sftbook.status import SFT_MASKING_RESULTS

ARMS = {"answer only": True, "every token": False}


def run_arm(model, tokenizer, tasks: sft.InstructionData, config: sft.SFTConfig) -> dict:
    reviews = [sft.SENTIMENT_PROMPT.format(text=t) for t, _ in tasks.sentiment_test]
    labels = np.array([y for _, y in tasks.sentiment_test])
    trained = copy.deepcopy(model)

    def numeral_exact(m) -> dict[str, float]:
        return sft.numeral_exact_match(m, tokenizer, tasks.numeral_test)

    result = sft.train_lora(trained, tokenizer, tasks.train, config, evaluate=numeral_exact, evaluate_every=max(1, config.steps // 6))
    scores = llm.first_token_scores(trained, tokenizer, reviews, sft.SCORED_WORDS)
    curve = [row for row in result.history if "numeral exact match" in row]
    return {
        "curve": [{"examples seen": row["examples seen"], "numeral exact match": row["numeral exact match"]} for row in curve],
        "numeral exact match": curve[-1]["numeral exact match"],
        "SST-2 accuracy": float((sft.sentiment_labels(scores) == labels).mean()),
        "seconds": result.seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=sft.SFTConfig().steps)
    parser.add_argument("--out", type=Path, default=SFT_MASKING_RESULTS)
    args = parser.parse_args()
    env.configure_environment()
    env.set_seed(0)
    model, tokenizer = llm.load_smollm2()
    tasks = sft.instruction_data()
    recipe = dataclasses.replace(sft.SFTConfig(), steps=args.steps)
    arms = {}
    for name, answer_only in ARMS.items():
        arms[name] = run_arm(model, tokenizer, tasks, dataclasses.replace(recipe, answer_only_loss=answer_only))
        print(f"{name:<12} numerals {arms[name]['numeral exact match']:.1%}  SST-2 {arms[name]['SST-2 accuracy']:.1%}  {arms[name]['seconds']:.0f} s")
    machine = env.machine_info()
    record = {
        "run_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{machine['cpu']}, {machine['cores']} cores, {machine['device']}, torch {machine['torch']}",
        "config": dataclasses.asdict(recipe),
        "train_examples": len(tasks.train),
        "sentiment_test": len(tasks.sentiment_test),
        "numeral_test": len(tasks.numeral_test),
        "arms": arms,
    }
    args.out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
