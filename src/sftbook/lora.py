"""LoRA written out (chapter 8): a frozen linear layer plus a trained low-rank change, wrapped into a model,
merged back, and saved as an adapter of a few megabytes. Tests hold it equal to ``peft``'s.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sftbook.artifacts import atomic_directory
from sftbook.errors import SftbookError

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_CONFIG = "lora.json"
ADAPTER_WEIGHTS = "lora.safetensors"


class LoRALinear(nn.Module):
    """``y = W x + b + (α / r) · B A x``: the pretrained ``W`` and ``b`` frozen, only ``A`` and ``B`` trained.

    ``A`` (r × in) starts small and random, ``B`` (out × r) at zero, so training starts exactly from the
    pretrained model; ``r`` ≪ in, out makes the update a low-rank matrix with few parameters.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if r < 1 or r > min(base.in_features, base.out_features):
            raise SftbookError(
                f"LoRA rank r={r} must lie in 1..{min(base.in_features, base.out_features)} for a {base.in_features}→{base.out_features} layer."
            )
        self.base = base.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # the initialisation nn.Linear and peft use
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., in)
        return self.base(x) + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling  # (..., out)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with ``W + (α / r) · B A``: the same outputs, no extra cost at inference."""
        linear = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(self.base.weight + self.scaling * self.lora_B @ self.lora_A)
            if self.base.bias is not None:
                linear.bias.copy_(self.base.bias)
        return linear


def add_lora(
    model, r: int = 8, alpha: float = 16, targets: Sequence[str] = LORA_TARGETS, layers: Sequence[int] | None = None, seed: int = 0
) -> list[str]:
    """Freeze ``model`` and wrap every ``nn.Linear`` named in ``targets`` (in the decoder ``layers``, default
    all) in a :class:`LoRALinear`; returns the wrapped names. ``A`` depends on ``seed`` alone."""
    model.requires_grad_(False)
    wrapped = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, module in list(model.named_modules()):
            parent_name, _, child = name.rpartition(".")
            if child not in targets or not isinstance(module, nn.Linear) or not _in_layers(name, layers):
                continue
            setattr(model.get_submodule(parent_name), child, LoRALinear(module, r, alpha))
            wrapped.append(name)
    if not wrapped:
        raise SftbookError(f"No linear layer named {', '.join(targets)} in the chosen layers; pass targets that exist in this model.")
    return wrapped


def _layer_index(name: str) -> int | None:
    """The decoder layer a module belongs to (``model.layers.12.self_attn.q_proj`` → 12), or None."""
    parts = name.split(".")
    return int(parts[parts.index("layers") + 1]) if "layers" in parts else None


def _in_layers(name: str, layers: Sequence[int] | None) -> bool:
    return layers is None or _layer_index(name) in set(layers)


def lora_modules(model) -> dict[str, LoRALinear]:
    return {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}


@contextlib.contextmanager
def switched_off(model) -> Iterator:
    """``model`` without its LoRA changes while the block runs (each layer's α / r set to zero, then restored):
    the model the adapter started from, with no second copy in memory."""
    modules = list(lora_modules(model).values())
    scalings = [module.scaling for module in modules]
    try:
        for module in modules:
            module.scaling = 0.0
        yield model
    finally:
        for module, scaling in zip(modules, scalings):
            module.scaling = scaling


def merge_lora(model):
    """Replace every :class:`LoRALinear` by its :meth:`~LoRALinear.merged` linear layer (in place)."""
    for name, module in lora_modules(model).items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, module.merged())
    return model


def save_adapter(model, folder: Path) -> Path:
    """Only the LoRA matrices (safetensors) and their settings (``lora.json``): megabytes, not the model."""
    modules = lora_modules(model)
    if not modules:
        raise SftbookError("The model has no LoRA layers to save; call add_lora first.")
    first = next(iter(modules.values()))
    layers = sorted({_layer_index(n) for n in modules} - {None})
    config = {"r": first.r, "alpha": first.alpha, "targets": sorted({n.rpartition(".")[2] for n in modules}), "layers": layers}
    tensors = {f"{name}.{part}": getattr(module, part).detach().contiguous() for name, module in modules.items() for part in ("lora_A", "lora_B")}
    with atomic_directory(Path(folder)) as tmp:
        save_file(tensors, tmp / ADAPTER_WEIGHTS)
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))
    return Path(folder)


def check_adapter(folder: Path) -> Path:
    """``folder`` if it holds an adapter written by :func:`save_adapter` (checked before any model is loaded)."""
    folder = Path(folder)
    if not (folder / ADAPTER_CONFIG).is_file() or not (folder / ADAPTER_WEIGHTS).is_file():
        raise SftbookError(
            f"{folder} is not a LoRA adapter saved by sftbook (no {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}); pass a folder written by save_adapter."
        )
    return folder


def load_adapter(model, folder: Path) -> list[str]:
    """Wrap ``model`` as the saved adapter describes and load its matrices; a clear error for anything else."""
    folder = check_adapter(folder)
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
        wrapped = add_lora(model, config["r"], config["alpha"], config["targets"], config["layers"])
        tensors = load_file(folder / ADAPTER_WEIGHTS)
        for name, module in lora_modules(model).items():
            module.lora_A.data.copy_(tensors[f"{name}.lora_A"])
            module.lora_B.data.copy_(tensors[f"{name}.lora_B"])
    except SftbookError:
        raise
    except Exception as exc:  # edited JSON, truncated weights, another model's shapes
        reason = str(exc).split("\n")[0][:120] or type(exc).__name__
        raise SftbookError(f"The adapter in {folder} does not fit this model or is corrupt ({reason}); train it again for this model.") from None
    return wrapped
