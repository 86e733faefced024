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
    # Anything but a hash of this kind (None, or an older workspace's value) matches nothing.
    valid = np.array([isinstance(h, bytes) and len(h) == BYTES for h in items], dtype=bool)
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
    edges = np.linspace(0, bits.shape[1], max_distance + 2).astype(int)
    found: list[np.ndarray] = [np.empty((0, 3), np.int64)]
    for lo, hi in pairwise(edges.tolist()):
        weights = np.left_shift(np.uint64(1), np.arange(hi - lo, dtype=np.uint64))
        keys = bits[rows, lo:hi].astype(np.uint64) @ weights
        order = np.argsort(keys, kind="stable")
        found += _band_pairs(matrix, rows[order], keys[order], max_distance)
    pairs = np.concatenate(found)
    # A pair agreeing on several bands was found once per band: keep one of each.
    _, first = np.unique(pairs[:, 0] * len(matrix) + pairs[:, 1], return_index=True)
    return [(int(i), int(j), int(d)) for i, j, d in pairs[first]]


SMALL_BUCKET = 32  # buckets up to this size are compared all at once, by offsets


def _band_pairs(
    matrix: np.ndarray, members: np.ndarray, keys: np.ndarray, max_distance: int
) -> list[np.ndarray]:
    """Close pairs among rows sharing a key: ``members`` and ``keys`` sorted by key."""
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    sizes = np.diff(np.r_[starts, len(keys)])
    size_at = np.repeat(sizes, sizes)  # the size of each position's bucket
    out = []
    # Small buckets, vectorised: position p and p + offset are a candidate when they share a
    # bucket; one pass per offset instead of one Python call per bucket.
    small = size_at <= SMALL_BUCKET
    for offset in range(1, min(SMALL_BUCKET, int(sizes.max(initial=1)))):
        same = (keys[:-offset] == keys[offset:]) & small[:-offset]
        a, b = members[:-offset][same], members[offset:][same]
        out.append(_keep_close(matrix, a, b, max_distance))
    for start, size in zip(starts[sizes > SMALL_BUCKET], sizes[sizes > SMALL_BUCKET], strict=True):
        out += _bucket_pairs(matrix, members[start : start + size], max_distance)
    return out


def _keep_close(matrix: np.ndarray, a: np.ndarray, b: np.ndarray, max_distance: int) -> np.ndarray:
    dist = np.bitwise_count(matrix[a] ^ matrix[b]).sum(axis=1, dtype=np.int64)
    close = dist <= max_distance
    a, b = a[close], b[close]
    return np.stack([np.minimum(a, b), np.maximum(a, b), dist[close]], axis=1).astype(np.int64)


def _bucket_pairs(matrix: np.ndarray, members: np.ndarray, max_distance: int) -> list[np.ndarray]:
    """All close pairs of one large bucket, in blocks of rows against the rows after them."""
    words = [np.ascontiguousarray(column) for column in matrix[members].T]  # 4 x (m,) uint64
    step = max(1, 1_000_000 // len(members))  # rows per block: bounded memory
    out = []
    for top in range(0, len(members) - 1, step):
        dist = sum(np.bitwise_count(w[top : top + step, None] ^ w[None, top:]) for w in words)
        r, c = np.nonzero(dist <= max_distance)
        keep = c > r  # each pair once, not with itself
        out.append(_keep_close(matrix, members[top + r[keep]], members[top + c[keep]],
                               max_distance))  # fmt: skip
    return out
