"""Chapter 4's fair experiment: does pretraining pay off for BERT-tiny, and does a teacher beat masked LM?

Three arms of the same BERT-tiny (chapter 3's vocabulary and shape):

- ``random``: random weights (a different draw per seed);
- ``masked LM``: chapter 3's pretrained checkpoint;
- ``MiniLM teacher``: pretrained without labels to reproduce all-MiniLM-L6-v2's sentence vectors
  (``zoo.embedding_distilled_tiny``).

Each is fine-tuned (chapter 4's loop, ``finetuning.fine_tune``) on 100, 500, 2,000 and all 6,920 SST-2
training labels, and probed frozen (logistic regression on mean-pooled vectors). For each arm and label
count the recipe — the learning rate (``LEARNING_RATES``) and the head's start (``HEADS``: random weights,
or the linear probe's, i.e. linear probing then fine-tuning) — is chosen on the validation accuracy of seed
0; seeds 1-4 then run with it. Seed ``s`` draws the labelled subset, the head's initial weights and the
batch order (and, for the random arm, the encoder's weights). The test split is scored once per run and never used
to choose. TF-IDF + logistic regression on the same subsets is the classical baseline.

Task distillation: ``zoo.task_distilled_tiny`` (the teacher-pretrained student, then trained on the soft
labels chapter 4's fine-tuned MiniLM gives chapter 3's unlabeled sentences) is scored as it is and after
fine-tuning on all labels, with the same rate choice (no fine-tuning is one of the choices).

Too long for a chapter's time budget, so it runs here and chapters 4 and 12 read
benchmarks/pretraining_grid.json. Runs are saved as they finish; a rerun resumes, but only runs made with the
same script, package code, scale, checkpoint and students (:func:`runs_path`): anything else starts afresh.

    python benchmarks/pretraining_grid.py [--out benchmarks/pretraining_grid.json]
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import time
from pathlib import Path

from sftbook import artifacts, codegraph, data, distillation, env, evaluation, finetuning, modeling, zoo
from sftbook.notebooks import REPO_ROOT

ARMS = {"random": "tiny-random", "masked LM": "tiny", "MiniLM teacher": "tiny-distilled"}
LABEL_COUNTS = [100, 500, 2000, 6920]
EPOCHS = {100: 20, 500: 10, 2000: 5, 6920: 3}  # more passes over fewer labels: 80-650 updates
LEARNING_RATES = [1e-4, 3e-4, 1e-3]
HEADS = ["new", "probe"]  # a new head from random weights, or one started at the linear probe (LP-FT)
SEEDS = [0, 1, 2, 3, 4]
MAX_LENGTH = 64
RESULTS = REPO_ROOT / "benchmarks" / "pretraining_grid.json"


def labelled_subset(dataset, count: int, seed: int):
    """SST-2 with its training split cut to ``count`` stratified labels drawn by ``seed`` (all when it has that many)."""
    subset = dict(dataset)
    if count < len(dataset["train"]):
        subset["train"] = data.subsample(dataset["train"], count, seed)
    return subset


def encoder_for(arm: str, seed: int):
    encoder, tokenizer = zoo.load_encoder(ARMS[arm])
    return (modeling.random_like(encoder, seed) if arm == "random" else encoder), tokenizer


def fine_tune_run(model, tokenizer, dataset, count: int, learning_rate: float, seed: int) -> dict:
    config = finetuning.FineTuneConfig(learning_rate=learning_rate, epochs=EPOCHS[count], seed=seed, max_length=MAX_LENGTH)
    result = finetuning.fine_tune(model, tokenizer, labelled_subset(dataset, count, seed), config, progress=False)
    return {
        "validation": max(row["validation_accuracy"] for row in result.history),
        "test": evaluation.evaluate(result.model, tokenizer, dataset["test"], MAX_LENGTH)["accuracy"],
        "best_epoch": result.best_epoch,
        "seconds": result.seconds,
    }


def probe_run(features: dict, dataset, count: int, seed: int) -> dict:
    train = labelled_subset(dataset, count, seed)["train"]
    row_of = {text: i for i, text in enumerate(dataset["train"]["text"])}
    rows = [row_of[text] for text in train["text"]]
    probe = evaluation.fit_logistic(features["train"][rows], list(train["label"]), features["validation"], list(dataset["validation"]["label"]))
    return {
        "validation": float(probe.score(features["validation"], list(dataset["validation"]["label"]))),
        "test": float(probe.score(features["test"], list(dataset["test"]["label"]))),
    }


def tfidf_run(dataset, count: int, seed: int) -> dict:
    subset = labelled_subset(dataset, count, seed)
    model = evaluation.tfidf_classifier(subset)
    return {
        "validation": float(model.score(list(dataset["validation"]["text"]), list(dataset["validation"]["label"]))),
        "test": float(model.score(list(dataset["test"]["text"]), list(dataset["test"]["label"]))),
    }


def thinned(training: dict, every: int = 10) -> dict:
    """A distillation record with every ``every``-th loss: enough for a curve."""
    return {**training, "losses": training["losses"][::every], "loss_every": every}


class Runs:
    """Finished runs by key, saved after each one so an interrupted grid resumes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, key: str, run, *args) -> dict:
        """The result of ``run(*args)``, from an earlier invocation when there is one."""
        if key not in self.done:
            start = time.perf_counter()
            self.done[key] = run(*args)
            self.done[key].setdefault("seconds", time.perf_counter() - start)
            artifacts.atomic_write_text(self.path, json.dumps(self.done, indent=0))
            print(f"{key}: {self.done[key]}", flush=True)
        return self.done[key]


