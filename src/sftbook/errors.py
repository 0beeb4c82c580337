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
