"""The status page (``book/status.md``): every chapter's run time and machine, and the book's headline
numbers, read from the stored notebooks and the last benchmark run — never typed."""

from __future__ import annotations

import json
from pathlib import Path

from sftbook.artifacts import atomic_write_text
from sftbook.formatting import percent_text
from sftbook.notebooks import BOOK_DIR, GLUE_ROLE, METADATA_KEY, REPO_ROOT, chapters, glued_values, prose, read

STATUS_PAGE = BOOK_DIR / "status.md"
BENCHMARK_RESULTS = REPO_ROOT / "benchmarks" / "results.json"
SFT_BENCHMARK_RESULTS = REPO_ROOT / "benchmarks" / "sft_results.json"
SFT_MASKING_RESULTS = REPO_ROOT / "benchmarks" / "sft_masking.json"  # a study chapter 8 reads, not a speed benchmark
LORA_VS_FULL_RESULTS = REPO_ROOT / "benchmarks" / "lora_vs_full.json"  # chapter 8 reads it: LoRA against full fine-tuning
SFT_VARIANTS_RESULTS = REPO_ROOT / "benchmarks" / "sft_variants.json"  # chapter 8 reads it: the pad = eos bug, the mixed run
DPO_NUMERALS_RESULTS = REPO_ROOT / "benchmarks" / "dpo_numerals.json"  # chapter 9 reads it: DPO against SFT and more SFT
SQUAD_READER_RESULTS = REPO_ROOT / "benchmarks" / "squad_reader.json"  # chapter 10 reads it: the SQuAD reader, trained and scored
# (results file, the script that writes it): each is shown with the date and machine of its own run
BENCHMARKS = ((BENCHMARK_RESULTS, "benchmarks/run_all.py"), (SFT_BENCHMARK_RESULTS, "benchmarks/sft_throughput.py"))

