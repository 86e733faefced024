"""Perceptual hashes of stored images, and the near-duplicate pairs they reveal.

The hash is the DCT pHash of Zauner (2010), as in the ``imagehash`` package, but 256 bits wide:
shrink the image to 64x64, take the 16x16 lowest frequencies of its 2-D DCT, and set one bit per
coefficient above their median. The classic 64-bit hash (8x8 of 32x32) is too coarse for
radiographs: different patients' chest films of one view often land within 4 bits of each
other, while in the 256-bit hash they stayed 32 or more bits apart on the synthetic cohort.
Re-exports, re-compression (JPEG q70: at most 8 bits), noise, blur and windowing changes (gamma:
at most 20 bits) stay within ``NEAR`` bits. Crops, shifts and added annotations move the hash as
far as a different image does; this check does not claim to find those.

Written with OpenCV (already a dependency) rather than ``imagehash``, which would add Pillow,
SciPy and PyWavelets for one function. Hashes are 32 bytes (the catalog's ``phash`` column,
made at ingest).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

import numpy as np

SIDE = 64  # the image is shrunk to SIDE x SIDE before the DCT
LOW = 16  # the LOW x LOW lowest frequencies make the bits
BYTES = LOW * LOW // 8
NEAR = 20  # default: hashes this many bits apart or fewer are near-duplicates


def phash(image: np.ndarray) -> bytes:
    """The 256-bit perceptual hash of a 2-D image (any dtype)."""
    import cv2

    small = cv2.resize(np.asarray(image, dtype=np.float32), (SIDE, SIDE),
                       interpolation=cv2.INTER_AREA)  # fmt: skip
    low = cv2.dct(small)[:LOW, :LOW].ravel()
    return np.packbits(low > np.median(low[1:])).tobytes()  # DC would dominate the median


def distance(a: bytes, b: bytes) -> int:
    """Hamming distance between two hashes."""
    return int(np.bitwise_count(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


def as_matrix(hashes: Iterable[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, valid): an (n, 4) uint64 matrix of the hashes and a mask of the rows that had one."""
    items = list(hashes)
    valid = np.array([h is not None and len(h) == BYTES for h in items], dtype=bool)
    buffer = b"".join(h if ok else bytes(BYTES) for h, ok in zip(items, valid, strict=True))
    matrix = np.frombuffer(buffer, dtype=np.uint64).reshape(len(items), BYTES // 8)
    return matrix, valid


def near_duplicate_pairs(
    hashes: Iterable[bytes | None], max_distance: int = NEAR
) -> list[tuple[int, int, int]]:
    """Every pair (i, j, distance), i < j, of hashes at most ``max_distance`` bits apart.

    Multi-index hashing: cut the bits into ``max_distance + 1`` bands; two hashes that close
    agree exactly on at least one band (pigeonhole), so only hashes sharing a band value are
    compared. Rows without a hash (None) match nothing.
    """
    matrix, valid = as_matrix(hashes)
    bits = np.unpackbits(matrix.view(np.uint8), axis=1)  # (n, 256), for cutting bands
    rows = np.flatnonzero(valid)
    bands = max_distance + 1
    edges = np.linspace(0, bits.shape[1], bands + 1).astype(int)
    found: dict[tuple[int, int], int] = {}
    for lo, hi in pairwise(edges.tolist()):
        weights = np.left_shift(np.uint64(1), np.arange(hi - lo, dtype=np.uint64))
        keys = bits[rows, lo:hi].astype(np.uint64) @ weights
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts, ends, strict=True):
            if end - start > 1:
                _close_pairs(matrix, np.sort(rows[order[start:end]]), max_distance, found)
    return sorted((i, j, d) for (i, j), d in found.items())


def _close_pairs(
    matrix: np.ndarray, members: np.ndarray, max_distance: int, found: dict[tuple[int, int], int]
) -> None:
    words = [np.ascontiguousarray(column) for column in matrix[members].T]  # 4 x (m,) uint64
    step = max(1, 1_000_000 // len(members))  # rows per block: bounded memory for big buckets
    for top in range(0, len(members) - 1, step):
        # Each block row against the rows after the block's first: the upper triangle, mostly.
        dist = sum(
            np.bitwise_count(w[top : top + step, None] ^ w[None, top:]) for w in words
        )  # a sum of per-word counts is faster than .sum(axis=-1) over 4-wide rows
        rows, cols = np.nonzero(dist <= max_distance)
        keep = cols > rows  # each pair once, not with itself
        for r, c in zip(rows[keep].tolist(), cols[keep].tolist(), strict=True):
            found[int(members[top + r]), int(members[top + c])] = int(dist[r, c])