def run_key(prefix: str, head: str, rate: float, seed: int) -> str:
    return f"{prefix}{'' if head in ('new', 'distilled') else f'|head={head}'}|lr={rate}|seed={seed}"


def chosen_setting(runs: Runs, prefix: str, settings, run_at, *args) -> tuple[str, float]:
    """The ``(head, learning rate)`` whose seed-0 run has the best validation accuracy (run here when
    missing); a tie goes to the earlier setting."""
    return max(settings, key=lambda setting: runs.get(run_key(prefix, *setting, 0), run_at, *setting, 0, *args)["validation"])


def frozen_features(arm: str, seed: int, dataset) -> dict:
    encoder, tokenizer = encoder_for(arm, seed)
    texts = {split: list(dataset[split]["text"]) for split in ("train", "validation", "test")}
    return {split: evaluation.sentence_embeddings(encoder, tokenizer, texts[split], MAX_LENGTH) for split in texts}


def probe_all_counts(arm: str, seed: int, dataset) -> dict:
    features = frozen_features(arm, seed, dataset)
    return {str(count): probe_run(features, dataset, count, seed) for count in LABEL_COUNTS}


def arm_run(head: str, rate: float, seed: int, arm: str, count: int, dataset) -> dict:
    encoder, tokenizer = encoder_for(arm, seed)
    model = modeling.TextClassifier(encoder, 2, "mean", label_names=dataset["train"].features["label"].names, seed=seed)
    if head == "probe":
        subset = labelled_subset(dataset, count, seed)
        finetuning.start_head_at_probe(model, tokenizer, subset["train"], subset["validation"], MAX_LENGTH)
    return fine_tune_run(model, tokenizer, dataset, count, rate, seed)


def task_run(head: str, rate: float, seed: int, student, tokenizer, dataset, as_is: dict) -> dict:
    """The task-distilled student fine-tuned on all labels at ``rate`` (0: not fine-tuned, as it is)."""
    if rate == 0:
        return dict(as_is)
    return fine_tune_run(copy.deepcopy(student), tokenizer, dataset, len(dataset["train"]), rate, seed)


