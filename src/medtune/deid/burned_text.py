"""Burned-in pixel text: find it, read it, black it out, and check that nothing identifying is left.

Modalities write the patient's name, ID and dates onto the stored pixels, where no header action
reaches. :func:`clear_burned_text` finds text in the displayed image, reads it with Tesseract and
returns the boxes to black out (with :func:`blank`) in the stored pixels; an image that comes back
not ``cleared`` is for the caller to quarantine.

Cheap first, OCR second, because OCR is the costly part (issue: 5 images/s for a whole ingest on
2 cores): candidates come from a morphological edge map at most ``WORK_PX`` on its long side,
whose blobs are grouped into lines of glyphs and lines into blocks; only those crops are read, all
in one Tesseract call. Lone glyphs and pairs are never candidates: a lead marker ("L", "R", "LT")
is physical, and the probe suite needs it; a block that reads as a marker word is kept too.

After blanking, the blanked areas (with a margin) and the four corners, where modalities put their
overlays, are read again. Identifying words found there (an identifier from the header or RIS,
matched fuzzily: OCR reads "^" as "*" or "-", "0" as "O"; or a date- or ID-shaped token), and
confident text beside a blanked block, are blanked too and all is read once more: whatever
identifying text is still there then means not cleared.

Tesseract runs in process through ``tesserocr`` when that is installed (the model loads once per
process: ~100 ms less per call) and otherwise as the Debian ``tesseract`` binary; both read the
same ``eng`` model and answer in the same TSV. Nothing is downloaded.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import yaml

from medtune.deid.identifiers import Identifiers

WORK_PX = 1024  # long side of the grid candidates are searched on
EDGE_MIN, EDGE_MAX = 32, 96  # gradient (display levels) that counts as a glyph's edge
GLYPH_MIN_PX = 5  # shortest glyph on the working grid; smaller text is out of reach
GLYPH_MAX_FRACTION = 0.05  # tallest glyph, of the short side (overlays: 1-3 %, lead marker ~4 %)
OCR_HEIGHT_PX = 24  # glyph height crops are read at: Tesseract's time grows with it
ADAPTIVE_C = 12  # display levels a stroke stands out from its neighbourhood
MIN_CONFIDENCE = 40.0  # Tesseract word confidence (0-100) under which 1-2 characters are noise
SURE_CONFIDENCE = 60.0  # confidence for a word outside any candidate to be taken for text
CORNER = (0.40, 0.16)  # each corner re-read after blanking, as fractions of width and height
VERIFY_ROUNDS = 2  # reads after blanking; words found identifying in one are blanked for the next
MARKER_WORDS = frozenset({"L", "R", "LT", "RT", "LEFT", "RIGHT", "SIN", "DX", "DEX"})
TEXT_REGIONS = "text_regions.yaml"
TESSDATA_DIRS = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
)


@dataclass(frozen=True)
class Box:
    """A rectangle in pixel coordinates: x0, y0 inclusive, x1, y1 exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return max(self.x1 - self.x0, 0) * max(self.y1 - self.y0, 0)

    def grow(self, margin: int, shape: tuple[int, ...]) -> Box:
        """This box widened by ``margin`` on every side, clipped to an image of ``shape``."""
        rows, cols = shape[:2]
        return Box(
            max(self.x0 - margin, 0),
            max(self.y0 - margin, 0),
            min(self.x1 + margin, cols),
            min(self.y1 + margin, rows),
        )

    def union(self, other: Box) -> Box:
        return Box(
            min(self.x0, other.x0),
            min(self.y0, other.y0),
            max(self.x1, other.x1),
            max(self.y1, other.y1),
        )

    def intersects(self, other: Box) -> bool:
        return (
            self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1
        )


@dataclass(frozen=True)
class Word:
    """One word Tesseract read, in the coordinates of the image it was asked to read."""

    text: str
    box: Box
    confidence: float  # 0-100
    line: int = 0  # words with the same number were read as one line


@dataclass(frozen=True)
class TextRegion:
    """Where a manufacturer's model burns text in, as fractions (0-1) of width and height."""

    manufacturer: str  # fnmatch pattern, case-insensitive: "Acme*"
    model: str  # fnmatch pattern, "*" for every model
    boxes: tuple[tuple[float, float, float, float], ...]  # x0, y0, x1, y1


