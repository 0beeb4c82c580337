import subprocess
import sys

from sftbook.cli import main

from conftest import REPO_ROOT


def test_data_command_prints_splits(capsys):
    assert main(["data", "sst2"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "6,920" in out and "positive: 909" in out


def test_check_outputs_command_passes_on_fresh_outputs(capsys):
    assert main(["check-outputs"]) == 0
    assert "come from the current code" in capsys.readouterr().out


def test_execute_missing_notebook_is_one_clear_error(capsys):
    assert main(["execute", "book/99_missing.ipynb"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No notebook at book/99_missing.ipynb") and "Traceback" not in err


def test_module_entry_point_rejects_unknown_dataset():
    result = subprocess.run(
        [sys.executable, "-m", "sftbook", "data", "imdb"], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert result.returncode == 2 and "invalid choice: 'imdb'" in result.stderr


def test_pretrain_command_writes_a_model_and_reports(tmp_path, capsys):
    import json

    assert main(["pretrain", "--steps", "2", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n"):])  # progress lines come first
    assert summary["steps"] == 2 and summary["tokens_processed"] > 0
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "tokenizer.json").is_file()


def test_pretrain_command_rejects_bad_arguments(capsys):
    assert main(["pretrain", "--steps", "0"]) == 2
    assert "steps must be at least 1" in capsys.readouterr().err


def test_finetune_and_predict_bad_inputs(tmp_path, capsys):
    assert main(["finetune", "--model", "gpt-5", "--dataset", "sst2"]) == 2
    assert "Unknown model 'gpt-5'" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path), "great film"]) == 2
    assert "classifier.json" in capsys.readouterr().err
