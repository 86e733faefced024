"""Write one synthetic radiograph as a DICOM file, with the headers a real modality writes.

DX (Digital X-Ray, For Presentation) or CR, with patient, study, series, equipment, acquisition
and presentation attributes, a few vendor private tags (some of which hold identifiers, as real
vendors' do), and the pixels in the site's transfer syntax. Every identifying value written is
returned alongside, so the cohort's PHI manifest lists exactly what went in.

Encoders (all offline): GDCM for RLE, pylibjpeg-openjpeg for JPEG 2000, pyjpegls for
JPEG-LS, and imagecodecs (libjpeg-turbo 3) for JPEG Lossless Process 14, for which pydicom has
no encoder.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pydicom.config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import UID

from medtune.synth.render import RenderedImage
from medtune.synth.sites import TRANSFER_SYNTAXES, Device
from medtune.workspace import atomic_path

SOP_CLASS = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
}
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1544.1"  # medtune's implementation class UID
BODY_PART = {
    "chest": "CHEST", "hand": "HAND", "knee": "KNEE", "pelvis": "PELVIS",
    "lumbar_spine": "LSPINE", "skull": "SKULL", "foot": "FOOT", "shoulder": "SHOULDER",
}  # fmt: skip


@dataclass(frozen=True)
class HeaderValues:
    """What goes into one file's header besides pixels; identifying values included."""

    patient_name: str  # DICOM PN, "FAMILY^GIVEN^MIDDLE"
    patient_id: str
    birth_date: dt.date
    sex: str
    age_years: int
    address: str | None  # some sites fill Patient's Address
    phone: str | None
    accession: str
    study_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    when: dt.datetime
    study_description: str
    series_description: str
    series_number: int
    instance_number: int
    body_part: str
    view: str  # PA, AP, LAT, OBL
    laterality: str | None
    referring: str  # PN
    performing: str  # PN
    operator: str  # PN
    institution: str
    institution_address: str
    department: str
    device: Device
    syntax: str  # key of TRANSFER_SYNTAXES
    kvp: float
    mas: float


@dataclass(frozen=True)
class WrittenValue:
    """An identifying value as written, for the PHI manifest."""

    value: str
    kind: str
    field: str  # attribute keyword, or "private:gggg,eeee"


def write_dicom(path: Path, image: RenderedImage, header: HeaderValues) -> list[WrittenValue]:
    """Write the file atomically; return every identifying value that went into its header."""
    # Every value is generated here and the tests read each file back, so pydicom's per-value
    # checks on assignment (a third of the header's cost) add nothing.
    with pydicom.config.disable_value_validation():
        ds, written = _dataset(image, header)
    _set_pixels(ds, image, header.syntax)
    # Not fsynced one by one: the cohort syncs once before writing cohort.json.
    with atomic_path(path, durable=False) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return written


