"""The leak scan finds identifiers in any spelling, anywhere in a dataset; it reports kinds."""

from __future__ import annotations

import datetime as dt

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medtune.deid import leak
from medtune.deid.identifiers import Identifiers


def _known() -> Identifiers:
    known = Identifiers()
    known.add("names", "DOE^JOHN^Q")
    known.add("ids", "MRN0012345")
    known.add("ids", "1000")  # too short and plain to be matched on its own
    known.add("dates", dt.date(1950, 3, 14))
    known.add("places", "St Elsewhere General Hospital")
    known.add("contacts", "+1 (555) 010-4477")
    return known


def test_spellings_are_matched() -> None:
    needles = leak.Needles.of(_known())
    assert needles.find("Doe, John") == ["names"]
    assert needles.find("seen by john") == ["names"]
    assert needles.find("ref mrn0012345.") == ["ids"]
    assert needles.find("born 14.03.1950") == ["dates"]
    assert needles.find("DOB 1950-03-14") == ["dates"]
    assert needles.find("19500314") == ["dates"]
    assert needles.find("ST. ELSEWHERE GENERAL HOSPITAL") == ["places"]
    assert needles.find("call 15550104477") == ["contacts"]


def test_ordinary_text_is_not_matched() -> None:
    needles = leak.Needles.of(_known())
    for text in ("No pleural effusion.", "exposure index 1000", "Johnson", "1.2.840.10008.1.2.1"):
        assert needles.find(text) == [], text


def test_dataset_scan_walks_sequences_and_private_tags_and_names_only_the_tag() -> None:
    ds = Dataset()
    ds.PatientSex = "M"
    item = Dataset()
    item.PersonName = "Doe^John"
    ds.ReferencedPatientSequence = Sequence([item])
    block = ds.private_block(0x0019, "VENDOR", create=True)
    block.add_new(0x21, "LO", "MRN0012345")
    ds.SOPInstanceUID = "1.2.3.19500314"  # UIDs are not scanned for digits
    hits = leak.scan_dataset(ds, _known())
    assert sorted((h.kind, h.where) for h in hits) == [
        ("ids", "private (0019,1021)"),
        ("names", "(0040,A123)"),
    ]
    described = leak.describe(hits)
    assert described == "ids x1, names x1"
    assert "doe" not in described.lower() and "0012345" not in described


def test_word_lookup_agrees_with_search_on_word_bounded_values() -> None:
    needles = leak.Needles.of(_known())
    texts = ("Doe, John", "ref mrn0012345.", "born 14.03.1950", "DOB 1950-03-14",
             "ST. ELSEWHERE GENERAL HOSPITAL", "call +1 555 010 4477", "No effusion.")  # fmt: skip
    for text in texts:
        assert needles.find_words(text) == needles.find(text), text


def test_an_id_that_looks_like_a_date_is_not_found_in_a_written_date_time():
    known = Identifiers()
    known.add("ids", "2012031521")  # a date-based accession number: 2012-03-15, study 21
    for many in (False, True):  # find, and find_words (used for large needle sets)
        needles = leak.Needles.of(known)
        find = needles.find_words if many else needles.find
        assert find("Electronically signed on 2012-03-15 21:26:12") == []
        assert find("Signed 03/15/2012 at 21:26") == []
        assert find("Accession: 2012031521") == ["ids"]
        assert find("Acc 2012-0315-21") == ["ids"]  # other separators: still the id
