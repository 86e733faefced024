"""The one pixel reader: display transform, preprocessing geometry, refusal of absurd inputs."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian

from medtune.io import pixels


def _image(stored: np.ndarray, **attrs: object) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = stored.shape[:2]
    ds.SamplesPerPixel = 1 if stored.ndim == 2 else stored.shape[2]
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = stored.dtype.itemsize * 8
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if stored.dtype.kind == "i" else 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = stored.tobytes()
    return ds


def test_window_maps_to_full_range_and_clips() -> None:
    stored = np.array([[0, 100, 200, 300, 400]], np.uint16)
    ds = _image(stored, WindowCenter="200", WindowWidth="200")
    display = pixels.to_display(ds, stored)
    assert display[0, 0] == display[0, 1] == 0  # at or below the window's low end
    assert display[0, 3] == display[0, 4] == 255
    assert 120 <= display[0, 2] <= 135


def test_monochrome1_displays_as_the_inverse() -> None:
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 4096, (16, 16), dtype=np.uint16)
    m2 = _image(stored, BitsStored=12, HighBit=11, WindowCenter="2048", WindowWidth="4096")
    m1 = _image(4095 - stored, BitsStored=12, HighBit=11, WindowCenter="2047",
                WindowWidth="4096", PhotometricInterpretation="MONOCHROME1")  # fmt: skip
    a = pixels.to_display(m2, stored).astype(int)
    b = pixels.to_display(m1, 4095 - stored).astype(int)
    assert np.abs(a - b).max() <= 1


def test_rescale_and_signed_pixels() -> None:
    stored = np.array([[-1024, 0, 1000]], np.int16)
    ds = _image(stored, RescaleSlope="1", RescaleIntercept="-1000", WindowCenter="-1000",
                WindowWidth="2000")  # fmt: skip
    display = pixels.to_display(ds, stored)
    # HU = stored - 1000: -2024 (below window), -1000 (centre), 0 (top of window)
    assert display[0, 0] == 0 and 120 <= display[0, 1] <= 135 and display[0, 2] >= 254


def test_no_voi_uses_the_image_range() -> None:
    stored = np.array([[1000, 1500, 2000]], np.uint16)
    display = pixels.to_display(_image(stored), stored)
    assert display.tolist() == [[0, 128, 255]] or display.tolist() == [[0, 127, 255]]


def test_uint16_output() -> None:
    stored = np.array([[0, 4095]], np.uint16)
    ds = _image(stored, BitsStored=12, HighBit=11)
    assert pixels.to_display(ds, stored, "uint16").tolist() == [[0, 65535]]


def test_synthetic_files_match_pydicom_reference(synth_cohort) -> None:
    files = sorted(p for p in (synth_cohort / "dicom").rglob("*") if p.is_file())[:20]
    for path in files:
        ds = pydicom.dcmread(path)
        stored = pixels.stored_frame(ds)
        # The window (or LUT) maps its range to black..white, whatever the image holds.
        ref = apply_voi_lut(stored, ds).astype(np.float64)
        if "VOILUTSequence" in ds:
            lo, hi = 0.0, float(2 ** ds.VOILUTSequence[0].LUTDescriptor[2] - 1)
        else:
            lo, hi = 0.0, float(2**ds.BitsStored - 1)
        ref = (ref - lo) / (hi - lo)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            ref = 1 - ref
        display = pixels.to_display(ds, stored) / 255.0
        assert np.abs(display - ref).max() < 0.01, path.name


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (256, 256), (100, 40)])
def test_preprocess_keeps_aspect_and_maps_boxes_both_ways(shape: tuple[int, int]) -> None:
    image = np.zeros(shape, np.uint8)
    image[10:30, 20:35] = 255
    out, geometry = pixels.preprocess(image, 128)
    assert out.shape == (128, 128)
    box = (20, 10, 35, 30)
    x0, y0, x1, y1 = geometry.to_output(box)
    assert out[int(y0) + 1 : int(y1) - 1, int(x0) + 1 : int(x1) - 1].min() > 200
    back = geometry.to_original(geometry.to_output(box))
    assert np.allclose(back, box)
    # Padding is black and symmetric.
    rows, cols = shape
    if rows > cols:
        assert geometry.pad_y == 0 and geometry.pad_x > 0 and out[:, : geometry.pad_x].max() == 0


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"Rows": 60000, "Columns": 60000}, "implausible"),
        ({"Rows": 30000, "Columns": 30000, "NumberOfFrames": 100}, "limit"),
        ({"BitsAllocated": 12}, "Bits Allocated"),
    ],
)
def test_absurd_declarations_are_refused_before_decoding(attrs, message) -> None:
    ds = _image(np.zeros((4, 4), np.uint16))
    for key, value in attrs.items():
        setattr(ds, key, value)
    with pytest.raises(pixels.PixelError, match=message):
        pixels.stored_frame(ds)


def test_missing_pixel_data_and_truncated_pixels() -> None:
    ds = _image(np.zeros((4, 4), np.uint16))
    del ds.PixelData
    with pytest.raises(pixels.PixelError, match="no pixel data"):
        pixels.stored_frame(ds)
    ds = _image(np.zeros((4, 4), np.uint16))
    ds.PixelData = b"\x00" * 10
    with pytest.raises(pixels.PixelError, match="cannot decode"):
        pixels.stored_frame(ds)


def test_frame_policy_and_multi_frame_decoding() -> None:
    frames = np.stack([np.full((8, 8), v, np.uint16) for v in (10, 20, 30)])
    ds = _image(frames[0], NumberOfFrames=3)
    ds.PixelData = frames.tobytes()
    assert pixels.frame_indices(ds, "first") == [0]
    assert pixels.frame_indices(ds, "middle") == [1]
    assert pixels.frame_indices(ds, "all") == [0, 1, 2]
    assert pixels.stored_frame(ds, 2).max() == 30


def test_rgb_becomes_grey() -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    ds = _image(rgb, PhotometricInterpretation="RGB", PlanarConfiguration=0)
    grey = pixels.to_display(ds, pixels.stored_frame(ds))
    assert grey.shape == (4, 4)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
@pytest.mark.parametrize("shape", [(37, 53), (5,), (40, 3)])
def test_blocked_table_look_up_equals_plain_indexing(dtype: type, shape: tuple[int, ...]) -> None:
    from medtune.io.pixels import _look_up

    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    stored = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    offset = -int(info.min)
    table = rng.integers(0, 65535, info.max - info.min + 1, dtype=np.uint16)
    looked_up = _look_up(table, stored, offset)
    assert looked_up.shape == stored.shape
    assert np.array_equal(looked_up, table[stored.astype(np.int64) + offset])


@pytest.mark.parametrize(
    ("values", "dtype", "view"),
    [
        ([[0, 4095, 17]], np.uint16, True),  # 12 bits, high bits clear: a view
        ([[0, 4095 | 0x3000, 17]], np.uint16, False),  # an overlay in the high bits
        ([[-2048, 2047, -1]], np.int16, True),  # signed, sign-extended already
        ([[0x0800, 0x0FFF, 1]], np.int16, False),  # signed 12-bit, not sign-extended
        ([[0, 127, 3]], np.uint8, True),
    ],
)  # fmt: skip
def test_read_only_frame_equals_pydicoms_corrected_values(
    values: list[list[int]], dtype: type, view: bool
) -> None:
    """A frame read for reading only may be a view of the file's bytes, but never shows the
    bits above Bits Stored: it equals pydicom's own corrected array."""
    stored = np.array(values, dtype=dtype)
    bits = 12 if stored.dtype.itemsize == 2 else 7
    ds = _image(stored, BitsStored=bits, HighBit=bits - 1)
    fast = pixels.stored_frame(ds, writable=False)
    assert np.array_equal(fast, ds.pixel_array)
    assert (not fast.flags.writeable) == view
    assert pixels.stored_frame(ds).flags.writeable  # the default stays a writable copy


def test_display_tables_are_reused_only_for_the_same_lut_attributes() -> None:
    rng = np.random.default_rng(2)
    stored = rng.integers(0, 4096, (8, 8), dtype=np.uint16)
    bits = {"BitsStored": 12, "HighBit": 11}

    def sigmoid(centre: str) -> np.ndarray:
        ds = _image(stored, WindowCenter=centre, WindowWidth="1000", VOILUTFunction="SIGMOID",
                    **bits)  # fmt: skip
        return pixels.to_display(ds, stored)

    a, b, again = sigmoid("2048"), sigmoid("1000"), sigmoid("2048")
    assert not np.array_equal(a, b)  # another window: another table
    assert np.array_equal(a, again)
    # Without a VOI the image's own range scales it (a range under 255 levels takes the table
    # path): a darker image gets its own table.
    narrow = rng.integers(0, 101, (8, 8), dtype=np.uint16)
    narrow[0, 0], narrow[0, 1] = 0, 100
    full = pixels.to_display(_image(narrow, RescaleSlope="2", **bits), narrow)
    half = pixels.to_display(_image(narrow // 2, RescaleSlope="2", **bits), narrow // 2)
    assert full.max() == half.max() == 255
