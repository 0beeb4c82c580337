"""Files that must survive a crash and be found again: checksums, cache keys, atomic writes, checkpoints.

Every folder or file the book saves goes through :func:`atomic_directory` or :func:`atomic_write_text`:
it is written beside its target first and then renamed into place, so a crash at any moment leaves
either the old complete artifact or the new one — never half of one. Cache folders are named by
:func:`cache_key` after exactly what determines them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tokenizers
import torch
import transformers
from safetensors.torch import load_file, save_file

from sftbook import codegraph
from sftbook.env import scale
from sftbook.errors import SftbookError

CHECKPOINT = "checkpoint"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """Hex sha256 of a model's weights and buffers (names, shapes, dtypes, values): what a model trained from
    it starts from, for the cache key of that model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def texts_fingerprint(texts: list[str]) -> str:
    """Hex sha256 of a list of texts, in order."""
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()


def cache_key(settings: Any, code: tuple = (), length: int = 12) -> str:
    """A short hash of what determines an artifact: JSON-able ``settings``; the code in ``code`` (the
    package's functions, classes or modules that compute it) with every definition they reach, each in its
    normal form (:mod:`sftbook.codegraph`: a docstring or comment changes nothing); the scale, when that code
    reads it (:func:`sftbook.env.scale`); and the versions of the libraries that compute it (torch,
    transformers, tokenizers). Change any of them and the artifact is rebuilt; change anything else and it is kept."""
    # naming an artifact computes none of it: a function that computes a key reaches this one, not the code it names
    fingerprint, reached = codegraph.code_fingerprint(code, exclude=frozenset({("artifacts", "cache_key")})) if code else ("", set())
    scale_read = scale() if ("env", "scale") in reached else None
    versions = f"{torch.__version__} {transformers.__version__} {tokenizers.__version__}"
    return hashlib.sha256(json.dumps([settings, fingerprint, scale_read, versions], sort_keys=True).encode()).hexdigest()[:length]


@contextlib.contextmanager
def atomic_directory(target: Path, keep_old: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside ``target``; when the block ends without error it replaces ``target``.

    The old folder is first renamed to ``<target>.old`` and removed only after the new one is in place
    (kept when ``keep_old``), so some complete version exists at every moment. On an error the new
    folder is discarded and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f"{target.name}.old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    if not keep_old:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ----------------------------------------------------------------------------- training checkpoints


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state into tensors (for safetensors) and JSON-able settings — no pickle."""
    state = optimizer.state_dict()
    tensors, meta = {}, {"param_groups": state["param_groups"], "scalars": {}}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.contiguous()
            else:
                meta["scalars"][f"{index}.{key}"] = value
    return tensors, meta


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in [*tensors.items(), *meta["scalars"].items()]:
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(run_dir: Path, model, optimizer: torch.optim.Optimizer, state: dict[str, Any], tokenizer=None) -> Path:
    """Write model (safetensors), optimizer state and ``state.json`` to ``run_dir/checkpoint`` atomically."""
    final = Path(run_dir) / CHECKPOINT
    with atomic_directory(final) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        tensors, meta = optimizer_state_tensors(optimizer)
        save_file(tensors, tmp / "optimizer.safetensors")
        (tmp / "optimizer.json").write_text(json.dumps(meta))
        (tmp / "state.json").write_text(json.dumps(state))
    return final


def find_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint to resume from, also after a crash between the two renames of a save."""
    for name in (CHECKPOINT, f"{CHECKPOINT}.old"):
        candidate = Path(run_dir) / name
        if (candidate / "state.json").is_file():
            return candidate
    return None


def load_checkpoint_state(checkpoint: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore the optimizer from ``checkpoint`` and return its ``state.json``."""
    try:
        tensors = load_file(checkpoint / "optimizer.safetensors")
        meta = json.loads((checkpoint / "optimizer.json").read_text())
        state = json.loads((checkpoint / "state.json").read_text())
    except Exception as exc:  # truncated or edited files
        reason = str(exc).split("\n")[0][:120] or type(exc).__name__
        raise SftbookError(f"The checkpoint in {checkpoint} is corrupt ({reason}); delete it or pass overwrite=True.") from None
    load_optimizer_state(optimizer, tensors, meta)
    return state
