"""Chapter 4's question: which learning rate and number of epochs should MiniLM be fine-tuned with?

The validation sweep behind ``zoo.FINETUNE_DEFAULTS["minilm"]``: each setting fine-tunes MiniLM on SST-2's
training split with the chapter's loop (``finetuning.fine_tune`` through ``zoo.finetuned_classifier``, so
each model is cached and the chosen one is the chapter's own) and records the validation accuracy after
every epoch. The test split is not touched. The setting kept is the one with the fewest epochs among
those within one standard error of the best validation accuracy (the one-standard-error rule). Too long for the chapter's time budget (minutes per
setting), so it runs here and chapter 4 reads benchmarks/minilm_sweep.json, with the date and machine.

    python benchmarks/minilm_sweep.py [--out benchmarks/minilm_sweep.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

from sftbook import artifacts, data, env, zoo
from sftbook.notebooks import REPO_ROOT

SETTINGS = [(5e-5, 3), (1e-4, 2), (1e-4, 3), (2e-4, 2), (3e-4, 2)]  # (learning rate, epochs)
RESULTS = REPO_ROOT / "benchmarks" / "minilm_sweep.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    env.configure_environment()
    runs = []
    for learning_rate, epochs in SETTINGS:
        _, _, history = zoo.finetuned_classifier("minilm", "sst2", learning_rate=learning_rate, epochs=epochs)
        runs.append(
            {
                "learning_rate": learning_rate,
                "epochs": epochs,
                "validation accuracy by epoch": [row["validation_accuracy"] for row in history],
                "best validation accuracy": max(row["validation_accuracy"] for row in history),
                "seconds": history[-1]["seconds"],
            }
        )
        print(f"lr {learning_rate:g} × {epochs} epochs: validation {runs[-1]['best validation accuracy']:.3f} ({runs[-1]['seconds']:.0f} s)")
    # the one-standard-error rule: the fewest epochs among the settings the validation split cannot tell
    # apart from the best (within one binomial standard error of it), then the higher accuracy
    best = max(runs, key=lambda run: run["best validation accuracy"])
    accuracy = best["best validation accuracy"]
    standard_error = math.sqrt(accuracy * (1 - accuracy) / len(data.load("sst2")["validation"]))
    eligible = [run for run in runs if run["best validation accuracy"] >= accuracy - standard_error]
    fewest = min(run["epochs"] for run in eligible)
    chosen = max((run for run in eligible if run["epochs"] == fewest), key=lambda run: run["best validation accuracy"])
    record = {
        **env.run_record(),
        "recipe": dataclasses.asdict(zoo.finetune_config("minilm")),
        "runs": runs,
        "best": {"learning_rate": best["learning_rate"], "epochs": best["epochs"]},
        "standard_error": standard_error,
        "chosen": {"learning_rate": chosen["learning_rate"], "epochs": chosen["epochs"]},
    }
    artifacts.atomic_write_text(args.out, json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
