"""The shipped PS3.15 Annex E table is whole and parses."""

from medtune.deid.annex_e import annex_e_rows

BASIC_ACTIONS = {"D", "Z", "X", "K", "C", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}


def test_table_is_the_2024b_edition_with_every_row():
    rows = annex_e_rows()
    assert len(rows) == 621
    assert {row.basic for row in rows} <= BASIC_ACTIONS
    by_name = {row.name: row for row in rows}
    assert by_name["Patient's Name"].keyword_tag == 0x00100010
    assert by_name["Accession Number"].basic == "Z"
    assert by_name["Study Date"].options["rtnLongFullDatesOpt"] == "K"


def test_wildcard_and_descriptive_tags_have_no_number():
    wildcards = [row for row in annex_e_rows() if row.keyword_tag is None]
    assert wildcards and all(not row.tag.strip("()").replace(",", "").isalnum()
                             or "x" in row.tag.lower() for row in wildcards)  # fmt: skip
