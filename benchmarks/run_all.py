"""Every budget of the book in one run: each chapter executed top to bottom, then fine-tuning throughput.

Chapters run on a fresh kernel from copies in a temporary folder (the committed notebooks are not
touched), with the model cache as it is — so the times are those of `make execute` on this machine.
The results land in benchmarks/results.json, which the status page (book/status.md) shows.

    python benchmarks/run_all.py [--chapters 01_background 05_attention] [--skip-throughput] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from sftbook import artifacts, env
from sftbook.book import execute_notebook
from sftbook.notebooks import BOOK_DIR, chapters
from sftbook.status import BENCHMARK_RESULTS

BUDGET_MIN = 20  # make execute, all chapters, on the 2-core machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapters", nargs="*", help="chapter stems to run (default: all)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--out", type=Path, default=BENCHMARK_RESULTS, help="where to write the JSON results")
    args = parser.parse_args()
    env.configure_environment()
    selected = [p for p in chapters() if not args.chapters or p.stem in args.chapters]
    if not selected:
        parser.error(f"no chapter matches {args.chapters}; names look like 01_background")
    results: dict[str, str] = {}
    total = 0.0
    with tempfile.TemporaryDirectory() as scratch:
        book = Path(scratch) / "book"
        shutil.copytree(BOOK_DIR, book)  # chapters read each other's stored text (chapter 10)
        for path in selected:
            start = time.perf_counter()
            execute_notebook(book / path.name)
            seconds = time.perf_counter() - start
            total += seconds
            results[f"run time, {path.stem}"] = f"{seconds:.0f} s"
            print(f"{path.stem:<22} {seconds:7.1f} s", flush=True)
    results["run time, all selected chapters"] = f"{total / 60:.1f} min (budget {BUDGET_MIN} min)"
    print(f"{'all':<22} {total / 60:7.1f} min", flush=True)
    if not args.skip_throughput:
        sys.path.insert(0, str(Path(__file__).parent))
        from finetune_throughput import measure

        throughput = measure()
        results[f"fine-tuning, sftbook loop, defaults ({throughput['ours_precision']}) (samples/s)"] = f"{throughput['ours_samples_per_s']:.1f}"
        results["fine-tuning, transformers.Trainer, defaults (fp32) (samples/s)"] = f"{throughput['trainer_samples_per_s']:.1f}"
        results["throughput ratio, ours / Trainer, each with its defaults"] = f"{throughput['ratio_ours_over_trainer']:.2f}×"
        results["throughput ratio, ours / Trainer, both fp32"] = f"{throughput['ratio_fp32']:.2f}×"
        results["throughput ratio, ours / Trainer, both bf16"] = f"{throughput['ratio_bf16']:.2f}×"
        results["model FLOP utilisation (MFU), ours fp32 / bf16"] = f"{throughput['mfu_fp32']:.1%} / {throughput['mfu_bf16']:.1%}"
    artifacts.atomic_write_text(args.out, json.dumps({**env.run_record(), "results": results}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
