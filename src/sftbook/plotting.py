"""Figures and tables shared by the chapters: one style, the pipeline diagram (chapter 1), scale plots (chapters 1, 11)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from sklearn.metrics import ConfusionMatrixDisplay

from sftbook.errors import SftbookError
from sftbook.landmarks import LandmarkModel

PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")


def refresh_stale_font_cache() -> bool:
    """Rebuild matplotlib's font list when it is not this installation's; say whether it did.

    The list is cached in the home folder and shared by every Python there. One written by another
    installation (a system matplotlib without the bundled fonts, a virtualenv since deleted) lacks the
    fonts of math text or names missing files, and every figure with math text then prints "findfont"
    warnings into the chapter's stored outputs.
    """
    listed = {Path(font.fname).resolve() for font in font_manager.fontManager.ttflist}
    bundled = {path.resolve() for path in (Path(matplotlib.get_data_path()) / "fonts" / "ttf").glob("*.ttf")}
    if bundled <= listed and all(path.exists() for path in listed):
        return False
    font_manager.fontManager.__init__()  # in place: matplotlib's own references to it stay valid
    cache = Path(matplotlib.get_cachedir()) / f"fontlist-v{font_manager.FontManager.__version__}.json"
    font_manager.json_dump(font_manager.fontManager, cache)
    return True


def use_book_style() -> None:
    """One look for every figure and table: readable at the book's column width, PNG output, and
    tables shown whole (pandas would cut long cells and wide tables with "...", often where the point is)."""
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_columns", None)
    pd.set_option("display.width", 200)
    refresh_stale_font_cache()
    plt.rcParams.update(
        {
            "figure.figsize": (7.0, 3.6),
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.prop_cycle": plt.cycler(color=PALETTE),
            "font.size": 10,
        }
    )


def pipeline_diagram(stages: Sequence[tuple[str, str]], title: str = "") -> Figure:
    """Boxes joined by arrows, one per ``(heading, detail)`` stage, left to right."""
    if not stages:
        raise SftbookError("pipeline_diagram needs at least one (heading, detail) stage; pass a list of pairs.")
    step = 2.0  # inches per stage: the figure fits the book's column at 5 stages
    width = step * len(stages)
    fig, ax = plt.subplots(figsize=(width, 1.9))
    ax.set_xlim(0, width)
    ax.set_ylim(0, 1.9)
    ax.axis("off")
    for i, (heading, detail) in enumerate(stages):
        x = 0.08 + step * i
        color = PALETTE[i % len(PALETTE)]
        ax.add_patch(FancyBboxPatch((x, 0.2), 1.6, 1.5, boxstyle="round,pad=0.04", fc=color, alpha=0.15, ec=color))
        ax.text(x + 0.8, 1.35, heading.replace(" ", "\n", 1) if len(heading) > 14 else heading, ha="center", va="center", fontsize=11, weight="bold")
        ax.text(x + 0.8, 0.65, detail, ha="center", va="center", fontsize=9.5)
        if i + 1 < len(stages):
            ax.add_patch(FancyArrowPatch((x + 1.66, 0.95), (x + step + 0.02, 0.95), arrowstyle="-|>", mutation_scale=14))
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def scale_plot(models: Sequence[LandmarkModel], highlight: dict[str, tuple[float, float]] | None = None) -> Figure:
    """Parameters and training tokens of landmark models on log axes; ``highlight`` adds this book's runs."""
    fig, (ax_time, ax_data) = plt.subplots(1, 2, figsize=(10, 4))
    for m in models:
        ax_time.scatter(m.year, m.parameters, color=PALETTE[0])
        ax_data.scatter(m.training_tokens, m.parameters, color=PALETTE[0])
    for tokens, params in (highlight or {}).values():
        ax_data.scatter(tokens, params, color=PALETTE[3], marker="*", s=120)
    _log_axes(ax_time, "year", "parameters", logx=False)
    _log_axes(ax_data, "training tokens processed", "parameters", logx=True)
    low, high = ax_data.get_xlim()
    ax_data.set_xlim(min(low, 10 ** np.floor(np.log10(low))), high)  # start at a whole decade: a tick at each end
    ax_time.set_title("Parameters by year")
    ax_data.set_title("Parameters against training tokens")
    fig.tight_layout()  # labels are placed in the final layout, so their measured boxes stay true
    label_points(ax_time, [(m.year, m.parameters, m.name) for m in models])
    points = [(m.training_tokens, m.parameters, m.name) for m in models]
    label_points(ax_data, points + [(t, p, name) for name, (t, p) in (highlight or {}).items()], highlighted=set(highlight or {}))
    return fig


LABEL_OFFSETS = ((4, 3, "left", "bottom"), (4, -3, "left", "top"), (-4, 3, "right", "bottom"), (-4, -3, "right", "top"))


def label_points(ax: Axes, points: Sequence[tuple[float, float, str]], highlighted: set[str] = frozenset()) -> list[Any]:
    """Write each point's name beside it, at the first of four corners (right-above, right-below, left-above,
    left-below) where it overlaps no label written before and no other point; the least-crowded corner when
    none is free. The boxes are measured, not guessed."""
    renderer = ax.figure.canvas.get_renderer()
    markers = [ax.transData.transform((x, y)) for x, y, _ in points]
    placed, labels = [], []
    for index, (x, y, name) in enumerate(points):
        others = [marker for i, marker in enumerate(markers) if i != index]
        best, best_overlap = None, None
        for dx, dy, ha, va in LABEL_OFFSETS:
            text = ax.annotate(
                name,
                (x, y),
                textcoords="offset points",
                xytext=(dx, dy),
                ha=ha,
                va=va,
                fontsize=8,
                color=PALETTE[3] if name in highlighted else "black",
            )
            box = text.get_window_extent(renderer).expanded(1.05, 1.15)
            inside = ax.get_window_extent(renderer).expanded(1.0, 1.0)
            overlap = sum(_overlap(box, other) for other in placed)
            overlap += sum(box.width * box.height for px, py in others if box.contains(px, py))
            overlap += box.width * box.height - _overlap(box, inside)  # outside the axes counts too
            if best_overlap is None or overlap < best_overlap:
                if best is not None:
                    best.remove()
                best, best_overlap = text, overlap
            else:
                text.remove()
            if overlap == 0:
                break
        placed.append(best.get_window_extent(renderer))
        labels.append(best)
    return labels


def _overlap(a, b) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(width, 0) * max(height, 0)


def _log_axes(ax: Axes, xlabel: str, ylabel: str, logx: bool) -> None:
    ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def confusion_plot(matrix, label_names: Sequence[str], title: str = "", ax: Axes | None = None) -> Axes:
    """``matrix[true, predicted]`` as a heat map with the counts written in (chapters 4 and 10)."""
    matrix = np.asarray(matrix)
    if matrix.shape != (len(label_names), len(label_names)):
        raise SftbookError(f"A {matrix.shape} matrix does not match {len(label_names)} label names; pass one name per class.")
    if ax is None:
        size = 1.6 + 0.9 * len(label_names)
        _, ax = plt.subplots(figsize=(size, size * 0.9))
    ConfusionMatrixDisplay(matrix, display_labels=list(label_names)).plot(ax=ax, cmap="Blues", colorbar=False, values_format=",")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    ax.grid(False)
    return ax
