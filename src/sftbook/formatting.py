"""How the book writes a measured share: never rounded to all or nothing (chapters 10 and the status page)."""

from __future__ import annotations


def percent_text(percent: float, decimals: int = 1) -> str:
    """``percent`` with ``decimals`` decimals — or as many more as it takes never to show 100 (or 0) for a
    share that is not exactly 100 (or 0): rounding must not turn one mistake into a perfect score."""
    while 0 < percent < 100 and f"{percent:.{decimals}f}" in (f"{100:.{decimals}f}", f"{0:.{decimals}f}"):
        decimals += 1
    return f"{percent:.{decimals}f}"