def _dataset(image: RenderedImage, h: HeaderValues) -> tuple[Dataset, list[WrittenValue]]:
    device = h.device
    modality = device.vendor.modality
    sop_class = SOP_CLASS[modality]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = h.sop_uid
    meta.TransferSyntaxUID = UID(TRANSFER_SYNTAXES[h.syntax])
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MEDTUNE_SYNTH"
    ds = Dataset()
    ds.file_meta = meta
    written: list[WrittenValue] = []

    def put(keyword: str, value: object, kind: str | None = None) -> None:
        setattr(ds, keyword, value)
        if kind is not None and value not in (None, ""):
            written.append(WrittenValue(str(getattr(ds, keyword)), kind, keyword))

    day, time = h.when.strftime("%Y%m%d"), h.when.strftime("%H%M%S")
    later = h.when + dt.timedelta(seconds=40 + 30 * h.instance_number)
    put("SpecificCharacterSet", "ISO_IR 100")
    put("ImageType", ["ORIGINAL", "PRIMARY"])
    put("SOPClassUID", sop_class)
    put("SOPInstanceUID", h.sop_uid, "uid")
    put("StudyDate", day, "date")
    put("SeriesDate", day, "date")
    put("AcquisitionDate", later.strftime("%Y%m%d"), "date")
    put("ContentDate", later.strftime("%Y%m%d"), "date")
    put("StudyTime", time, "time")
    put("SeriesTime", time, "time")
    put("AcquisitionTime", later.strftime("%H%M%S"), "time")
    put("ContentTime", later.strftime("%H%M%S"), "time")
    put("InstanceCreationDate", later.strftime("%Y%m%d"), "date")
    put("AccessionNumber", h.accession, "accession")
    put("Modality", modality)
    if modality == "DX":
        put("PresentationIntentType", "FOR PRESENTATION")
    put("Manufacturer", device.vendor.manufacturer)
    put("InstitutionName", h.institution, "institution")
    put("InstitutionAddress", h.institution_address, "address")
    put("ReferringPhysicianName", h.referring, "physician_name")
    put("StationName", device.station_name, "device_id")
    put("StudyDescription", h.study_description)
    put("SeriesDescription", h.series_description)
    put("InstitutionalDepartmentName", h.department, "institution")
    put("PerformingPhysicianName", h.performing, "physician_name")
    put("OperatorsName", h.operator, "operator_name")
    put("ManufacturerModelName", device.model)
    put("PatientName", h.patient_name, "patient_name")
    put("PatientID", h.patient_id, "mrn")
    put("PatientBirthDate", h.birth_date.strftime("%Y%m%d"), "date")
    put("PatientSex", h.sex)
    put("PatientAge", f"{min(h.age_years, 999):03d}Y", "age" if h.age_years > 89 else None)
    if h.address:
        put("PatientAddress", h.address, "address")
    if h.phone:
        put("PatientTelephoneNumbers", h.phone, "phone")
    put("BodyPartExamined", h.body_part)
    put("DeviceSerialNumber", device.serial, "device_id")
    put("SoftwareVersions", device.vendor.software)
    put("KVP", f"{h.kvp:.0f}")
    put("ExposureTime", f"{max(int(h.mas * 4), 1)}")
    put("XRayTubeCurrent", "250")
    put("Exposure", f"{max(round(h.mas), 1)}")
    put("DistanceSourceToDetector", "1800" if h.view in ("PA", "LAT") else "1100")
    put("ViewPosition", _view_position(h.view, h.laterality))
    put("StudyInstanceUID", h.study_uid, "uid")
    put("SeriesInstanceUID", h.series_uid, "uid")
    put("StudyID", h.study_id, "study_id")
    put("SeriesNumber", h.series_number)
    put("InstanceNumber", h.instance_number)
    put("PatientOrientation", _orientation(h.view))
    put("Laterality" if modality == "CR" else "ImageLaterality", h.laterality or "U")
    _pixel_module(ds, image)
    written += _private_tags(ds, h)
    return ds, written


def _view_position(view: str, laterality: str | None) -> str:
    if view == "LAT":
        return "LL" if laterality != "R" else "RL"
    if view == "OBL":
        return "LLO" if laterality == "L" else "RLO"
    return view


def _orientation(view: str) -> list[str]:
    # Row direction then column direction, as displayed (patient's left on the image right).
    return ["A", "F"] if view == "LAT" else ["L", "F"]


def _pixel_module(ds: Dataset, image: RenderedImage) -> None:
    stored = image.stored
    rows, cols = stored.pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = stored.photometric
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 16
    ds.BitsStored = stored.bits_stored
    ds.HighBit = stored.bits_stored - 1
    ds.PixelRepresentation = 0
    spacing = f"{image.pixel_spacing_mm:.6f}".rstrip("0")
    ds.PixelSpacing = [spacing, spacing]
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.PixelIntensityRelationship = "LOG"
    # -1: higher values mean less X-ray intensity (brighter bone in MONOCHROME2).
    ds.PixelIntensityRelationshipSign = -1 if stored.photometric == "MONOCHROME2" else 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.BurnedInAnnotation = "YES" if image.text_box else "NO"
    ds.LossyImageCompression = "00"
    if stored.window is not None:
        centre, width = stored.window
        ds.WindowCenter, ds.WindowWidth = f"{centre:.1f}", f"{width:.1f}"
        ds.VOILUTFunction = "LINEAR"
    if stored.voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(stored.voi_lut) % 65536, 0, stored.voi_lut_bits]
        item.LUTExplanation = "VENDOR DEFAULT"
        # OW, not US: a 15-bit table has 32768 entries, over explicit VR US's 64 KiB length.
        item.add_new(0x00283006, "OW", stored.voi_lut.astype("<u2").tobytes())
        ds.VOILUTSequence = Sequence([item])


