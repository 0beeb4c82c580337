"""Chapter 8's question: does the loss on the answer only beat the loss on every token, at the same budget?

LoRA SFT runs of SmolLM2-135M-Instruct with the chapter's settings and data (``sft.SFTConfig``,
``sft.instruction_data``), identical but for the labels: answer-only (the chapter's run) and every token of
the rendered conversation, each with three seeds (the LoRA initialisation and the order of the batches).
Each run (``zoo.instruction_tuned_smollm2``, cached: the chapter's run is the first answer-only one) records
the exact match on the validation numbers (teacher-forced, see ``sft.teacher_forced_exact``) while it
trains, and ends with the test numbers' exact match and the held-out SST-2 accuracy read from the first
answer token. Too long for the chapter's time budget, so it runs here and the chapter reads
benchmarks/sft_masking.json, with the date and machine of the run.

    python benchmarks/sft_masking.py [--steps N] [--seeds N] [--out benchmarks/sft_masking.json]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
from pathlib import Path

import numpy as np

from sftbook import artifacts, env, llm, sft, zoo
from sftbook.status import SFT_MASKING_RESULTS

ARMS = {"answer only": True, "every token": False}


def run_arm(model, tokenizer, tasks: sft.InstructionData, config: sft.SFTConfig) -> dict:
    reviews = [sft.SENTIMENT_PROMPT.format(text=t) for t, _ in tasks.sentiment_test]
    labels = np.array([y for _, y in tasks.sentiment_test])
    trained = copy.deepcopy(model)
    result = zoo.instruction_tuned_smollm2(trained, tokenizer, config)  # the chapter's own run is one of them: cached, shared
    scores = llm.first_token_scores(trained, tokenizer, reviews, sft.SCORED_WORDS)
    curve = [row for row in result.history if "numeral exact match" in row]
    return {
        "seed": config.seed,
        "validation curve": [{"examples seen": row["examples seen"], "numeral exact match": row["numeral exact match"]} for row in curve],
        "numeral exact match": sft.numeral_exact_match(trained, tokenizer, tasks.numeral_test)["numeral exact match"],
        "SST-2 accuracy": float((sft.sentiment_labels(scores) == labels).mean()),
        "seconds": result.seconds,
    }


def summary(runs: list[dict], key: str) -> tuple[float, float]:
    """Mean over seeds and its standard error."""
    values = np.array([run[key] for run in runs])
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=sft.SFTConfig().steps)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=SFT_MASKING_RESULTS)
    args = parser.parse_args()
    env.configure_environment()
    env.set_seed(0)
    model, tokenizer = llm.load_smollm2()
    tasks = sft.instruction_data()
    recipe = dataclasses.replace(sft.SFTConfig(), steps=args.steps)
    arms = {}
    for name, answer_only in ARMS.items():
        runs = [run_arm(model, tokenizer, tasks, dataclasses.replace(recipe, answer_only_loss=answer_only, seed=seed)) for seed in range(args.seeds)]
        numerals, numerals_se = summary(runs, "numeral exact match")
        sst, sst_se = summary(runs, "SST-2 accuracy")
        arms[name] = {"runs": runs, "numeral exact match": numerals, "numeral SE": numerals_se, "SST-2 accuracy": sst, "SST-2 SE": sst_se}
        print(f"{name:<12} numerals {numerals:.1%} ± {numerals_se:.1%}  SST-2 {sst:.1%} ± {sst_se:.1%}", flush=True)
    record = {
        **env.run_record(),
        "config": dataclasses.asdict(recipe),
        "seeds": list(range(args.seeds)),
        "train_examples": len(tasks.train),
        "sentiment_test": len(tasks.sentiment_test),
        "numeral_test": len(tasks.numeral_test),
        "numeral_validation": len(tasks.numeral_validation),
        "arms": arms,
    }
    artifacts.atomic_write_text(args.out, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
