"""Keyed pseudonyms, UIDs and date shifts: the same input maps to the same output in every run,
every shard and every machine that holds the same key, and to nothing guessable without it.

HMAC-SHA256 under a 32-byte secret key, with the kind of value in the message, so a patient ID
and an accession number that happen to be equal get unrelated pseudonyms. The key lives in a
file the user names, outside the workspace (whoever holds it can re-link pseudonyms to people).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import secrets
import stat
import tempfile
from pathlib import Path

from medtune.errors import MedtuneError

KEY_BYTES = 32
# Dates move back by 1 to 10 years, per patient: intervals between a patient's studies are kept,
# and no shifted date can be mistaken for the real one.
SHIFT_DAYS = (365, 3650)


def load_or_create_key(path: str | os.PathLike[str]) -> bytes:
    """The key in ``path``; a new random one (file mode 0600) when the file does not exist."""
    key_path = Path(path)
    if not key_path.exists():
        key_path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(KEY_BYTES)
        # Written whole to a temporary file (0600), then linked into place: a shard starting at
        # the same moment sees no key or the whole key, never an empty file; O_EXCL semantics
        # come from link(), which fails if another process got there first.
        fd, tmp = tempfile.mkstemp(dir=key_path.parent, prefix=".medtune-key-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(key.hex().encode("ascii") + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, key_path)
            except FileExistsError:
                return load_or_create_key(key_path)
        finally:
            os.unlink(tmp)
        return key
    try:
        mode = key_path.stat().st_mode
        text = key_path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise MedtuneError(f"{key_path}: cannot read the pseudonym key ({err})") from err
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MedtuneError(
            f"{key_path}: the pseudonym key is readable by other users; run chmod 600 on it"
        )
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise MedtuneError(f"{key_path}: not a medtune key ({KEY_BYTES} bytes as hex)")
    return key


class Pseudonymizer:
    """Stable pseudonyms under one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("pseudonym key too short")
        self._key = key

    def _digest(self, kind: str, value: str) -> bytes:
        message = kind.encode("utf-8") + b"\x00" + value.strip().encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def pseudonym(self, kind: str, value: str, length: int = 16) -> str:
        """An upper-case base32 pseudonym of ``value`` (e.g. kind "patient", "study")."""
        text = base64.b32encode(self._digest(kind, value)).decode("ascii").rstrip("=")
        return text[:length]

    def patient(self, patient_id: str, issuer: str = "") -> str:
        """The patient's pseudonym (from Patient ID and Issuer of Patient ID). Every stage keys
        the patient's date shift on it, so images, reports and later runs agree on the shift
        without the original ID: ``shift_date(pseudo.patient(pid), day)``."""
        return "P" + self.pseudonym(
            "patient", f"{issuer}\x00{patient_id}" if issuer else patient_id
        )

    def study(self, accession_or_uid: str) -> str:
        """A study's pseudonym, from its accession number (what reports are keyed by)."""
        return "S" + self.pseudonym("study", accession_or_uid)

    def uid(self, uid: str) -> str:
        """A replacement UID under the 2.25 root (a UUID-derived UID, PS3.5 B.2), at most 44
        characters, the same for the same ``uid``."""
        number = int.from_bytes(self._digest("uid", uid)[:16], "big")
        return f"2.25.{number}"

    def date_shift_days(self, patient_key: str) -> int:
        """How many days this patient's dates move (negative: back in time). ``patient_key`` is
        the patient's pseudonym from :meth:`patient`, never the original ID."""
        low, high = SHIFT_DAYS
        number = int.from_bytes(self._digest("date-shift", patient_key)[:8], "big")
        return -(low + number % (high - low + 1))

    def shift_date(self, patient_key: str, value: dt.date) -> dt.date:
        return value + dt.timedelta(days=self.date_shift_days(patient_key))

    def shift_datetime(self, patient_key: str, value: dt.datetime) -> dt.datetime:
        return value + dt.timedelta(days=self.date_shift_days(patient_key))