@dataclass
class PixelTextResult:
    """What to black out in one image and whether that clears it (counts only, never text)."""

    boxes: list[Box]  # in pixel coordinates of the display image: pass them to :func:`blank`
    cleared: bool
    reason: str | None = None  # one line of kinds and counts, when not cleared
    candidates: int = 0  # candidate text blocks found without OCR
    words_found: int = 0  # words read in the blanked candidates
    identifiers_matched: int = 0  # known identifiers among them
    markers_kept: int = 0  # candidates read as a lead marker and left in place
    known_regions: int = 0  # manufacturer/model regions blanked
    residual: dict[str, int] = field(default_factory=dict)  # kind -> count left after blanking


class OcrUnavailable(RuntimeError):
    """No Tesseract (library or binary) with its English model on this machine."""


# ---------------------------------------------------------------------------------------------
# Public functions.


def find_text_regions(display: np.ndarray) -> list[Box]:
    """Candidate text blocks in a displayed image (uint8, 2-D, white = bright), without OCR.

    Glyphs are blobs of crisp edges; three or more of one height on one baseline (or glyphs run
    together into a word) make a line, and lines stacked close together make a block. Boxes are
    in ``display`` coordinates, with a margin of about a third of a glyph.
    """
    return [box for box, _glyph in _candidates(display)[0]]


def ocr(display: np.ndarray, box: Box, glyph_px: int | None = None) -> list[Word]:
    """Words Tesseract reads in ``box`` of ``display``, in ``display`` coordinates.

    The crop is scaled so that its glyphs (``glyph_px`` tall, measured when not given) are about
    ``OCR_HEIGHT_PX`` tall, and binarised dark on light. Raises :class:`OcrUnavailable` when
    neither ``tesserocr`` nor the ``tesseract`` binary with its English model is installed.
    """
    return _read(display, [(box, glyph_px or _glyph_height(display, box))])[0]


def clear_burned_text(
    display: np.ndarray,
    *,
    burned_in_annotation: str | None,
    manufacturer: str | None,
    model: str | None,
    known: Identifiers | None,
    regions: Sequence[TextRegion] | None = None,
) -> PixelTextResult:
    """Decide what to black out in one image, and whether that clears its burned-in text.

    ``display`` is the image as a viewer shows it (uint8, 2-D, MONOCHROME2 orientation, VOI
    applied, stored resolution). Every candidate OCR reads text in is blanked, unless it reads
    as a lead marker; the known regions of this ``manufacturer`` and ``model`` (``regions``,
    by default :func:`text_regions`) always are. The blanked areas and the corners are then read
    again: an identifier from ``known`` or a date- or ID-shaped token there, or Burned In
    Annotation "YES" with nothing to blank, leaves ``cleared`` False: quarantine the image.
    """
    if display.ndim != 2 or display.dtype != np.uint8:
        raise ValueError(f"burned-in text: expected a 2-D uint8 display image, got {display.dtype}")
    shape = display.shape
    matcher = _Matcher(known or Identifiers())
    found, singles = _candidates(display)
    table = text_regions() if regions is None else regions
    known_boxes = _known_boxes(table, manufacturer, model, shape)
    result = PixelTextResult([], False, candidates=len(found), known_regions=len(known_boxes))
    yes = (burned_in_annotation or "").strip().upper() == "YES"
    try:
        ocr_boxes, glyph = _read_candidates(display, found, matcher, result)
        result.boxes = _absorb(_bridge(ocr_boxes, glyph), singles, glyph, shape) + known_boxes
        if yes:
            # The modality says it wrote text in: blank every text-like block, read or not
            # (small text at low resolution defeats OCR, not a reader). Lone glyphs and pairs,
            # the lead markers, are never candidates, so they stay.
            result.boxes += [box for box, _glyph in found]
        for _round in range(VERIFY_ROUNDS):
            if not (result.boxes or yes):
                break
            # Text the candidates missed (crossed by an anatomy edge, say) is blanked when it is
            # identifying or beside a blanked block, and all is read again; what is left stays.
            result.residual, missed = _residual(display, result.boxes, glyph, matcher)
            if not missed:
                break
            result.boxes += missed
    except OcrUnavailable as exc:
        result.boxes = [box for box, _glyph in found] + known_boxes
        result.reason = str(exc)
        return result
    if result.residual:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(result.residual.items()))
        result.reason = f"burned-in text left after blanking: {kinds}"
    elif yes and not result.boxes:
        result.reason = (
            "Burned In Annotation is YES but no readable text was found "
            f"({result.candidates} candidate regions)"
        )
    else:
        result.cleared = True
    return result