# (chapter, glued name, what it is, format): the book's headline numbers, gathered on the status page; each is
# a value the chapter's own prose shows (headlines_not_in_prose), so the page quotes what the chapter concludes
HEADLINES: tuple[tuple[str, str, str, str], ...] = (
    ("03_pretraining", "pt_heldout_loss", "BERT-tiny pretraining: final held-out MLM loss", "{:.2f}"),
    ("03_pretraining", "sparse_speedup", "Sparse MLM head: speed-up per training step", "{:.2f}×"),
    ("03_pretraining", "probe_pretrained", "SST-2 linear probe, pretrained BERT-tiny (%)", "{:.1f}"),
    ("03_pretraining", "probe_random", "SST-2 linear probe, random BERT-tiny (%)", "{:.1f}"),
    ("04_fine_tuning", "tfidf_acc", "SST-2 test accuracy, TF-IDF + logistic regression (%)", "{:.1f}"),
    ("04_fine_tuning", "tiny_random_seed_mean", "SST-2 test accuracy, BERT-tiny from random init, mean of 3 seeds (%)", "{:.1f}"),
    ("04_fine_tuning", "tiny_pre_seed_mean", "SST-2 test accuracy, BERT-tiny pretrained in chapter 3, mean of 3 seeds (%)", "{:.1f}"),
    ("04_fine_tuning", "probe_acc", "SST-2 test accuracy, MiniLM frozen + linear probe (%)", "{:.1f}"),
    ("04_fine_tuning", "bf16_speedup", "Fine-tuning MiniLM: bf16 autocast speed-up over float32 on this CPU", "{:.2f}×"),
    ("04_fine_tuning", "minilm_acc", "SST-2 test accuracy, MiniLM fine-tuned (%)", "{:.1f}"),
    ("05_attention", "z_row_diff", "Attention as printed (per-row Z) vs PyTorch: largest absolute difference", "{:.1e}"),
    ("05_attention", "z_global_diff", "Z⁰ read as one global normaliser: largest absolute difference", "{:.2f}"),
    ("05_attention", "bert_max_diff", "Our multi-head attention vs a real BERT layer: largest absolute difference", "{:.1e}"),
    ("06_loss_functions", "ce_max_diff", "Cross-entropy by hand vs PyTorch: largest absolute difference", "{:.1e}"),
    ("06_loss_functions", "acc_bce", "Toy classifier trained with correct BCE: accuracy (%)", "{:.1f}"),
    ("06_loss_functions", "acc_article", "Same classifier trained with the article's BCE: accuracy (%)", "{:.1f}"),
    ("07_classifier_code", "hf_difference", "TextClassifier vs BertForSequenceClassification: largest absolute logit difference", "{:.1e}"),
    ("08_instruction_tuning", "gemma_base_stops", "Gemma 3 270M base model: held-out instructions whose answer ends (%)", "{:.0f}"),
    ("08_instruction_tuning", "gemma_sft_stops", "Gemma 3 270M after LoRA SFT on general instructions: answers that end (%)", "{:.0f}"),
    ("08_instruction_tuning", "gemma_sft_rouge", "Gemma 3 270M after LoRA SFT: held-out ROUGE-L against the reference (×100)", "{:.1f}"),
    ("08_instruction_tuning", "sst_zero", "SmolLM2-135M-Instruct, SST-2 held-out accuracy, zero-shot (%)", "{:.1f}"),
    ("08_instruction_tuning", "sst_sft", "SmolLM2-135M-Instruct, SST-2 held-out accuracy, after LoRA SFT (%)", "{:.1f}"),
    ("08_instruction_tuning", "num_sft", "SmolLM2-135M-Instruct, unseen Chinese numerals written exactly, after LoRA SFT (%)", "{:.1f}"),
    ("08_instruction_tuning", "lora_peft_diff", "Our LoRA vs peft: largest absolute logit difference", "{:.1e}"),
    ("08_instruction_tuning", "rouge_recovered", "General instructions mixed into task SFT: share of the lost ROUGE-L recovered (%)", "{:.0f}"),
    ("09_preference_tuning", "test_reward_accuracy", "DPO + NLL on SmolLM2's own numeral mistakes: held-out reward accuracy (%)", "{:.1f}"),
    ("09_preference_tuning", "sft_pair_exact", "Fresh Chinese numerals written exactly, SFT model (%)", "{:.1f}"),
    ("09_preference_tuning", "rpo_pair_exact", "Same numerals, after DPO + NLL (%)", "{:.1f}"),
    (
        "09_preference_tuning",
        "trl_max_difference",
        "DPO + NLL, ours vs TRL's DPOTrainer: largest difference in loss, log-probabilities, rewards",
        "{:.1e}",
    ),
    ("10_applications", "sst3_acc", "SST-3 test accuracy, MiniLM fine-tuned (%)", "{:.1f}"),
    ("10_applications", "mt_exact", "Numeral translation, exact match on unseen numbers (%)", "{:.2f}"),
    ("10_applications", "llm_mt_exact", "Numeral translation by SmolLM2 + LoRA, same kind of unseen numbers, exact (%)", "{:.1f}"),
    ("10_applications", "sum_centroid", "Summaries: content-word recall, centroid (%)", "{:.1f}"),
    ("10_applications", "sum_lead", "Summaries: content-word recall, lead-3 (%)", "{:.1f}"),
    ("10_applications", "trec_acc", "TREC-6 test accuracy, MiniLM fine-tuned (%)", "{:.1f}"),
    ("10_applications", "qa_hit3", "Questions about the book: answer in the top 3 retrieved passages (%)", "{:.1f}"),
    ("10_applications", "qa_rag_contains", "Questions about the book: answer written by SmolLM2 with retrieval (%)", "{:.1f}"),
    ("10_applications", "qa_closed_contains", "Questions about the book: answer written by SmolLM2 closed-book (%)", "{:.1f}"),
    ("10_applications", "squad_tuned_em", "SQuAD held-out articles: exact match of the fine-tuned reader (%)", "{:.1f}"),
    ("10_applications", "book_tuned_contains", "Questions about the book: answer written by the fine-tuned reader with retrieval (%)", "{:.1f}"),
    ("11_outlook", "scaling_loss_tiny", "Scaling study: held-out MLM loss of BERT-tiny after 2,000 steps", "{:.2f}"),
    ("11_outlook", "scaling_ft_tiny", "Scaling study: BERT-tiny fine-tuned on SST-2 (%)", "{:.1f}"),
    ("11_outlook", "gpt3_years", "Years GPT-3's training would take on this CPU", "{:,.0f}"),
    ("12_faq", "q1_tfidf_100", "SST-2 with 100 labels: TF-IDF (%)", "{:.1f}"),
    ("12_faq", "q1_ft_100", "SST-2 with 100 labels: MiniLM fine-tuned (%)", "{:.1f}"),
    ("12_faq", "q2_scratch", "2,000 labels, MiniLM architecture from random init (%)", "{:.1f}"),
    ("12_faq", "q2_sft", "2,000 labels, MiniLM pretrained + fine-tuned (%)", "{:.1f}"),
    ("12_faq", "q3_bert_over_minilm", "CPU latency, BERT-base over MiniLM", "{:.1f}×"),
)


