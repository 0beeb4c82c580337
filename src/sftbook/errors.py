"""Errors raised by sftbook: one clear sentence that names the fix, never a deep library traceback."""

from __future__ import annotations


class SftbookError(Exception):
    """Base class of every error sftbook raises on purpose."""


class UnknownNameError(SftbookError, ValueError):
    """A dataset, model or option name that sftbook does not know."""

    def __init__(self, kind: str, name: object, valid: list[str] | tuple[str, ...]) -> None:
        super().__init__(f"Unknown {kind} {name!r}; choose one of: {', '.join(valid)}.")


class DataFileError(SftbookError, ValueError):
    """A vendored data file that is missing, corrupt or malformed."""


class HubUnavailableError(SftbookError, RuntimeError):
    """The Hugging Face Hub could not be reached (offline machine, firewall, or HF_HUB_OFFLINE=1)."""


def require_positive_integers(settings: object, names: tuple[str, ...]) -> None:
    """One clear error for the first of ``names`` whose value on ``settings`` (a config) is not a whole number ≥ 1."""
    for name in names:
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SftbookError(f"{name} must be at least 1, got {value!r}; pass a positive whole number.")
