"""Lead markers and burned-in text: the letters that end up in an X-ray's pixels.

A lead marker ("L"/"R") is physical: it sits in the beam, so it is drawn into the attenuation map
before the physics and is flipped along with the anatomy when an image is mirrored. Burned-in
text is written by the modality's software onto the stored values, after any flip, so it always
reads the right way round.
"""

from __future__ import annotations

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_DUPLEX
TEXT_FONT = cv2.FONT_HERSHEY_SIMPLEX
LEAD_LINE_INTEGRAL = 8.0  # mu * t of a 1-2 mm lead letter: opaque, brighter than any bone
HOLDER_LINE_INTEGRAL = 0.08  # the plastic holder around it


def marker_patch(letter: str, height_px: int) -> np.ndarray:
    """The marker as seen unmirrored: lead letter in a plastic holder, float32 mu*t per pixel."""
    scale = cv2.getFontScaleFromHeight(FONT, max(height_px, 6), max(height_px // 6, 1))
    thickness = max(height_px // 6, 1)
    (w, h), _ = cv2.getTextSize(letter, FONT, scale, thickness)
    pad = max(height_px // 4, 2)
    patch = np.zeros((h + 2 * pad, w + 2 * pad), np.uint8)
    cv2.putText(patch, letter, (pad, pad + h), FONT, scale, 255, thickness, cv2.LINE_AA)
    holder = np.full(patch.shape, HOLDER_LINE_INTEGRAL, np.float32)
    return holder + patch.astype(np.float32) / 255.0 * LEAD_LINE_INTEGRAL


def place_marker(
    shape: tuple[int, int],
    letter: str,
    field_px: tuple[int, int, int, int],
    height_px: int,
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Where ``letter`` goes, inside the field's top corner on its side: (patch, box x0 y0 x1 y1).

    Patient's left is on the image right (see anatomy/base.py), so an "L" goes top-right and an
    "R" top-left of the collimated field. The patch is mu * t, for the physics to put in the beam.
    """
    patch = marker_patch(letter, height_px)
    ph, pw = patch.shape
    fx0, fy0, fx1, _fy1 = field_px
    margin = max(height_px // 2, 2)
    x0 = fx1 - margin - pw if letter == "L" else fx0 + margin
    rows, cols = shape
    # Below the top tenth, where modalities burn their text overlay.
    y0 = max(fy0 + margin, int(rows * 0.11))
    x0 = int(np.clip(x0, 0, cols - pw))
    y0 = int(np.clip(y0, 0, rows - ph))
    return patch, (x0, y0, x0 + pw, y0 + ph)


def burn_text(
    pixels: np.ndarray, lines: tuple[str, ...], bright: int, dark: int
) -> tuple[int, int, int, int]:
    """Write ``lines`` into the top-left corner of stored pixels; return the text box.

    ``bright`` is the stored value that displays white (max for MONOCHROME2, 0 for MONOCHROME1);
    a dark outline keeps the text legible on bright anatomy, as modality overlays do.
    """
    rows, cols = pixels.shape
    height = max(int(rows * 0.022), 8)
    scale = cv2.getFontScaleFromHeight(TEXT_FONT, height, max(height // 8, 1))
    thickness = max(height // 8, 1)
    x, y = max(int(cols * 0.02), 2), max(int(rows * 0.02), 2)
    x1, y1, top = x, y, y
    # OpenCV draws text on 8-bit images only: draw a mask, then set the 16-bit stored values.
    # The mask covers the top-left block only; the outline is the text dilated, because
    # OpenCV 5 caps putText's thickness and would draw no wider outline.
    text = np.zeros((min(rows, y + (len(lines) + 1) * 3 * height), cols), np.uint8)
    for line in lines:
        (w, h), base = cv2.getTextSize(line, TEXT_FONT, scale, thickness)
        y += h + base + max(height // 3, 2)
        cv2.putText(text, line, (x, y), TEXT_FONT, scale, 1, thickness, cv2.LINE_8)
        x1 = max(x1, x + w + thickness + 2)
        y1 = y + base + thickness + 2
    outline = cv2.dilate(text, np.ones((3, 3), np.uint8), iterations=max(thickness // 2, 1))
    block = pixels[: text.shape[0]]
    block[outline > 0] = dark
    block[text > 0] = bright
    return x - 2, top, min(x1, cols), min(y1, rows)
