"""Pixel statistics per site, from a seeded sample of stored images read from the shards.

Values are those stored (after windowing and resizing at ingest), counted inside the letterbox
only: the padding is reported as its own share so it does not drag the mean towards zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from medtune.curate.tables import Table, groups
from medtune.errors import MedtuneError
from medtune.workspace import Workspace

THUMBNAILS = 6  # sampled images per site kept for the card's image grid
THUMBNAIL_SIDE = 256  # px; larger stored images are shrunk for the grid
PIXEL_COLUMNS = ["site", "sampled", "mean", "std", "p1", "p99", "padding %"]


@dataclass
class PixelStats:
    table: Table
    thumbnails: dict[str, list[np.ndarray]]
    shape: tuple[int, ...]
    dtype: str


def pixel_statistics(ws: Workspace, table: pa.Table, per_site: int, seed: int) -> PixelStats:
    """Mean, standard deviation, 1st and 99th percentile of the pixels inside the letterbox,
    and the padding share, over up to ``per_site`` images per site drawn with ``seed``."""
    sites = groups(table, "site")
    geometry = {
        c: table.column(c).to_numpy(zero_copy_only=False)
        for c in ("shard_file", "index", "rows", "cols", "scale", "pad_x", "pad_y")
    }
    rng = np.random.default_rng(seed)
    shards: dict[str, np.ndarray] = {}  # shard file -> memory map, opened once
    out = PixelStats(Table("Pixel intensity per site", PIXEL_COLUMNS, []), {}, (), "")
    for code, site in sorted(enumerate(sites.names), key=lambda item: item[1]):
        members = np.flatnonzero(sites.codes == code)
        size = min(max(per_site, 0), len(members))  # 0: no pixels read, counts only
        picked = np.sort(rng.choice(members, size=size, replace=False))
        histogram, padding = np.zeros(1, np.int64), []
        for row in picked.tolist():  # one image at a time: stored images can be 4096 px
            image = _stored_image(ws, shards, geometry, row)
            content = _content(image, geometry, row)
            padding.append(1 - content.size / image.size)
            histogram = _add(histogram, np.bincount(content.ravel()))
            if len(out.thumbnails.setdefault(site, [])) < THUMBNAILS:
                out.thumbnails[site].append(thumbnail(image))
            out.shape, out.dtype = image.shape, str(image.dtype)
        padded = round(100 * float(np.mean(padding)), 1) if padding else None
        out.table.rows.append([site, len(picked), *_histogram_stats(histogram), padded])
    out.table.note = (
        f"Stored pixel values ({out.dtype}) inside the letterbox, over a seeded sample of up to "
        f"{per_site} images per site; p1/p99 by nearest rank."
    )
    return out


def thumbnail(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """A copy of ``image`` no larger than ``side`` px (area-averaged, dtype kept)."""
    if max(image.shape) <= side:
        return np.array(image)
    import cv2

    scale = side / max(image.shape)
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA)


def _stored_image(
    ws: Workspace, shards: dict[str, np.ndarray], geometry: dict[str, np.ndarray], row: int
) -> np.ndarray:
    name = str(geometry["shard_file"][row])
    if name not in shards:
        path = ws.images_dir / f"{name}.npy"
        if not path.is_file():
            raise MedtuneError(f"{path}: image shard missing; re-run `medtune ingest`")
        shards[name] = np.load(path, mmap_mode="r")
    return np.asarray(shards[name][int(geometry["index"][row])])


def _content(image: np.ndarray, geometry: dict[str, np.ndarray], row: int) -> np.ndarray:
    # The letterbox: the original scaled by `scale`, placed `pad` pixels from the top left.
    g = {k: geometry[k][row] for k in ("rows", "cols", "scale", "pad_x", "pad_y")}
    if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in g.values()):
        return image
    y0, x0 = int(g["pad_y"]), int(g["pad_x"])
    y1 = min(image.shape[0], y0 + round(float(g["rows"]) * float(g["scale"])))
    x1 = min(image.shape[1], x0 + round(float(g["cols"]) * float(g["scale"])))
    content = image[y0:y1, x0:x1]
    return content if content.size else image


def _add(histogram: np.ndarray, counts: np.ndarray) -> np.ndarray:
    if len(counts) > len(histogram):
        histogram = np.pad(histogram, (0, len(counts) - len(histogram)))
    histogram[: len(counts)] += counts
    return histogram


def _histogram_stats(histogram: np.ndarray) -> list[float | int | None]:
    total = int(histogram.sum())
    if not total:
        return [None, None, None, None]
    values = np.arange(len(histogram), dtype=np.float64)
    mean = float((values * histogram).sum() / total)
    std = float(np.sqrt(((values - mean) ** 2 * histogram).sum() / total))
    cdf = np.cumsum(histogram)
    p1, p99 = (int(np.searchsorted(cdf, q * total)) for q in (0.01, 0.99))
    return [round(mean, 1), round(std, 1), p1, p99]
