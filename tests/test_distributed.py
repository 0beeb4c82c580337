"""Data-parallel fine-tuning on two CPU processes (gloo) ends where one process does."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from sftbook.tokenization import train_wordpiece

SCRIPT = Path(__file__).with_name("distributed_finetune.py")


def test_two_process_data_parallel_matches_one_process(tmp_path):
    tokenizer = train_wordpiece(["a good film", "a great movie", "a bad film", "a dull movie", "good acting and a great plot", "bad acting and a dull plot", "great fun", "dull stuff"] * 3, vocab_size=80)
    tokenizer.save_pretrained(tmp_path / "tok")  # one vocabulary for every process
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "tok"), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = Path(sys.executable).with_name("torchrun")
    with socket.socket() as probe:  # a free loopback port for the two processes to meet on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    multi = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={port}", str(SCRIPT), str(tmp_path / "tok"), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    one = json.loads((tmp_path / "rank0-of-1.json").read_text())
    ranks = [json.loads((tmp_path / f"rank{r}-of-2.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["parameters"] == ranks[1]["parameters"], "the two ranks ended with different weights"
    # Averaging two half-batch gradients rounds differently from one whole-batch gradient, and Adam's
    # normalised step turns that rounding into up to ~1e-5 in near-zero-gradient weights (measured
    # 1.7e-5 once with the fused kernel); 1e-4 is 1% of one step at lr 1e-2. Sharding the data wrongly
    # (split_batches=False: other global batches) moved a weight by 3e-2 when measured.
    np.testing.assert_allclose(ranks[0]["parameters"], one["parameters"], atol=1e-4)
    mean_loss = (ranks[0]["train_loss"] + ranks[1]["train_loss"]) / 2
    assert abs(mean_loss - one["train_loss"]) < 1e-4
