"""Environment helpers used by every chapter: device choice, seeds, threads, quiet progress bars.

Chapter 1 introduces them; every notebook's bootstrap cell calls :func:`configure_environment`.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import platform
import random
import socket
import time
import zlib
from pathlib import Path
from typing import Any

import datasets
import huggingface_hub
import numpy as np
import torch
import transformers
from tqdm.auto import tqdm

from sftbook.errors import SftbookError

# HF progress bars write to stderr; stderr in a stored notebook changes from run to run and makes
# nbval flaky, so chapters show their own tqdm bars instead.
QUIET_ENVIRONMENT = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def configure_environment() -> None:
    """Silence library progress bars and advisory warnings so stored outputs are stable.

    The hub is deliberately *not* switched off here: code that can use it (e.g. ``bert-base-uncased``
    on Colab) must still be able to, and code that should not touch it never asks.
    """
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    # the libraries read these variables when first imported, which may have happened already
    if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        huggingface_hub.utils.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    if os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1":
        datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity(transformers.utils.logging.log_levels.get(os.environ["TRANSFORMERS_VERBOSITY"], 40))


HUB_HOST = "huggingface.co"


def hub_reachable(host: str = HUB_HOST) -> bool:
    """Whether the Hugging Face Hub can be asked at all: not forced offline, and its name resolves.

    Only a DNS lookup is made. Without it, an offline ``from_pretrained`` retries for ~25 s before
    failing; with it, offline code paths fail (or are skipped) at once with one clear sentence.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}:
        return False
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


QUIET_PROGRESS_VARIABLE = "TQDM_DISABLE"  # tqdm's own switch: read when tqdm is imported, it silences every library's bars


def progress(total: int, desc: str, initial: int = 0, disable: bool = False):
    """A tqdm bar in JupyterLab and terminals; none where outputs are stored.

    ``make execute`` and the test suite start kernels with ``TQDM_DISABLE=1``: a saved bar shows only the
    state it was saved in, and a published page is not a training log. The variable is read here too,
    so a process that imported tqdm before setting it is quiet as well.
    """
    quiet = os.environ.get(QUIET_PROGRESS_VARIABLE) == "1"
    return tqdm(total=total, desc=desc, initial=initial, disable=disable or quiet)


def derived_seed(seed: int, purpose: str, index: int = 0) -> int:
    """The seed of one random stream of a run — the batch order of epoch 3, the masking of step 120.

    NumPy's ``SeedSequence`` mixes the run's seed, the stream's purpose and its index into independent
    streams, so a run resumed at any step draws exactly what an uninterrupted run would.
    """
    entropy = [seed, zlib.crc32(purpose.encode()), index]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


SCALE_VARIABLE = "SFTBOOK_SCALE"
SCALES = ("full", "reduced")


def scale() -> str:
    """How much work the chapters do: ``full`` (the book, ``make execute``) or ``reduced`` (``make test``).

    At the reduced scale every chapter still runs every cell, on smaller splits with fewer steps and
    epochs; the package's defaults read this switch, so the notebooks' code is the same at both scales.
    """
    value = os.environ.get(SCALE_VARIABLE, "full")
    if value not in SCALES:
        raise SftbookError(f"{SCALE_VARIABLE}={value!r} is not a scale; set it to one of {', '.join(SCALES)}, or unset it.")
    return value


def at_scale(full, reduced):
    """``full`` at the full scale, ``reduced`` when ``SFTBOOK_SCALE=reduced``."""
    return reduced if scale() == "reduced" else full


def cache_root() -> Path:
    """Where chapters share trained models: ``$SFTBOOK_CACHE``, else ``~/.cache/sftbook``."""
    return Path(os.environ.get("SFTBOOK_CACHE", Path.home() / ".cache" / "sftbook"))


def get_device(verbose: bool = True) -> torch.device:
    """Pick the fastest available device: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        device = torch.device("cuda")
        detail = torch.cuda.get_device_name(0)
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device, detail = torch.device("mps"), "Apple GPU"
    else:
        device, detail = torch.device("cpu"), f"{torch.get_num_threads()} threads"
    if verbose:
        print(f"Using device: {device.type} ({detail})")
    return device


def has_bf16_instructions(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware: a CUDA GPU that supports bf16, or a
    CPU with AVX512-BF16 or AMX. Elsewhere bf16 is emulated."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(cpu, "_is_amx_tile_supported", lambda: False)())
    return False


BF16_MIN_SPEEDUP = 1.15  # below this, bf16's rounding is not worth it


@functools.cache
def bf16_speedup_cpu() -> float:
    """How many times faster a transformer feed-forward block (MiniLM's size) trains on this CPU under
    bf16 autocast than in float32: forward and backward, timed after a warm-up."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        block = torch.nn.Sequential(torch.nn.Linear(384, 1536), torch.nn.GELU(), torch.nn.Linear(1536, 384))
        x = torch.randn(32 * 48, 384)  # (tokens of one batch, hidden)

    def seconds(bf16: bool) -> float:
        for repeat in range(7):
            if repeat == 2:  # the first two runs warm up kernels and caches
                start = time.perf_counter()
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                loss = block(x).float().sum()
            loss.backward()
        return time.perf_counter() - start

    return seconds(False) / seconds(True)


def bf16_pays_off(device: torch.device) -> bool:
    """Whether bf16 autocast makes training faster on ``device`` (chapter 4): a CUDA GPU with bf16, or a CPU
    with bf16 instructions on which :func:`bf16_speedup_cpu` measures at least :data:`BF16_MIN_SPEEDUP`.
    Some CPUs have the instructions and still run slower in bf16, so the CPU case is measured (once)."""
    if device.type == "cpu":
        return has_bf16_instructions(device) and bf16_speedup_cpu() >= BF16_MIN_SPEEDUP
    return has_bf16_instructions(device)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so a run can be repeated exactly on the CPU."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise SftbookError(f"seed must be a non-negative int, got {seed!r}; pass a whole number such as 0.")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(num_threads: int | None = None) -> int:
    """Use ``num_threads`` CPU threads for PyTorch (default: every core) and return the number used."""
    available = os.cpu_count() or 1
    n = available if num_threads is None else num_threads
    if n < 1:
        raise SftbookError(f"num_threads must be at least 1, got {n}; pass a positive number or None for every core.")
    torch.set_num_threads(n)
    return n


def cpu_model() -> str:
    """The CPU's marketing name, read from /proc/cpuinfo where it exists."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What a chapter ran on, recorded in each notebook's metadata and shown on the status page."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "device": get_device(verbose=False).type,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def run_record() -> dict[str, str]:
    """When and on what a benchmark ran (UTC time; :func:`machine_info` in one line), stored with its results."""
    machine = machine_info()
    return {
        "run_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{machine['cpu']}, {machine['cores']} cores, {machine['device']}, torch {machine['torch']}",
    }
