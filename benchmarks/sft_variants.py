"""Chapter 8's two runs that its time budget cannot hold; the chapter reads benchmarks/sft_variants.json,
with the date and machine of the run.

- **The pad = eos bug**: the chapter's instruction SFT of the base Gemma 3 270M
  (``zoo.instruction_tuned_gemma``) with every end-of-text label masked
  (``sft.pad_eos_and_mask_pad_labels``), scored like the chapter's run on the held-out general instructions.
- **The cure for forgetting**: the chapter's SmolLM2 task SFT (same settings and steps) with general training
  instructions mixed in (``zoo.instruction_tuned_smollm2(general=...)``), scored on the held-out general
  instructions, SST-2 and the test numbers as the chapter scores its own run.

Both adapters are cached ``zoo`` artifacts: the first run trains them (minutes each on a CPU), a re-run only
scores them.

    python benchmarks/sft_variants.py [--out benchmarks/sft_variants.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from sftbook import artifacts, data, env, llm, sft, zoo
from sftbook.status import SFT_VARIANTS_RESULTS

GENERAL_TEST = 50  # the chapter's held-out general instructions: the first of the test split
MAX_NEW_TOKENS = 48  # as in the chapter
MIXED_GENERAL = 300  # general training instructions mixed into the task SFT


def answers_record(answers: list[llm.Answer]) -> list[dict]:
    return [dataclasses.asdict(answer) for answer in answers]


def pad_eos_bug(general_test: list[tuple[str, str]]) -> dict:
    model, tokenizer = llm.load_gemma_base()
    result = zoo.instruction_tuned_gemma(model, tokenizer, pad_is_eos_bug=True)
    scores, answers = sft.general_scores(model, tokenizer, general_test, MAX_NEW_TOKENS)
    return {"config": dataclasses.asdict(zoo.gemma_sft_config()), "seconds": result.seconds, "general": scores, "answers": answers_record(answers)}


def mixed_sft(general_test: list[tuple[str, str]]) -> dict:
    config = sft.SFTConfig()
    tasks = sft.instruction_data()
    model, tokenizer = llm.load_smollm2()
    result = zoo.instruction_tuned_smollm2(model, tokenizer, config, general=MIXED_GENERAL)
    scores, answers = sft.general_scores(model, tokenizer, general_test, MAX_NEW_TOKENS)
    reviews = [sft.SENTIMENT_PROMPT.format(text=t) for t, _ in tasks.sentiment_test]
    labels = np.array([y for _, y in tasks.sentiment_test])
    sst = float((sft.sentiment_labels(llm.first_token_scores(model, tokenizer, reviews, sft.SCORED_WORDS)) == labels).mean())
    numerals = sft.teacher_forced_exact(model, tokenizer, [(sft.NUMERAL_PROMPT.format(zh=zh), en) for zh, en in tasks.numeral_test])
    return {
        "config": dataclasses.asdict(config),
        "general instructions mixed in": MIXED_GENERAL,
        "seconds": result.seconds,
        "general": scores,
        "answers": answers_record(answers),
        "SST-2 accuracy": sst,
        "numerals exact": float(np.mean(numerals)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=SFT_VARIANTS_RESULTS)
    args = parser.parse_args()
    env.configure_environment()
    env.set_seed(0)
    general_test = data.instructions().test[:GENERAL_TEST]
    runs = {"pad = eos bug": pad_eos_bug(general_test), "tasks + general": mixed_sft(general_test)}
    for name, run in runs.items():
        print(name, {key: round(value, 3) for key, value in run["general"].items()}, flush=True)
    record = {
        **env.run_record(),
        "general test": [prompt for prompt, _ in general_test],
        "max new tokens": MAX_NEW_TOKENS,
        "runs": runs,
    }
    artifacts.atomic_write_text(args.out, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
