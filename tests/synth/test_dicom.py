"""The hand-assembled RLE Lossless encoder decodes exactly with pydicom's decoders."""

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders import RLELosslessDecoder
from pydicom.uid import RLELossless

from medtune.synth.dicom import rle_lossless_frame


@pytest.mark.parametrize("plugin", ["pydicom", "pylibjpeg"])
@pytest.mark.parametrize("shape", [(37, 53), (64, 64), (1, 300)])
def test_rle_frame_round_trips(plugin: str, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 4096, shape, dtype=np.uint16)
    pixels[:, : shape[1] // 3] = 1234  # long runs as well as literals
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.Rows, ds.Columns = shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = encapsulate([rle_lossless_frame(pixels)])
    decoded, _ = RLELosslessDecoder.as_array(ds, decoding_plugin=plugin)
    np.testing.assert_array_equal(decoded, pixels)