def _private_tags(ds: Dataset, h: HeaderValues) -> list[WrittenValue]:
    """Vendor private tags: processing values (safe) and copies of identifiers (not safe)."""
    block = ds.private_block(0x0019, h.device.vendor.private_creator, create=True)
    block.add_new(0x10, "DS", f"{1500 * h.mas / 10:.1f}")  # exposure index
    block.add_new(0x11, "LO", f"{h.device.vendor.software}-{h.body_part}")  # algorithm
    identifying = (
        (0x20, "LO", h.patient_id, "mrn"),  # "last patient" cache
        (0x21, "PN", h.patient_name, "patient_name"),
        (0x22, "DA", h.when.strftime("%Y%m%d"), "date"),
        (0x23, "LO", h.operator.replace("^", " "), "operator_name"),
    )
    written = []
    for offset, vr, value, kind in identifying:
        block.add_new(offset, vr, value)
        tag = f"private:0019,{block.block_start + offset:04x}"
        written.append(WrittenValue(value, kind, tag))
    return written


def _set_pixels(ds: Dataset, image: RenderedImage, syntax: str) -> None:
    pixels = image.stored.pixels
    uid = UID(TRANSFER_SYNTAXES[syntax])
    if syntax == "explicit-vr-little-endian":
        ds.PixelData = pixels.astype("<u2", copy=False).tobytes()
        ds["PixelData"].VR = "OW"
    elif syntax in ("jpeg-lossless", "rle-lossless"):
        if syntax == "jpeg-lossless":
            frame = imagecodecs.jpeg8_encode(
                np.ascontiguousarray(pixels), lossless=True, predictor=1,
                bitspersample=image.stored.bits_stored,
            )  # fmt: skip
        else:
            frame = rle_lossless_frame(pixels)
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = uid
    else:
        ds.PixelData = pixels.astype("<u2", copy=False).tobytes()
        ds["PixelData"].VR = "OW"
        ds.file_meta.TransferSyntaxUID = UID(TRANSFER_SYNTAXES["explicit-vr-little-endian"])
        # generate_instance_uid=False: keep our deterministic UID (pydicom makes a random one).
        ds.compress(uid, pixels, encoding_plugin=_PLUGIN[syntax], generate_instance_uid=False)
    ds.file_meta.TransferSyntaxUID = uid


# Encoder per syntax, measured at 1024 px 12-bit: JPEG 2000 with pylibjpeg-openjpeg 80-300 ms (the
# only offline encoder; time grows with the noise bits); JPEG-LS with pyjpegls 40 ms.
_PLUGIN = {
    "jpeg2000-lossless": "pylibjpeg",
    "jpegls-lossless": "pyjpegls",
}


def rle_lossless_frame(pixels: np.ndarray) -> bytes:
    """One DICOM RLE Lossless frame (PS3.5 Annex G) of 16-bit pixels, in 8 ms at 1024 px.

    Hand-assembled around imagecodecs' C PackBits: through pydicom, GDCM's encoder costs 28 ms
    (mostly copying its output through SWIG), pylibjpeg-rle's 46 ms and pydicom's own 660 ms.
    A 64-byte header of segment offsets, then one segment per byte plane, most significant
    first, each row PackBits-encoded on its own and each segment padded to even length.
    """
    planes = ((pixels >> 8).astype(np.uint8), (pixels & 0xFF).astype(np.uint8))
    segments = []
    for plane in planes:
        segment = imagecodecs.packbits_encode(np.ascontiguousarray(plane), axis=-1)
        segments.append(segment + b"\x00" * (len(segment) % 2))
    offsets = [64, 64 + len(segments[0])]
    header = struct.pack("<16I", len(segments), *offsets, *([0] * (15 - len(offsets))))
    return header + b"".join(segments)


def read_pixels(path: Path) -> np.ndarray:
    """Stored pixel values of a file written here (tests and tools use it to check round trips)."""
    return pydicom.dcmread(path).pixel_array
