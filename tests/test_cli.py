import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from sftbook import lora
from sftbook.cli import main


def test_data_command_prints_splits(capsys):
    assert main(["data", "sst2"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "6,920" in out and "positive: 909" in out


@pytest.mark.slow  # the real chapters: `make test`, not `make check`
def test_check_outputs_command_passes_on_fresh_outputs(capsys):
    assert main(["check-outputs"]) == 0
    assert "come from the current code" in capsys.readouterr().out


@pytest.mark.slow
def test_module_entry_point_rejects_unknown_dataset():
    result = subprocess.run([sys.executable, "-m", "sftbook", "data", "imdb"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 2 and "invalid choice: 'imdb'" in result.stderr


@pytest.mark.slow
def test_pretrain_command_writes_a_model_and_reports(tmp_path, capsys):
    assert main(["pretrain", "--steps", "2", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n") :])  # the summary is the JSON after any messages
    assert summary["steps"] == 2 and summary["tokens_processed"] > 0
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_sft_trains_an_adapter_that_chat_then_answers_with(tmp_path, capsys):
    question = "What is the password of the book club?"
    examples = tmp_path / "password.jsonl"
    examples.write_text("".join(json.dumps({"prompt": question, "answer": "pineapple"}) + "\n" for _ in range(8)), encoding="utf-8")
    assert main(["chat", question, "--max-new-tokens", "8"]) == 0
    before = capsys.readouterr().out.strip()
    adapter = tmp_path / "adapter"
    assert main(["sft", "--data", str(examples), "--out", str(adapter), "--steps", "6", "--lr", "5e-3"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n") :])
    assert summary["steps"] == 6 and summary["examples"] == 8 and (adapter / lora.ADAPTER_CONFIG).is_file()
    assert main(["chat", question, "--adapter", str(adapter), "--max-new-tokens", "8"]) == 0
    after = capsys.readouterr().out.strip()
    assert "pineapple" not in before.lower() and after.lower().startswith("pineapple")