def headlines_not_in_prose(headlines=HEADLINES, book_dir: Path = BOOK_DIR) -> list[str]:
    """``chapter:name`` of every headline its chapter's prose does not show (``{glue:text}`name```): the page
    would then headline a number the chapter draws no conclusion from."""
    shown = {path.stem: set(GLUE_ROLE.findall(prose(path))) for path in chapters(book_dir)}
    return [f"{chapter}:{name}" for chapter, name, _, _ in headlines if name not in shown.get(chapter, set())]


def _format(value: str, spec: str, label: str = "") -> str:
    """A glued value as the status page shows it; a percentage never rounds to 100 (or 0) unless it is."""
    try:
        number = float(value)
    except ValueError:
        return value
    if label.endswith("(%)") and spec.startswith("{:.") and spec.endswith("f}"):
        return percent_text(number, int(spec[3:-2]))
    return spec.format(number)


def render_status(book_dir: Path = BOOK_DIR) -> str:
    """The status page: run time and machine of every chapter, and the book's headline numbers,
    all read from the stored notebooks (and the last benchmark run), never typed."""
    lines = [
        "# Status and results",
        "",
        "```{note}",
        "This page is generated by `python -m sftbook status` (and at the end of `make execute`) from the",
        "metadata and glued values stored in the executed chapters; `make test` fails if it is out of date.",
        "```",
        "",
        "## Chapters: the stored run",
        "",
        "Each chapter's run time is that of its stored execution by `make execute`, which found in the model",
        "cache what earlier chapters and runs had trained; with an empty cache a chapter trains those models",
        "first and takes longer.",
        "",
        "| Chapter | Run time (stored run) | Executed (UTC) | Machine | torch | transformers |",
        "|---|---:|---|---|---|---|",
    ]
    total = 0.0
    for path in chapters(book_dir):
        record = read(path).metadata.get(METADATA_KEY, {})
        machine = record.get("machine", {})
        seconds = record.get("run_time_s")
        total += seconds or 0.0
        lines.append(
            f"| {{doc}}`{path.stem}` | {'—' if seconds is None else f'{seconds:,.0f} s'} | "
            f"{record.get('executed_at', 'never').replace('T', ' ').replace('+00:00', '')} | "
            f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, {machine.get('device', '?')} | "
            f"{machine.get('torch', '?')} | {machine.get('transformers', '?')} |"
        )
    lines += [
        f"| **all chapters** | **{total / 60:.1f} min** | | | | |",
        "",
        "## Headline results",
        "",
        "| Result | Value | Chapter |",
        "|---|---:|---|",
    ]
    for chapter, name, label, spec in HEADLINES:
        value = glued_values(book_dir / f"{chapter}.ipynb").get(name)
        cell = "missing" if value is None else _format(value, spec, label)
        lines.append(f"| {label.replace('|', '¦')} | {cell} | {{doc}}`{chapter}` |")  # a | would split the cell
    runs = [(json.loads(path.read_text()), script) for path, script in BENCHMARKS if path.is_file()] if book_dir == BOOK_DIR else []
    if runs:
        lines += ["", "## Benchmarks: separate runs, not part of any chapter's run time"]
    for bench, script in runs:
        lines += ["", f"From `{script}`, run {bench['run_at']} on {bench['machine']}:", "", "| Measurement | Value |", "|---|---:|"]
        lines += [f"| {key} | {value} |" for key, value in bench["results"].items()]
    return "\n".join(lines) + "\n"


def write_status(path: Path = STATUS_PAGE) -> Path:
    return atomic_write_text(path, render_status())
