"""The catalog: one row per preprocessed image, holding only pseudonymous and clinical values.

Ids are pseudonyms (keyed, see deid/pseudonyms.py); dates are shifted per patient; ages over 89
read 90. Later stages add columns (labels, splits) but never rename these. ``shard`` and
``index`` locate the pixels: ``np.load(images/shard-NNNNN.npy, mmap_mode="r")[index]``.
The original geometry (rows, cols) with ``scale``, ``pad_x`` and ``pad_y`` maps boxes between
the original image and the stored one (see io/pixels.Geometry).
"""

from __future__ import annotations

import pyarrow as pa

CATALOG_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),  # pseudonym of the SOP Instance UID (+ frame)
        ("input_id", pa.string()),  # opaque id of the source file (io/folder.input_id)
        ("frame", pa.int32()),
        ("patient_id", pa.string()),  # patient pseudonym
        ("study_id", pa.string()),  # study pseudonym (from the accession number or study UID)
        ("series_uid", pa.string()),  # replaced UID
        ("sop_uid", pa.string()),  # replaced UID
        ("site", pa.string()),  # pseudonym of the institution (or the source's top folder)
        ("manufacturer", pa.string()),
        ("model", pa.string()),
        ("modality", pa.string()),
        ("body_part", pa.string()),
        ("view", pa.string()),
        ("laterality", pa.string()),
        ("sex", pa.string()),
        ("age", pa.int16()),  # years at the study, 90 for 90 and over; null when unknown
        ("study_date", pa.date32()),  # shifted
        ("photometric", pa.string()),
        ("bits_stored", pa.int16()),
        ("transfer_syntax", pa.string()),
        ("pixel_spacing_mm", pa.float32()),
        ("rows", pa.int32()),
        ("cols", pa.int32()),
        ("scale", pa.float32()),
        ("pad_x", pa.int32()),
        ("pad_y", pa.int32()),
        ("burned_in_text", pa.bool_()),  # text was found in the pixels and blanked
        ("shard", pa.int32()),
        ("shard_file", pa.string()),  # images/<shard_file>.npy
        ("index", pa.int32()),
    ]
)

# Every input, whatever became of it: ingested + quarantined + duplicate = inputs.
INPUTS_SCHEMA = pa.schema(
    [
        ("input_id", pa.string()),
        ("status", pa.string()),  # ingested, quarantined, duplicate
        ("stage", pa.string()),  # where a quarantined input stopped: read, pixels, deid, ...
        ("reason", pa.string()),  # one line, never a value from the file
        ("images", pa.int32()),  # catalog rows it produced
        ("deid", pa.string()),  # JSON: what de-identification did (actions and counts only)
    ]
)
