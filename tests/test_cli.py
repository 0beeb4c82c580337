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