def runs_path(task_student_folder: str) -> Path:
    """Where finished runs are kept: a file named after everything a run's result depends on — this script's
    code (without docstrings or comments), the package code it calls, the scale, chapter 3's checkpoint (its
    weights and vocabulary) and the two students' cache folders (named after their own inputs)."""
    script = codegraph.normal_form([ast.parse(Path(__file__).read_text(encoding="utf-8"))])
    package, _ = codegraph.code_fingerprint([finetuning.fine_tune, modeling.TextClassifier, evaluation, data.subsample, zoo.load_encoder])
    settings = [
        script,
        package,
        env.scale(),
        zoo.checkpoint_fingerprint(),
        zoo.embedding_distilled_path(distillation.DistillConfig()).name,
        task_student_folder,
    ]
    return env.cache_root() / f"pretraining-grid-runs-{artifacts.cache_key(settings)}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    env.configure_environment()
    started = time.perf_counter()
    zoo.embedding_distilled_tiny()  # trained first, when missing: the grid needs both students
    student, tokenizer, task_training = zoo.task_distilled_tiny()
    runs = Runs(runs_path(task_training["folder"]))
    dataset = data.load("sst2")
    table, search = [], []
    for count in LABEL_COUNTS:
        for seed in SEEDS:
            result = runs.get(f"tfidf|n={count}|seed={seed}", tfidf_run, dataset, count, seed)
            table.append({"arm": "TF-IDF", "method": "fitted", "labels": count, "seed": seed, "head": None, "learning_rate": None, **result})
    for arm in ARMS:
        # a run is found again only for the same student: the teacher's student is named by its cache folder
        name = f"{arm}@{zoo.embedding_distilled_path(distillation.DistillConfig()).name}" if arm == "MiniLM teacher" else arm
        for seed in SEEDS:
            probes = runs.get(f"{name}|probe|seed={seed}", probe_all_counts, arm, seed, dataset)
            for count in LABEL_COUNTS:
                row = {"arm": arm, "method": "frozen probe", "labels": count, "seed": seed, "head": None, "learning_rate": None}
                table.append({**row, **probes[str(count)]})
        for count in LABEL_COUNTS:
            prefix = f"{name}|fine-tuned|n={count}"
            settings = [(head, rate) for head in HEADS for rate in LEARNING_RATES]
            head, rate = chosen_setting(runs, prefix, settings, arm_run, arm, count, dataset)
            search += [{"arm": arm, "labels": count, "head": h, "learning_rate": r, **runs.done[run_key(prefix, h, r, 0)]} for h, r in settings]
            for seed in SEEDS:
                result = runs.get(run_key(prefix, head, rate, seed), arm_run, head, rate, seed, arm, count, dataset)
                table.append({"arm": arm, "method": "fine-tuned", "labels": count, "seed": seed, "head": head, "learning_rate": rate, **result})

    as_is = {split: evaluation.evaluate(student, tokenizer, dataset[split], MAX_LENGTH)["accuracy"] for split in ("validation", "test")}
    prefix, count = f"task-distilled@{task_training['folder']}|fine-tuned|n=6920", len(dataset["train"])
    settings = [("distilled", rate) for rate in [0, *LEARNING_RATES]]  # 0: the student as it is, not fine-tuned
    head, rate = chosen_setting(runs, prefix, settings, task_run, student, tokenizer, dataset, as_is)
    search += [{"arm": "task-distilled", "labels": count, "head": h, "learning_rate": r, **runs.done[run_key(prefix, h, r, 0)]} for h, r in settings]
    for seed in SEEDS:
        result = runs.get(run_key(prefix, head, rate, seed), task_run, head, rate, seed, student, tokenizer, dataset, as_is)
        table.append({"arm": "task-distilled", "method": "fine-tuned", "labels": count, "seed": seed, "head": head, "learning_rate": rate, **result})
    distilled = zoo.embedding_distilled_path(distillation.DistillConfig())
    record = {
        **env.run_record(),
        "learning_rates": LEARNING_RATES,
        "heads": HEADS,
        "epochs": {str(k): v for k, v in EPOCHS.items()},
        "distill_config": distillation.DistillConfig().__dict__,
        "embedding_distillation": thinned(json.loads((distilled / zoo.TRAINING_RECORD).read_text())),
        "task_distillation": thinned({key: value for key, value in task_training.items() if key != "folder"}),
        "task_distilled_before_fine_tuning": as_is,
        "recipe_search": search,
        "runs": table,
        "seconds_this_invocation": time.perf_counter() - started,
    }
    artifacts.atomic_write_text(args.out, json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
