"""The evaluation report's figures: ROC curves, reliability, subgroups, forest plots, grounding.

Each function takes plain arrays and numbers (what the metric code computes) and returns a
:class:`~medtune.curate.plots.Plot` for the report's document model. Drawing follows the dataset
card's plots: matplotlib ``Figure`` objects on the Agg canvas, no pyplot, and the same inputs
always give the same PNG bytes.

Example::

    fpr, tpr = np.array([0, 0.2, 1]), np.array([0, 0.7, 1])
    plot = roc_plot({"probe": (fpr, tpr, 0.75)}, "Pneumonia, test split")
    blocks.append(Figure(plot))  # medtune.curate.card_doc.Figure
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from medtune.curate.plots import DPI, Plot, _png
from medtune.errors import MedtuneError

Curve = tuple[np.ndarray, np.ndarray, float]  # fpr, tpr, AUROC
Estimate = tuple[float, float, float]  # value, CI low, CI high

PANEL = 2.6  # inches per small-multiple panel
TRUTH = "#1fbf3f"  # the true box: green
PREDICTED = "#e01b1b"  # the predicted box: red, dashed


def slug(title: str) -> str:
    """A file-name stem from a title: "AUROC, test (site)" -> "auroc_test_site"."""
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") or "plot"


def _colours(names: Sequence[str]) -> dict[str, Any]:
    # One colour per model, the same in every panel and every figure of a report.
    palette = matplotlib.colormaps["tab10"]
    return {name: palette(k % 10) for k, name in enumerate(names)}


def _unique(names: Any) -> list[str]:
    return list(dict.fromkeys(names))


def _check_curves(curves: Mapping[str, Curve], what: str) -> None:
    if not curves:
        raise MedtuneError(f"{what}: no ROC curves to draw")
    for name, (fpr, tpr, _) in curves.items():
        if np.shape(fpr) != np.shape(tpr):
            raise MedtuneError(f"{what}: curve {name!r} has {len(fpr)} fpr and {len(tpr)} tpr")


def _roc_axes(ax: Axes, curves: Mapping[str, Curve], colours: Mapping[str, Any]) -> None:
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=0.8)
    for name, (fpr, tpr, auroc) in curves.items():
        label = f"{name} (AUROC {auroc:.3f})" if math.isfinite(auroc) else f"{name} (AUROC n/a)"
        ax.plot(fpr, tpr, color=colours[name], linewidth=1.5, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.spines[["top", "right"]].set_visible(False)


def roc_plot(curves: Mapping[str, Curve], title: str) -> Plot:
    """One ROC axes: a line per model (or label) with its AUROC in the legend; chance dashed."""
    _check_curves(curves, title)
    figure = Figure(figsize=(6, 4), dpi=DPI)
    ax = figure.add_subplot()
    _roc_axes(ax, curves, _colours(list(curves)))
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, fontsize=8)
    figure.tight_layout()
    return Plot(slug(title), title, _png(figure))


def roc_grid(panels: Mapping[str, Mapping[str, Curve]], title: str, columns: int = 4) -> Plot:
    """Small multiples: a ROC panel per task, the same colour per model everywhere, one legend.

    The legend shows names only: each panel's AUROCs are in its own corner, as text.
    """
    if not panels:
        raise MedtuneError(f"{title}: no ROC panels to draw")
    for task, curves in panels.items():
        _check_curves(curves, f"{title}, {task}")
    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    models = _unique(name for curves in panels.values() for name in curves)
    colours = _colours(models)
    figure = Figure(figsize=(PANEL * columns, PANEL * rows + 0.9), dpi=DPI)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax, (task, curves) in zip(axes.flat, panels.items(), strict=False):
        _roc_axes(ax, curves, colours)
        ax.set_title(task, fontsize=9)
        ax.tick_params(labelsize=7)
        scores = [
            f"{auroc:.3f}" if math.isfinite(auroc) else "n/a" for *_, auroc in curves.values()
        ]
        for k, (name, score) in enumerate(zip(curves, scores, strict=True)):
            ax.text(
                0.97,
                0.04 + 0.09 * (len(curves) - 1 - k),  # first model on top
                score,
                color=colours[name],
                fontsize=7,
                ha="right",
                transform=ax.transAxes,
            )
    for ax in axes.flat[len(panels) :]:
        ax.set_axis_off()
    handles = [Line2D([], [], color=colours[name], linewidth=1.5) for name in models]
    figure.legend(
        handles, models, loc="lower center", ncols=min(len(models), 4), frameon=False, fontsize=8
    )
    figure.suptitle(title, fontsize=10)
    legend_rows = math.ceil(len(models) / 4)
    figure.tight_layout(rect=(0, 0.25 * legend_rows / figure.get_figheight(), 1, 1))
    return Plot(slug(title), title, _png(figure))


def reliability_plot(curves: Mapping[str, Mapping[str, np.ndarray]], title: str) -> Plot:
    """Reliability diagram: accuracy against confidence per bin and model, counts underneath.

    Each model's mapping is what ``medtune.evaluate.stats.reliability`` returns ("confidence",
    "accuracy", "count", "edges"; a float "ece" goes into the legend); empty or nan bins are
    left out rather than drawn at zero.
    """
    if not curves:
        raise MedtuneError(f"{title}: no reliability curves to draw")
    colours = _colours(list(curves))
    figure = Figure(figsize=(6, 5), dpi=DPI)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=0.8, label="perfect")
    for name, curve in curves.items():
        missing = {"confidence", "accuracy", "count", "edges"} - set(curve)
        if missing:
            raise MedtuneError(f"{title}: reliability of {name!r} lacks {sorted(missing)}")
        confidence = np.asarray(curve["confidence"], dtype=float)
        accuracy = np.asarray(curve["accuracy"], dtype=float)
        count = np.asarray(curve["count"], dtype=float)
        edges = np.asarray(curve["edges"], dtype=float)
        if not (confidence.shape == accuracy.shape == count.shape == (len(edges) - 1,)):
            raise MedtuneError(f"{title}: reliability of {name!r} has mismatched bin arrays")
        keep = np.isfinite(confidence) & np.isfinite(accuracy) & (count > 0)
        ece = curve.get("ece")
        label = name
        if isinstance(ece, float | np.floating) and math.isfinite(ece):
            label = f"{name} (ECE {float(ece):.3f})"
        top.plot(
            confidence[keep],
            accuracy[keep],
            marker="o",
            markersize=3,
            linewidth=1.2,
            color=colours[name],
            label=label,
        )
        bottom.stairs(np.nan_to_num(count), edges, color=colours[name], linewidth=1.2)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("observed frequency")
    top.set_title(title, fontsize=10)
    top.legend(loc="upper left", frameon=False, fontsize=8)
    top.spines[["top", "right"]].set_visible(False)
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("count")
    bottom.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    return Plot(slug(title), title, _png(figure))


def _estimates(
    names: Sequence[str], series: Mapping[str, Sequence[Estimate]], title: str
) -> dict[str, np.ndarray]:
    # (n, 3) float arrays, None read as nan; one estimate per group or row, or an error.
    if not names:
        raise MedtuneError(f"{title}: no groups to draw")
    if not series:
        raise MedtuneError(f"{title}: no models to draw")
    arrays = {}
    for model, values in series.items():
        array = np.array(
            [[np.nan if v is None else v for v in triple] for triple in values], dtype=float
        ).reshape(-1, 3)
        if len(array) != len(names):
            raise MedtuneError(
                f"{title}: {model!r} has {len(array)} estimates for {len(names)} groups"
            )
        arrays[model] = array
    return arrays


def _whiskers(array: np.ndarray) -> np.ndarray:
    # Distances from the value to the CI ends, 0 where the CI is unknown (no whisker drawn).
    value, low, high = array.T
    below = np.where(np.isfinite(low), value - low, 0.0)
    above = np.where(np.isfinite(high), high - value, 0.0)
    return np.nan_to_num(np.vstack([below, above]).clip(min=0))


def _value_limits(arrays: Mapping[str, np.ndarray], reference: float | None) -> tuple[float, float]:
    # [0, 1] when everything lies in it (AUROC, sensitivity...); otherwise fit the data.
    values = np.concatenate([a.ravel() for a in arrays.values()])
    if reference is not None:
        values = np.append(values, reference)
    values = values[np.isfinite(values)]
    if values.size == 0 or (values.min() >= 0 and values.max() <= 1):
        return 0.0, 1.0
    low, high = min(0.0, values.min()), values.max()
    return low, high + 0.05 * (high - low or 1)


def _forest_limits(arrays: Mapping[str, np.ndarray]) -> tuple[float, float]:
    # Fit the points and CIs (a forest plot compares close values; [0, 1] would flatten them),
    # but never past [0, 1] when every value lies in it.
    values = np.concatenate([a.ravel() for a in arrays.values()])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    pad = 0.1 * (high - low) or 0.05
    if low >= 0 and high <= 1:
        return max(0.0, low - pad), min(1.0, high + pad)
    return low - pad, high + pad


def subgroup_plot(
    groups: Sequence[str],
    series: Mapping[str, Sequence[Estimate]],
    title: str,
    xlabel: str = "AUROC",
    reference: float | None = 0.5,
) -> Plot:
    """Horizontal grouped bars: per group (site, vendor, sex...), a bar per model with its CI.

    ``series[model][i]`` is (value, low, high) for ``groups[i]``; a nan value draws "n/a"
    instead of a bar, so a group too small to score is seen as such rather than as zero.
    """
    arrays = _estimates(groups, series, title)
    models = list(arrays)
    colours = _colours(models)
    height = 0.8 / len(models)  # of one group's band of 1
    figure = Figure(figsize=(6, 1.4 + len(groups) * (0.2 + 0.12 * len(models))), dpi=DPI)
    ax = figure.add_subplot()
    left, right = _value_limits(arrays, reference)
    positions = np.arange(len(groups), dtype=float)
    for k, model in enumerate(models):
        array = arrays[model]
        y = positions - 0.4 + height * (k + 0.5)
        drawn = np.isfinite(array[:, 0])
        ax.barh(
            y[drawn],
            array[drawn, 0],
            height=height * 0.9,
            xerr=_whiskers(array[drawn]),
            color=colours[model],
            label=model,
            error_kw={"linewidth": 0.8, "capsize": 2},
        )
        for row in np.flatnonzero(~drawn):
            ax.text(
                left + 0.01 * (right - left), y[row], "n/a", va="center", fontsize=7, color="0.35"
            )
    if reference is not None:
        ax.axvline(reference, linestyle="--", color="0.4", linewidth=0.8)
    return _rows_plot(figure, ax, groups, positions, (left, right), xlabel, title)


def _rows_plot(
    figure: Figure, ax: Any, labels: Sequence[str], positions: Any, xlim: tuple[float, float],
    xlabel: str, title: str,
) -> Plot:  # fmt: skip
    """Finish a plot of one row per label (the first on top), legend to the right."""
    ax.set_xlim(*xlim)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_yticks(positions, [str(label) for label in labels], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    return Plot(slug(title), title, _png(figure))


def comparison_plot(
    rows: Sequence[str],
    estimates: Mapping[str, Sequence[Estimate]],
    title: str,
    xlabel: str = "AUROC",
) -> Plot:
    """Forest plot: a row per task, a point and CI per model, models offset within the row.

    ``estimates[model][i]`` is (value, low, high) for ``rows[i]``; a nan value is written "n/a".
    """
    arrays = _estimates(rows, estimates, title)
    models = list(arrays)
    colours = _colours(models)
    step = 0.6 / max(1, len(models) - 1) if len(models) > 1 else 0.0
    figure = Figure(figsize=(6, 1.4 + len(rows) * (0.25 + 0.08 * len(models))), dpi=DPI)
    ax = figure.add_subplot()
    positions = np.arange(len(rows), dtype=float)
    left, right = _forest_limits(arrays)
    for k, model in enumerate(models):
        array = arrays[model]
        y = positions - 0.3 + step * k if len(models) > 1 else positions
        drawn = np.isfinite(array[:, 0])
        ax.errorbar(
            array[drawn, 0],
            y[drawn],
            xerr=_whiskers(array[drawn]),
            fmt="o",
            markersize=4,
            color=colours[model],
            capsize=2,
            linewidth=1,
            label=model,
        )
        for row in np.flatnonzero(~drawn):
            ax.text(left, y[row], " n/a", va="center", fontsize=7, color=colours[model])
    for row in range(1, len(rows)):
        ax.axhline(row - 0.5, color="0.9", linewidth=0.6)
    return _rows_plot(figure, ax, rows, positions, (left, right), xlabel, title)


def _grounding_figure(samples: Sequence[Mapping[str, Any]], title: str, columns: int) -> Figure:
    # The figure before encoding, so a test can find where a box was drawn.
    import cv2

    if not samples:
        raise MedtuneError(f"{title}: no grounding samples to draw")
    columns = max(1, min(columns, len(samples)))
    rows = math.ceil(len(samples) / columns)
    figure = Figure(figsize=(PANEL * columns, (PANEL + 0.3) * rows + 0.8), dpi=DPI)
    axes = figure.subplots(rows, columns, squeeze=False)
    for k, (ax, sample) in enumerate(zip(axes.flat, samples, strict=False)):
        image = np.asarray(sample["image"], dtype=np.float32)
        if image.ndim != 2:
            raise MedtuneError(f"{title}: sample {k} image has shape {image.shape}, not (H, W)")
        height, width = image.shape
        # Extent in pixel-edge coordinates, so box (x0, y0, x1, y1) px covers exactly its pixels.
        extent = (0, width, height, 0)
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, extent=extent, interpolation="nearest")
        heat = sample.get("heat")
        if heat is not None:
            heat = np.nan_to_num(np.asarray(heat, dtype=np.float32))
            heat = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
            ax.imshow(
                heat,
                cmap="inferno",
                vmin=0,
                vmax=1,
                alpha=0.6 * np.clip(heat, 0, 1),  # cold areas leave the image as it is
                extent=extent,
                interpolation="nearest",
            )
        for key, colour, style in (("truth", TRUTH, "-"), ("predicted", PREDICTED, "--")):
            box = sample.get(key)
            if box is not None:
                x0, y0, x1, y1 = (float(v) for v in box)
                ax.add_patch(
                    Rectangle(
                        (x0, y0),
                        x1 - x0,
                        y1 - y0,
                        fill=False,
                        edgecolor=colour,
                        linestyle=style,
                        linewidth=2,
                    )
                )
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        # Wrapped to the tile's width: finding phrases run long and would overlap the next tile.
        caption = textwrap.fill(str(sample.get("caption", "")), width=34)
        ax.set_xlabel(caption, fontsize=8)
    for ax in axes.flat[len(samples) :]:
        ax.set_axis_off()
    handles = [
        Line2D([], [], color=TRUTH, linewidth=2, label="true box"),
        Line2D([], [], color=PREDICTED, linewidth=2, linestyle="--", label="predicted box"),
        Patch(color=matplotlib.colormaps["inferno"](0.8), alpha=0.6, label="heat map"),
    ]
    figure.legend(handles=handles, loc="lower center", ncols=3, frameon=False, fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.35 / figure.get_figheight(), 1, 1))
    return figure


def grounding_samples_plot(
    samples: Sequence[Mapping[str, Any]], title: str, columns: int = 3
) -> Plot:
    """A grid of images with the heat map over them, the true box green, the predicted red.

    Each sample: "image" (H, W) in [0, 1]; "heat" (h, w) in [0, 1], stretched bilinearly over
    the image; "truth" and "predicted" boxes (x0, y0, x1, y1) in image pixels (either may be
    None); "caption" under the image.
    """
    return Plot(slug(title), title, _png(_grounding_figure(samples, title, columns)))