def blank(pixels: np.ndarray, boxes: Iterable[Box], value: float) -> None:
    """Set ``boxes`` (plus a small margin) of ``pixels`` to ``value``, in place.

    ``pixels`` is 2-D or (rows, cols, samples), of any dtype; ``value`` is the stored value that
    displays black: 0 for MONOCHROME2, the largest value for MONOCHROME1.
    """
    for box in boxes:
        g = box.grow(_margin(box), pixels.shape)
        pixels[g.y0 : g.y1, g.x0 : g.x1, ...] = value


def text_regions(extra: Path | None = None) -> tuple[TextRegion, ...]:
    """The shipped table of known text regions, plus those in the user's YAML file ``extra``."""
    regions = _shipped_regions()
    if extra is not None:
        try:
            data = yaml.safe_load(extra.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{extra}: cannot read text regions ({type(exc).__name__})") from None
        regions += _parse_regions(data, str(extra))
    return regions


def identifying_kinds(words: Sequence[Word], known: Identifiers | None) -> list[str]:
    """Kinds of identifying text among OCR ``words`` (one per hit; never the text itself).

    A known identifier matched fuzzily ("name", "id", "date", "place", "contact"), or a
    "date-shaped" or "id-shaped" token. The leak scan can use it on its own OCR.
    """
    return _Matcher(known or Identifiers()).leaks(words)


# ---------------------------------------------------------------------------------------------
# Candidates, without OCR.


def _candidates(display: np.ndarray) -> tuple[list[tuple[Box, int]], list[tuple[Box, int]]]:
    """Text blocks, and the lone glyphs or pairs, each with its glyph height (display px)."""
    factor = max(int(np.ceil(max(display.shape) / WORK_PX)), 1)
    blobs = _glyph_blobs(_edge_map(display, factor))
    lines, singles = [], []
    for group in _lines(blobs):
        line = blobs[group]
        box = Box(*(int(v) for v in (*line[:, :2].min(axis=0), *line[:, 2:4].max(axis=0))))
        glyph = _text_line_height(line)
        if glyph:
            lines.append((box, glyph))
        elif len(group) <= 2:
            singles.append((_scale(box, factor), box.height * factor))
    blocks = []
    for box, glyph in _blocks(lines):
        pad = max(round(0.3 * glyph), 1) * factor
        blocks.append((_scale(box, factor).grow(pad, display.shape), glyph * factor))
    return blocks, singles


def _scale(box: Box, factor: int) -> Box:
    return Box(box.x0 * factor, box.y0 * factor, box.x1 * factor, box.y1 * factor)


def _edge_map(display: np.ndarray, factor: int) -> np.ndarray:
    """Crisp edges (0/1) on the working grid: the gradient at full resolution, max-pooled.

    Max-pooling keeps a thin stroke's full contrast, which averaging would halve. The threshold
    follows the image's own texture (3x its 95th percentile gradient), between ``EDGE_MIN`` and
    ``EDGE_MAX``: white text on bright anatomy stands out by only ~50 levels.
    """
    grad = cv2.morphologyEx(display, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    if factor > 1:
        kernel = np.ones((factor, factor), np.uint8)
        grad = cv2.dilate(grad, kernel, anchor=(0, 0))[::factor, ::factor].copy()
    counts = np.cumsum(np.bincount(grad[::2, ::2].ravel(), minlength=256))
    texture = float(np.searchsorted(counts, 0.95 * counts[-1]))
    return (grad >= min(max(3.0 * texture, EDGE_MIN), EDGE_MAX)).astype(np.uint8)


def _glyph_blobs(edges: np.ndarray) -> np.ndarray:
    """Glyph-sized blobs of an edge map: (n, 5) x0, y0, x1, y1 and edge fill of the box (%)."""
    # Straight edges longer than any glyph are collimator blades or the detector border, never
    # text; their halo goes too, or it would glue a block's lines together. Blades sit a degree
    # or two off the axes, so runs are looked for in the edge map thickened across them; a
    # horizontal run that passes near glyph strokes (vertical runs) is a text line's middle.
    max_h = max(int(GLYPH_MAX_FRACTION * min(edges.shape)), 3 * GLYPH_MIN_PX)
    long_px = max_h + GLYPH_MIN_PX
    strokes = cv2.morphologyEx(edges, cv2.MORPH_OPEN, np.ones((GLYPH_MIN_PX + 1, 1), np.uint8))
    near_strokes = cv2.dilate(strokes, np.ones((1, 2 * GLYPH_MIN_PX + 1), np.uint8))
    thick = cv2.dilate(edges, np.ones((3, 1), np.uint8))
    straight = cv2.morphologyEx(thick, cv2.MORPH_OPEN, np.ones((1, long_px), np.uint8))
    straight &= 1 - near_strokes
    thick = cv2.dilate(edges, np.ones((1, 3), np.uint8))
    straight |= cv2.morphologyEx(thick, cv2.MORPH_OPEN, np.ones((long_px, 1), np.uint8))
    edges = edges & (1 - cv2.dilate(straight, np.ones((3, 3), np.uint8)))
    edges = cv2.morphologyEx(edges, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    _n, _labels, stats, _ = cv2.connectedComponentsWithStats(edges, connectivity=8)
    x, y, w, h, area = (stats[1:, i] for i in range(5))
    fill = area / np.maximum(w * h, 1)
    # A glyph is short; glyphs run together into a word are densely edged.
    keep = (h >= GLYPH_MIN_PX) & (h <= max_h) & (w >= 2) & ((w <= 2 * h) | (fill >= 0.3))
    return np.stack([x, y, x + w, y + h, np.round(fill * 100)], axis=1).astype(np.int32)[keep]


def _lines(blobs: np.ndarray) -> list[list[int]]:
    """Group blobs into lines: overlapping rows, similar heights, gaps under 1.2 glyphs."""
    parent = list(range(len(blobs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    order = np.argsort(blobs[:, 0], kind="stable")
    heights = blobs[:, 3] - blobs[:, 1]
    reach = 1.2 * heights.max(initial=0)
    for pos, a in enumerate(order):
        for b in order[pos + 1 :]:
            gap = blobs[b, 0] - blobs[a, 2]
            if gap > reach:
                break  # sorted by x0: every later blob is further still
            low, high = sorted((heights[a], heights[b]))
            overlap = min(blobs[a, 3], blobs[b, 3]) - max(blobs[a, 1], blobs[b, 1])
            if gap <= 1.2 * high and overlap >= 0.5 * low and high <= 1.6 * low:
                parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for i in range(len(blobs)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _text_line_height(line: np.ndarray) -> int:
    """Glyph height of a group of blobs that looks like text, or 0 when it does not.

    Text is a word whose glyphs ran together (a blob 2.5 glyphs wide or more, densely edged),
    or three or more glyphs of one height on one baseline or under one top line. A lone glyph
    (a lead marker) or a pair ("LT") is not, nor are the ragged blobs of gas or bone.
    """
    heights = line[:, 3] - line[:, 1]
    tall = heights.max()
    if tall < GLYPH_MIN_PX + 1:
        return 0
    widths, fill = line[:, 2] - line[:, 0], line[:, 4] / 100
    if np.any((widths >= 2.5 * heights) & (heights >= 0.75 * tall) & (fill >= 0.42)):
        return int(np.median(heights[heights >= 0.75 * tall]))
    glyphs = line[heights >= 0.7 * tall]
    tolerance = max(0.2 * tall, 1.5)
    for edge in (glyphs[:, 3], glyphs[:, 1]):  # baseline, then top line
        if np.sum(np.abs(edge - np.median(edge)) <= tolerance) >= 3:
            return int(np.median(glyphs[:, 3] - glyphs[:, 1]))
    return 0


def _blocks(lines: list[tuple[Box, int]]) -> list[tuple[Box, int]]:
    """Merge lines that overlap, or sit less than a glyph apart with similar glyphs."""
    blocks = sorted(lines, key=lambda item: item[0].y0)
    i = 0
    while i < len(blocks):
        (a, ga), merged = blocks[i], False
        for j in range(i + 1, len(blocks)):
            b, gb = blocks[j]
            g = max(ga, gb)
            near = b.y0 - a.y1 <= g and a.y0 - b.y1 <= g and b.x0 <= a.x1 + g and a.x0 <= b.x1 + g
            if a.intersects(b) or (near and g <= 1.5 * min(ga, gb)):
                blocks[i] = (a.union(b), g)
                del blocks[j]
                merged = True
                break
        i = 0 if merged else i + 1
    return blocks


# ---------------------------------------------------------------------------------------------
# OCR.


def _glyph_height(display: np.ndarray, box: Box) -> int:
    """Typical glyph height in ``box``: the median height of its runs of inked rows."""
    ink = _binarise(display[box.y0 : box.y1, box.x0 : box.x1]) == 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], ink.any(axis=1).astype(np.int8), [0]])))
    runs = edges[1::2] - edges[0::2]
    runs = runs[runs >= 3]
    return int(np.median(runs)) if runs.size else max(box.height // 2, 1)


def _binarise(crop: np.ndarray, glyph_px: int | None = None) -> np.ndarray:
    """Ink black on white, whatever the polarity and however uneven the background.

    A local threshold (a window of about two glyphs) copes with text that crosses from a
    collimated border into anatomy; of the two polarities, the ink is the sparser one. Ink that
    cannot be a glyph of ``glyph_px`` (blade edges, bone outlines, blanked boxes) is erased:
    Tesseract's layout analysis takes such shapes for pictures and skips the text beside them.
    """
    glyph_px = glyph_px or max(min(crop.shape) // 2, 3)
    block = 2 * max(glyph_px, 3) + 1
    mean = cv2.ADAPTIVE_THRESH_MEAN_C
    bright = cv2.adaptiveThreshold(crop, 255, mean, cv2.THRESH_BINARY, block, -ADAPTIVE_C)
    dark = cv2.adaptiveThreshold(crop, 255, mean, cv2.THRESH_BINARY_INV, block, ADAPTIVE_C)
    ink = bright if np.count_nonzero(bright) <= np.count_nonzero(dark) else dark
    _n, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    w, h = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    not_glyph = (h > 2.2 * glyph_px) | ((h < 0.4 * glyph_px) & (w > 1.5 * glyph_px))
    not_glyph[0] = True  # the background
    ink[not_glyph[labels]] = 0
    return 255 - ink


def _read(display: np.ndarray, boxes: Sequence[tuple[Box, int]]) -> list[list[Word]]:
    """Read each (box, glyph height) of ``display`` in one Tesseract call.

    Each crop is scaled to the reading height, binarised and stacked into one page, as starting
    Tesseract can cost more than reading a few lines; words are mapped back by their strip.
    """
    if not boxes:
        return []
    gap, strips, tops, scales = OCR_HEIGHT_PX, [], [], []
    y = gap
    for box, glyph_px in boxes:
        crop = display[box.y0 : box.y1, box.x0 : box.x1]
        scale = float(np.clip(OCR_HEIGHT_PX / max(glyph_px, 1), 0.25, 6.0))
        size = (max(round(crop.shape[1] * scale), 1), max(round(crop.shape[0] * scale), 1))
        resample = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
        strips.append(_binarise(cv2.resize(crop, size, interpolation=resample), OCR_HEIGHT_PX))
        tops.append(y)
        scales.append(scale)
        y += strips[-1].shape[0] + gap
    page = np.full((y, max(s.shape[1] for s in strips) + 2 * gap), 255, np.uint8)
    for strip, top in zip(strips, tops, strict=True):
        page[top : top + strip.shape[0], gap : gap + strip.shape[1]] = strip
    found: list[list[Word]] = [[] for _ in boxes]
    for word in _tesseract(page):
        i = int(np.searchsorted(tops, (word.box.y0 + word.box.y1) / 2, side="right")) - 1
        if i < 0 or (word.box.y0 + word.box.y1) / 2 >= tops[i] + strips[i].shape[0]:
            continue  # in a gap between strips: nothing was there
        box, s, top = boxes[i][0], scales[i], tops[i]
        mapped = Box(
            box.x0 + int((word.box.x0 - gap) / s),
            box.y0 + int((word.box.y0 - top) / s),
            box.x0 + int(np.ceil((word.box.x1 - gap) / s)),
            box.y0 + int(np.ceil((word.box.y1 - top) / s)),
        )
        found[i].append(Word(word.text, mapped, word.confidence, word.line))
    return found


def _tesseract(page: np.ndarray) -> list[Word]:
    """Words on ``page`` (uint8, 2-D, dark text on white), read as one block of text."""
    engine = _engine()
    if engine is None:
        raise OcrUnavailable(
            "burned-in text: no OCR engine (install Debian tesseract-ocr, or tesserocr)"
        )
    return _parse_tsv(engine(np.ascontiguousarray(page)))


def _parse_tsv(tsv: str) -> list[Word]:
    words, lines = [], {}
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5" or not cols[11].strip():
            continue
        line = lines.setdefault(tuple(cols[1:5]), len(lines))  # page, block, paragraph, line
        left, top, width, height = (int(v) for v in cols[6:10])
        box = Box(left, top, left + width, top + height)
        words.append(Word(cols[11].strip(), box, float(cols[10]), line))
    return words


@functools.cache
def _engine() -> Callable[[np.ndarray], str] | None:
    """A function from a page to Tesseract's TSV, or None when no Tesseract is installed."""
    return _tesserocr_engine() or _cli_engine()


def _tesserocr_engine() -> Callable[[np.ndarray], str] | None:
    tessdata = _tessdata_dir()
    try:
        import tesserocr  # optional: Tesseract in process, its model loaded once
    except ImportError:
        return None
    if tessdata is None:
        return None
    api = tesserocr.PyTessBaseAPI(
        path=tessdata, lang="eng", psm=tesserocr.PSM.SINGLE_BLOCK, oem=tesserocr.OEM.LSTM_ONLY
    )
    lock = threading.Lock()  # one TessBaseAPI serves one thread at a time

    def read(page: np.ndarray) -> str:
        with lock:
            api.SetImageBytes(page.tobytes(), page.shape[1], page.shape[0], 1, page.shape[1])
            api.SetSourceResolution(300)  # crops carry no resolution; silences a warning
            return api.GetTSVText(0)

    return read


def _cli_engine() -> Callable[[np.ndarray], str] | None:
    binary = shutil.which("tesseract")
    if binary is None:
        return None
    command = [binary, "stdin", "stdout", "--psm", "6", "--oem", "1", "-l", "eng", "tsv"]
    env = dict(os.environ, OMP_THREAD_LIMIT="1")  # ingest already runs a process per core

    def read(page: np.ndarray) -> str:
        png = cv2.imencode(".png", page)[1].tobytes()
        try:
            done = subprocess.run(command, input=png, capture_output=True, env=env, timeout=120)
        except subprocess.TimeoutExpired:
            raise OcrUnavailable("burned-in text: tesseract timed out") from None
        if done.returncode != 0:
            raise OcrUnavailable(f"burned-in text: tesseract exited with {done.returncode}")
        return done.stdout.decode("utf-8", "replace")

    return read


def _tessdata_dir() -> str | None:
    """Where ``eng.traineddata`` is: $TESSDATA_PREFIX, or a Debian or local tessdata folder."""
    for folder in (os.environ.get("TESSDATA_PREFIX", ""), *TESSDATA_DIRS):
        if folder and (Path(folder) / "eng.traineddata").is_file():
            return folder
    return None


# ---------------------------------------------------------------------------------------------
# Deciding what to blank, and checking the result.


def _read_candidates(
    display: np.ndarray,
    found: list[tuple[Box, int]],
    matcher: _Matcher,
    result: PixelTextResult,
) -> tuple[list[Box], int]:
    """Read the candidates; the boxes to blank, and the glyph height of the text found.

    Counts words, identifiers and kept lead markers into ``result``.
    """
    boxes, glyphs = [], []
    reads = _read(display, found)
    for (box, glyph), words in zip(found, reads, strict=True):
        text = [w for w in words if _is_text(w, matcher)]
        if text and _is_marker(text):
            result.markers_kept += 1
        elif text:
            result.words_found += len(text)
            boxes.append(_cover(box, text, glyph, display.shape))
            glyphs.append(glyph)
    result.identifiers_matched = len(set().union(*map(matcher.find, reads)))
    # Without text found, read the corners for overlays of ~2 % of the height.
    glyph = int(np.median(glyphs)) if glyphs else max(round(0.02 * display.shape[0]), 1)
    return boxes, max(glyph, GLYPH_MIN_PX)


def _is_text(word: Word, matcher: _Matcher) -> bool:
    """Text, rather than noise read into edges and texture: 3+ characters, or confident."""
    alnum = sum(c.isalnum() for c in word.text)
    if alnum >= 3 or (alnum >= 1 and word.confidence >= MIN_CONFIDENCE):
        return True
    return bool(matcher.leaks([word]))


def _is_marker(words: list[Word]) -> bool:
    """A lead marker read alone: "L", "RT", "LEFT" and the like, nothing else."""
    return "".join(c for w in words for c in w.text if c.isalnum()).upper() in MARKER_WORDS


def _margin(box: Box) -> int:
    # Anti-aliased glyph edges and OCR's loose word boxes reach a pixel or two outside.
    return max(2, round(0.1 * min(box.height, box.x1 - box.x0)))


def _cover(box: Box, words: list[Word], glyph: int, shape: tuple[int, ...]) -> Box:
    """The candidate, widened to every word read in it (OCR can see past a clipped edge) and by
    about a character at each end of its lines (a first glyph the noise split off)."""
    for word in words:
        box = box.union(word.box)
    side, edge = max(round(0.7 * glyph), 1), max(glyph // 8, 1)
    return Box(box.x0 - side, box.y0 - edge, box.x1 + side, box.y1 + edge).grow(0, shape)


def _bridge(boxes: list[Box], glyph: int) -> list[Box]:
    """Join blanked blocks stacked less than two lines apart: a line between them was missed."""
    out = sorted(boxes, key=lambda b: b.y0)
    i = 0
    while i + 1 < len(out):
        a, b = out[i], out[i + 1]
        if b.y0 - a.y1 <= 2 * glyph and b.x0 < a.x1 and a.x0 < b.x1:
            out[i : i + 2] = [a.union(b)]
        else:
            i += 1
    return out


def _absorb(
    boxes: list[Box], singles: list[tuple[Box, int]], glyph: int, shape: tuple[int, ...]
) -> list[Box]:
    """Widen blanked blocks to stray glyphs of text size within two lines of them (the "5" of a
    line whose other glyphs vanished into a white border). A lead marker is taller (14 mm)."""
    out = list(boxes)
    for single, height in singles:
        if 0.6 * glyph <= height <= 1.2 * glyph:
            for i, box in enumerate(out):
                if box.grow(2 * glyph, shape).intersects(single):
                    out[i] = box.union(single).grow(max(glyph // 8, 1), shape)
                    break
    return out


def _residual(
    display: np.ndarray, boxes: list[Box], glyph: int, matcher: _Matcher
) -> tuple[dict[str, int], list[Box]]:
    """Identifying text still readable around the blanked boxes and in the corners.

    Returns the count per kind, and boxes to blank still: OCR lines holding identifying text,
    and text read beside the blanked boxes.
    """
    after = display.copy()
    blank(after, boxes, 0)
    rows, cols = display.shape
    w, h = round(CORNER[0] * cols), round(CORNER[1] * rows)
    areas = [box.grow(2 * glyph, display.shape) for box in boxes] + [
        Box(0, 0, w, h),
        Box(cols - w, 0, cols, h),
        Box(0, rows - h, w, rows),
        Box(cols - w, rows - h, cols, rows),
    ]
    merged: list[Box] = []
    for area in areas:  # read no pixel twice
        for i, other in enumerate(merged):
            if other.intersects(area):
                merged[i] = other.union(area)
                break
        else:
            merged.append(area)
    near = areas[: len(boxes)]
    residual: dict[str, int] = {}
    missed: list[Box] = []
    for words in _read(after, [(area, glyph) for area in merged]):
        for line in sorted({word.line for word in words}):
            on_line = [word for word in words if word.line == line]
            kinds = matcher.leaks(on_line)
            for kind in kinds:
                residual[kind] = residual.get(kind, 0) + 1
            # Text beside a blanked block is more of the overlay, identifying or not.
            beside = [
                w
                for w in on_line
                if w.confidence >= SURE_CONFIDENCE
                and _is_text(w, matcher)
                and _touches(w.box, near)
            ]
            if kinds or beside:
                cover = functools.reduce(Box.union, (w.box for w in (on_line if kinds else beside)))
                missed.append(cover.grow(max(glyph // 3, 1), display.shape))
    return residual, missed


def _touches(box: Box, areas: list[Box]) -> bool:
    return any(box.intersects(area) for area in areas)


# ---------------------------------------------------------------------------------------------
# Matching OCR text against known identifiers, fuzzily.

# Glyph shapes OCR confuses, folded alike on both sides before comparing.
_FOLD = str.maketrans("OQDILJSBZGTU", "00011158267V")
_DATE_SHAPE = re.compile(r"\d{1,4}[-./]\d{1,2}[-./]\d{2,4}|(?:19|20)\d{2}[01]\d[0-3]\d")
_DATE_FORMATS = ("%Y%m%d", "%d%m%Y", "%m%d%Y", "%y%m%d", "%d%m%y", "%m%d%y")


def _fold(text: str) -> str:
    """Letters and digits only, upper case, confusable glyphs folded: "Doe^John" -> "00E10HN"."""
    return "".join(c for c in text.upper() if c.isascii() and c.isalnum()).translate(_FOLD)


class _Matcher:
    """Known identifiers, folded, found in OCR lines within a small edit distance."""

    def __init__(self, known: Identifiers) -> None:
        self.patterns: list[
            tuple[str, int, str, int, bool]
        ] = []  # kind, index, text, edits, digits
        for i, name in enumerate(sorted(known.names)):
            # The whole name and each part: OCR splits "DOE^JOHN" into words, or drops the "^".
            for part in {name, *re.split(r"[\^\s,.'-]+", name)}:
                self._add("name", i, _fold(part))
        for kind, values in (
            ("id", known.ids),
            ("place", known.places),
            ("contact", known.contacts),
        ):
            for i, value in enumerate(sorted(values)):
                self._add(kind, i, _fold(value))
        for i, date in enumerate(sorted(known.dates)):
            for fmt in _DATE_FORMATS:
                # Against the digits OCR read only: folded letters would make any noise a date.
                self._add("date", i, "".join(c for c in date.strftime(fmt) if c.isdigit()), True)

    def _add(self, kind: str, index: int, text: str, digits: bool = False) -> None:
        if len(text) >= (6 if digits else 3):  # shorter would match anywhere
            edits = 0 if len(text) <= (6 if digits else 4) else 1 if len(text) <= 7 else 2
            self.patterns.append((kind, index, text, min(edits, 1) if digits else edits, digits))

    def find(self, words: Sequence[Word]) -> set[tuple[str, int]]:
        """The known identifiers, as (kind, index), in ``words``, each line read as one text."""
        lines: dict[int, str] = {}
        for word in words:
            lines[word.line] = lines.get(word.line, "") + " " + word.text
        hits: set[tuple[str, int]] = set()
        for line in lines.values():
            folded, digits = _fold(line), "".join(c for c in line if c.isdigit())
            for kind, index, pattern, edits, digits_only in self.patterns:
                text = digits if digits_only else folded
                if (kind, index) not in hits and _near_substring(pattern, text, edits):
                    hits.add((kind, index))
        return hits

    def leaks(self, words: Sequence[Word]) -> list[str]:
        """Kinds of identifying text in ``words``: known identifiers, date and ID shapes."""
        kinds = [kind for kind, _index in sorted(self.find(words))]
        for word in words:
            core = "".join(c for c in word.text if c.isalnum())
            if _DATE_SHAPE.search(word.text):
                kinds.append("date-shaped")
            elif sum(c.isdigit() for c in core) >= 5 and len(core) <= 20:
                kinds.append("id-shaped")  # record, accession and phone numbers
        return kinds


def _near_substring(pattern: str, text: str, edits: int) -> bool:
    """Whether ``pattern`` occurs in ``text`` with at most ``edits`` edits (Sellers, 1980)."""
    if pattern in text:
        return True
    if edits == 0 or len(text) < len(pattern) - edits:
        return False
    # row[j]: fewest edits matching the pattern so far, ending at text[j]; a match starts anywhere.
    row = [0] * (len(text) + 1)
    for i, p in enumerate(pattern, start=1):
        new = [i] + [0] * len(text)
        for j, t in enumerate(text, start=1):
            new[j] = min(row[j - 1] + (p != t), row[j] + 1, new[j - 1] + 1)
        row = new
    return min(row) <= edits


# ---------------------------------------------------------------------------------------------
# Known regions per manufacturer and model.


@functools.cache
def _shipped_regions() -> tuple[TextRegion, ...]:
    text = resources.files("medtune.deid").joinpath("data", TEXT_REGIONS).read_text("utf-8")
    return _parse_regions(yaml.safe_load(text), TEXT_REGIONS)


def _parse_regions(data: object, source: str) -> tuple[TextRegion, ...]:
    items = data.get("regions") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"{source}: expected a mapping with a 'regions' list")
    out = []
    for n, item in enumerate(items, start=1):
        try:
            boxes = tuple(tuple(float(v) for v in box) for box in item["boxes"])
            if not boxes or not all(
                len(b) == 4 and 0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1 for b in boxes
            ):
                raise ValueError
            out.append(TextRegion(str(item["manufacturer"]), str(item.get("model", "*")), boxes))
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{source}: region {n}: needs manufacturer, model and boxes of four fractions "
                "[x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1"
            ) from None
    return tuple(out)


def _known_boxes(
    regions: Sequence[TextRegion], manufacturer: str | None, model: str | None, shape: tuple
) -> list[Box]:
    rows, cols = shape[:2]
    boxes = []
    for region in regions:
        if fnmatch.fnmatchcase((manufacturer or "").lower(), region.manufacturer.lower()) and (
            fnmatch.fnmatchcase((model or "").lower(), region.model.lower())
        ):
            for x0, y0, x1, y1 in region.boxes:
                corners = (x0 * cols, y0 * rows, np.ceil(x1 * cols), np.ceil(y1 * rows))
                boxes.append(Box(*(int(v) for v in corners)))
    return boxes
