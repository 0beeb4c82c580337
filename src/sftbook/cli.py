"""Command line: ``python -m sftbook <command>`` (each command is documented in the chapter it serves)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from transformers import AutoTokenizer

from sftbook import data, evaluation, finetuning, llm, lora, modeling, pretraining, sft, zoo
from sftbook.book import execute_notebook, execution_order, stale_output_problems
from sftbook.errors import SftbookError
from sftbook.notebooks import chapters
from sftbook.status import write_status


def _execute(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.notebooks] or chapters()
    for path in paths:
        if not path.is_file():
            raise SftbookError(f"No notebook at {path}; pass a path such as book/01_background.ipynb.")
    executed = 0
    # --stale: in dependency order, so a chapter that quotes another is checked after that one is re-run
    for path in execution_order([p.resolve() for p in paths]) if args.stale else paths:
        if args.stale:
            problems = stale_output_problems(path)
            if not problems:
                continue
            print("\n".join(problems), flush=True)
        print(f"executing {path} ...", flush=True)
        print(f"  {execute_notebook(path.resolve(), timeout=args.timeout):.1f} s", flush=True)
        executed += 1
    if args.stale and not executed:
        print("no chapter is stale")
    print(f"wrote {write_status()}")
    return 0


def _status(args: argparse.Namespace) -> int:
    print(f"wrote {write_status()}")
    return 0


def _check_outputs(args: argparse.Namespace) -> int:
    problems = [p for path in chapters() for p in stale_output_problems(path)]
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"stored outputs of {len(chapters())} chapters come from the current code")
    return 1 if problems else 0


def _data(args: argparse.Namespace) -> int:
    dataset = data.load(args.name)
    names = dataset["train"].features["label"].names
    print(data.DATASETS[args.name].description)
    for split, part in dataset.items():
        counts = [part["label"].count(i) for i in range(len(names))]
        print(f"  {split:<10} {len(part):>6,}  " + "  ".join(f"{n}: {c:,}" for n, c in zip(names, counts)))
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    config = pretraining.PretrainConfig(size=args.size, steps=args.steps, seed=args.seed)
    out = Path(args.out) if args.out else zoo.pretrained_path(config)
    result = pretraining.pretrain(config, out, overwrite=args.overwrite)
    summary = {
        "out": str(out),
        "steps": config.steps,
        "seconds": round(result.seconds, 1),
        "tokens_processed": result.tokens_processed,
        "final_train_loss": result.history[-1]["loss"],
        "final_heldout_loss": result.evaluations[-1]["heldout_loss"],
    }
    print(json.dumps(summary, indent=2))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    if args.out:
        modeling.check_save_target(Path(args.out))  # before minutes of training, not after
    dataset = data.load(args.dataset)
    names = dataset["train"].features["label"].names
    config = zoo.finetune_config(args.model, epochs=args.epochs, learning_rate=args.lr, seed=args.seed)
    encoder, tokenizer = zoo.load_encoder(args.model)
    model = modeling.TextClassifier(encoder, len(names), args.pooling, label_names=names, seed=config.seed)
    result = finetuning.fine_tune(model, tokenizer, dataset, config)
    metrics = {
        "model": args.model,
        "dataset": args.dataset,
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.seconds, 1),
        "history": result.history,
        "test": evaluation.evaluate(result.model, tokenizer, dataset["test"]),
    }
    if args.out:
        out = result.model.save_pretrained(Path(args.out), tokenizer)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))
    return 0


def _predict(args: argparse.Namespace) -> int:
    texts = list(args.texts) + (data.read_texts(Path(args.file)) if args.file else [])
    if not texts:
        raise SftbookError("Nothing to predict: pass texts as arguments or --file with one text per line.")
    model = modeling.TextClassifier.from_pretrained(Path(args.model))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    for text, prediction in zip(texts, evaluation.predict(model, tokenizer, texts)):
        confidence = prediction["probabilities"][prediction["label"]]
        print(f"{prediction['label']}\t{confidence:.3f}\t{text}")
    return 0


def _sft(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / lora.ADAPTER_CONFIG).is_file())):
        raise SftbookError(f"{out} exists and is not a LoRA adapter; refusing to replace it. Choose a new folder.")
    examples = data.read_jsonl(Path(args.data))
    model, tokenizer = llm.load_smollm2()
    config = sft.SFTConfig(
        **{k: v for k, v in {"steps": args.steps, "learning_rate": args.lr, "r": args.rank, "top_layers": args.layers}.items() if v is not None}
    )
    for prompt, answer in examples:  # every example checked before minutes of training, not after
        sft.sft_features(tokenizer, prompt, answer, config.max_length)
    result = sft.train_lora(model, tokenizer, examples, config)
    lora.save_adapter(model, out)
    summary = {
        "out": str(out),
        "examples": len(examples),
        "steps": config.steps,
        "seconds": round(result.seconds, 1),
        "trainable_parameters": result.trainable_parameters,
        "final_loss": result.history[-1]["loss"],
    }
    print(json.dumps(summary, indent=2))
    return 0


def _chat(args: argparse.Namespace) -> int:
    if args.adapter:
        lora.check_adapter(Path(args.adapter))  # before the model loads, not after
    model, tokenizer = llm.load_smollm2()
    if args.adapter:
        lora.load_adapter(model, Path(args.adapter))
    print(llm.generate(model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sftbook", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    execute = commands.add_parser("execute", help="run chapters top to bottom and store outputs + provenance")
    execute.add_argument("notebooks", nargs="*", help="notebooks to run (default: every chapter in book/)")
    execute.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    execute.add_argument("--stale", action="store_true", help="only the chapters whose stored outputs are stale, in dependency order")
    execute.set_defaults(func=_execute)

    status = commands.add_parser("status", help="rewrite book/status.md from the chapters' stored metadata")
    status.set_defaults(func=_status)

    check = commands.add_parser("check-outputs", help="fail when a chapter's stored outputs are stale")
    check.set_defaults(func=_check_outputs)

    defaults = pretraining.PretrainConfig()
    pretrain = commands.add_parser("pretrain", help="pretrain a small BERT with masked language modelling (chapter 3)")
    pretrain.add_argument("--size", choices=sorted(pretraining.SIZES), default=defaults.size)
    pretrain.add_argument("--steps", type=int, default=defaults.steps)
    pretrain.add_argument("--seed", type=int, default=defaults.seed)
    pretrain.add_argument("--out", help="output folder (default: the cache folder later chapters read)")
    pretrain.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming")
    pretrain.set_defaults(func=_pretrain)

    finetune = commands.add_parser("finetune", help="fine-tune a classifier and report test metrics (chapter 4)")
    finetune.add_argument("--model", required=True, help=f"one of {', '.join(zoo.ENCODERS)}, or a saved model folder")
    finetune.add_argument("--dataset", required=True, choices=sorted(data.DATASETS))
    finetune.add_argument("--pooling", choices=modeling.POOLINGS, default="mean")
    finetune.add_argument("--epochs", type=int)
    finetune.add_argument("--lr", type=float)
    finetune.add_argument("--seed", type=int)
    finetune.add_argument("--out", help="folder to save the classifier and metrics.json in")
    finetune.set_defaults(func=_finetune)

    predict = commands.add_parser("predict", help="label texts with a classifier saved by `finetune --out`")
    predict.add_argument("--model", required=True, help="folder written by `finetune --out`")
    predict.add_argument("texts", nargs="*", help="texts to label")
    predict.add_argument("--file", help="a UTF-8 text file with one text per line")
    predict.set_defaults(func=_predict)

    sft = commands.add_parser("sft", help="instruction-tune SmolLM2-135M-Instruct with LoRA on a JSONL of prompt/answer pairs")
    sft.add_argument("--data", required=True, help='a JSON-lines file, one {"prompt": ..., "answer": ...} per line')
    sft.add_argument("--out", required=True, help="folder to save the LoRA adapter in")
    sft.add_argument("--steps", type=int)
    sft.add_argument("--lr", type=float)
    sft.add_argument("--rank", type=int)
    sft.add_argument("--layers", type=int, help="adapt the last LAYERS decoder layers")
    sft.set_defaults(func=_sft)

    chat = commands.add_parser("chat", help="answer a prompt with SmolLM2-135M-Instruct, with or without a LoRA adapter")
    chat.add_argument("prompt")
    chat.add_argument("--adapter", help="folder written by `sftbook sft`")
    chat.add_argument("--max-new-tokens", type=int, default=64)
    chat.set_defaults(func=_chat)

    data_cmd = commands.add_parser("data", help="print a dataset's splits and label counts")
    data_cmd.add_argument("name", choices=sorted(data.DATASETS))
    data_cmd.set_defaults(func=_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SftbookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
