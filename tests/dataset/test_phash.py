"""The perceptual hash: stable, robust to re-encoding, far apart for different images; and the
near-duplicate search, which must find exactly the pairs a brute-force comparison finds."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from medtune.dataset.phash import BYTES, NEAR, distance, near_duplicate_pairs, phash
from medtune.synth.canvas import smooth_noise


def radiograph_like(seed: int, side: int = 256) -> np.ndarray:
    """Smooth structure at a few scales, as uint8: what the hash sees of an X-ray."""
    field = smooth_noise(np.random.default_rng(seed), side, side, 24.0)
    field = (field - field.min()) / (field.max() - field.min())
    return (field * 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)


def gamma(image: np.ndarray, power: float) -> np.ndarray:
    return (255 * (image / 255.0) ** power).astype(np.uint8)


def flip_bits(code: bytes, bits: list[int]) -> bytes:
    out = bytearray(code)
    for bit in bits:
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_hash_is_stable_and_32_bytes() -> None:
    image = radiograph_like(0)
    first = phash(image)
    assert len(first) == BYTES == 32
    assert phash(image.copy()) == first
    assert phash(image.astype(np.uint16) * 257) == first  # the same picture stored as uint16


@pytest.mark.parametrize("seed", range(5))
def test_hash_survives_reencoding_noise_and_windowing(seed: int) -> None:
    image = radiograph_like(seed)
    noisy = np.clip(image + np.random.default_rng(seed).normal(0, 3, image.shape), 0, 255)
    variants = {
        "jpeg q70": jpeg(image, 70),
        "noise": noisy.astype(np.uint8),
        "gamma 0.9": gamma(image, 0.9),
        "gamma 1.1": gamma(image, 1.1),
    }
    original = phash(image)
    far = {name: distance(original, phash(v)) for name, v in variants.items()}
    assert max(far.values()) <= NEAR, far


def test_different_images_are_far_apart() -> None:
    hashes = [phash(radiograph_like(seed)) for seed in range(10, 20)]
    closest = min(distance(a, b) for a, b in itertools.combinations(hashes, 2))
    assert closest > 3 * NEAR  # random 256-bit hashes sit about 128 bits apart


def brute_force(hashes: list[bytes | None], max_distance: int) -> list[tuple[int, int, int]]:
    return [
        (i, j, distance(a, b))
        for (i, a), (j, b) in itertools.combinations(enumerate(hashes), 2)
        if a is not None and b is not None and distance(a, b) <= max_distance
    ]


@pytest.mark.parametrize("max_distance", [0, 8, NEAR])
def test_near_duplicate_pairs_equal_brute_force(max_distance: int) -> None:
    rng = np.random.default_rng(max_distance)
    hashes: list[bytes | None] = [rng.bytes(BYTES) for _ in range(300)]
    # Planted copies at distances around the threshold, some of one original (a cluster).
    for offset in (0, 1, 5, max_distance, max_distance + 1, 2 * max_distance + 3):
        source = hashes[int(rng.integers(0, 300))]
        assert source is not None
        hashes.append(flip_bits(source, rng.choice(256, offset, replace=False).tolist()))
    hashes[7] = hashes[250] = None
    found = near_duplicate_pairs(hashes, max_distance)
    assert found == brute_force(hashes, max_distance)
    planted_distances = {d for _, j, d in found if j >= 300}
    assert max_distance in planted_distances  # exactly at the threshold: a near-duplicate
    assert max_distance + 1 not in planted_distances  # one bit more: not


def test_none_matches_nothing() -> None:
    code = phash(radiograph_like(1))
    assert near_duplicate_pairs([None, code, None, code, None]) == [(1, 3, 0)]
    assert near_duplicate_pairs([None, None]) == []


def test_fewer_than_two_hashes_give_no_pairs() -> None:
    assert near_duplicate_pairs([]) == []
    assert near_duplicate_pairs([phash(radiograph_like(2))]) == []
