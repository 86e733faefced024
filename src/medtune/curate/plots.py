"""The card's plots, where a person would rather look than read: PNG bytes from stats tables.

Drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas rather than through
pyplot: no global backend switch, no display, no figure registry to leak (a figure is freed like
any object), and nothing fetched (matplotlib ships its DejaVu fonts). The same tables always
give the same bytes (the PNG's software stamp is left out).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medtune.curate.stats import DatasetStats
from medtune.curate.tables import Table

DPI = 100
MAX_SITES = 30  # bars and heat-map rows; the smaller sites are summed into one "other" row
MAX_PARTS = 10  # anatomies with a colour of their own; the rest are "other"
GRID_COLUMNS = 6  # images per site in the sample grid
GRID_SITES = 20
TILE = 96  # px per image in the grid, GAP of them white between images
GAP = 3


@dataclass(frozen=True)
class Plot:
    """One PNG: a file-name slug, a caption and the bytes."""

    name: str
    caption: str
    png: bytes


def card_plots(stats: DatasetStats) -> list[Plot]:
    """Every plot the card shows (the heat map only once labels exist)."""
    plots = [
        Plot("counts", "Images per site, by anatomy", counts_plot(stats.tables["site_anatomy"])),
        Plot("age_pyramid", "Patients by age decade and sex", age_pyramid(stats.tables["age_sex"])),
    ]
    if "prevalence_site" in stats.tables:
        table = stats.tables["prevalence_site"]
        plots.append(Plot("prevalence", "Positive % per site and finding", heat_map(table)))
    thumbnails = stats.pixels.thumbnails
    if thumbnails:
        caption = "Sample images per site, a seeded draw"
        if len(thumbnails) > GRID_SITES:
            caption += f"; the first {GRID_SITES} of {len(thumbnails)} sites"
        plots.append(Plot("samples", caption, sample_grid(thumbnails)))
    return plots


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _fold_rows(labels: list[str], values: np.ndarray, limit: int) -> tuple[list[str], np.ndarray]:
    # Rows past `limit` (the smallest: tables come largest first) summed into one.
    if len(labels) <= limit:
        return labels, values
    rest = values[limit - 1 :].sum(axis=0, keepdims=True)
    other = f"other {len(labels) - limit + 1} sites"
    return [*labels[: limit - 1], other], np.vstack([values[: limit - 1], rest])


def counts_plot(site_anatomy: Table) -> bytes:
    """Horizontal bars of images per site, stacked by anatomy."""
    parts = site_anatomy.columns[1:-1]
    sites = [str(row[0]) for row in site_anatomy.rows]
    values = np.array([row[1:-1] for row in site_anatomy.rows], dtype=float).reshape(
        len(sites), len(parts)
    )
    sites, values = _fold_rows(sites, values, MAX_SITES)
    if len(parts) > MAX_PARTS:
        values = np.hstack([values[:, : MAX_PARTS - 1], values[:, MAX_PARTS - 1 :].sum(1)[:, None]])
        parts = [*parts[: MAX_PARTS - 1], "other"]
    figure = Figure(figsize=(8, 1.5 + 0.35 * len(sites)))
    ax = figure.add_subplot()
    colours = matplotlib.colormaps["tab10"]
    left = np.zeros(len(sites))
    for k, part in enumerate(parts):
        ax.barh(sites, values[:, k], left=left, label=str(part), color=colours(k % 10))
        left += values[:, k]
    ax.invert_yaxis()  # the largest site on top
    ax.set_xlabel("images")
    ax.legend(title="anatomy", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    return _png(figure)


def age_pyramid(age_sex: Table) -> bytes:
    """Patients per age decade: women to the left, men to the right."""
    rows = [row for row in age_sex.rows if row[0] != "unknown"]
    decades = [row[0] for row in rows]
    column = {name: i for i, name in enumerate(age_sex.columns)}
    women = np.array([row[column["F"]] for row in rows], dtype=float)
    men = np.array([row[column["M"]] for row in rows], dtype=float)
    others = sum(sum(row[1:]) for row in age_sex.rows) - women.sum() - men.sum()
    figure = Figure(figsize=(7, 4.5))
    ax = figure.add_subplot()
    ax.barh(decades, -women, color="#b05a7a", label=f"F ({int(women.sum())})")
    ax.barh(decades, men, color="#4a78a8", label=f"M ({int(men.sum())})")
    ax.axvline(0, color="black", linewidth=0.8)
    limit = max(1.0, women.max(initial=0), men.max(initial=0))
    ax.set_xlim(-limit * 1.1, limit * 1.1)
    ax.xaxis.set_major_formatter(lambda x, _: f"{abs(x):g}")
    ax.set_xlabel("patients")
    ax.set_ylabel("age (years)")
    ax.legend(loc="upper right", frameon=False)
    if others:
        ax.set_title(
            f"not shown: {int(others)} patients of other or unknown sex or age", fontsize=9
        )
    ax.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    return _png(figure)


def heat_map(prevalence: Table) -> bytes:
    """Positive % per site (rows) and finding (columns), values written in the cells."""
    findings = prevalence.columns[2:]
    rows = sorted(prevalence.rows, key=lambda r: -r[1])  # largest sites first
    sites = [str(r[0]) for r in rows]
    values = np.array([[v or 0.0 for v in r[2:]] for r in rows], dtype=float).reshape(
        len(sites), len(findings)
    )
    if len(sites) > MAX_SITES:  # the smaller sites are left out, not averaged in
        sites, values = sites[:MAX_SITES], values[:MAX_SITES]
    figure = Figure(figsize=(2.5 + 0.55 * len(findings), 1.8 + 0.35 * len(sites)))
    ax = figure.add_subplot()
    image = ax.imshow(
        values, cmap="Reds", vmin=0, vmax=max(1.0, float(values.max())), aspect="auto"
    )
    ax.set_xticks(
        range(len(findings)), [f.replace("_", " ") for f in findings], rotation=45, ha="right"
    )
    ax.set_yticks(range(len(sites)), sites)
    middle = values.max() / 2
    for (i, j), value in np.ndenumerate(values):
        colour = "white" if value > middle else "black"
        ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7, color=colour)
    if len(prevalence.rows) > len(sites):
        ax.set_title(f"the {len(sites)} largest of {len(prevalence.rows)} sites", fontsize=9)
    figure.colorbar(image, ax=ax, label="positive %", fraction=0.04)
    figure.tight_layout()
    return _png(figure)


def sample_grid(thumbnails: dict[str, list[np.ndarray]]) -> bytes:
    """A row of sample images per site, each scaled to its own 1st-99th percentile.

    The images are tiled into one array and drawn as one image: 120 small axes took 17 s.
    """
    sites = sorted(thumbnails)[:GRID_SITES]
    mosaic = np.full((TILE * max(1, len(sites)), TILE * GRID_COLUMNS), 255, np.uint8)
    for r, site in enumerate(sites):
        for c, image in enumerate(thumbnails[site][:GRID_COLUMNS]):
            inner = TILE - GAP
            mosaic[r * TILE : r * TILE + inner, c * TILE : c * TILE + inner] = _tile(image, inner)
    height, width = mosaic.shape[0] / DPI, mosaic.shape[1] / DPI
    margin = 1.6  # inches for the site names
    figure = Figure(figsize=(width + margin, height))
    ax = figure.add_axes((margin / (width + margin), 0, width / (width + margin), 1))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(r + 0.5) * TILE - GAP / 2 for r in range(len(sites))], sites, fontsize=8)
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    return _png(figure)


def _tile(image: np.ndarray, side: int) -> np.ndarray:
    # uint8 for display, contrast per image (1st-99th percentile), shrunk to side x side.
    import cv2

    low, high = np.percentile(image, (1, 99)) if image.size else (0.0, 1.0)
    scaled = np.clip((image.astype(np.float32) - low) * (255 / max(high - low, 1)), 0, 255)
    return cv2.resize(scaled.astype(np.uint8), (side, side), interpolation=cv2.INTER_AREA)
