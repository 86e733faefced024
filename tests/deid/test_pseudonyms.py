"""The pseudonym key file and keyed pseudonyms, UIDs and date shifts: stable across runs,
processes and shards, unguessable without the key."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import re
import stat
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from medtune.deid.pseudonyms import SHIFT_DAYS, Pseudonymizer, load_or_create_key
from medtune.errors import MedtuneError

UID_RE = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))+$")  # no leading zeros in components


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "medtune.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert load_or_create_key(tmp_path / "other.key") != key


def test_refuses_a_key_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "medtune.key"
    load_or_create_key(path)
    path.chmod(0o640)
    with pytest.raises(MedtuneError, match="readable by other users"):
        load_or_create_key(path)


@pytest.mark.parametrize("content", ["not hex at all\n", "ab" * 8 + "\n", "", "zz" * 32])
def test_refuses_a_malformed_key(tmp_path: Path, content: str) -> None:
    path = tmp_path / "medtune.key"
    path.write_text(content, encoding="ascii")
    path.chmod(0o600)
    with pytest.raises(MedtuneError, match="not a medtune key"):
        load_or_create_key(path)


def _race(path: str, start: float) -> str:
    while time.time() < start:  # spin, so that every process reaches the file at once
        pass
    try:
        return load_or_create_key(path).hex()
    except MedtuneError as err:  # e.g. a half-written key read by the race's loser
        return f"error: {err}"


def test_processes_racing_to_create_the_key_end_with_one(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(8, mp_context=context) as pool:
        for attempt in range(100):  # the window is a few microseconds: try it many times
            path = str(tmp_path / f"race-{attempt}.key")
            keys = set(pool.map(_race, [path] * 8, [time.time() + 0.01] * 8))
            assert keys == {Path(path).read_text(encoding="ascii").strip()}, attempt


def _shard(key: bytes, values: list[str]) -> list[tuple[str, str, int]]:
    pseudo = Pseudonymizer(key)
    return [(pseudo.pseudonym("patient", v), pseudo.uid(v), pseudo.date_shift_days(v))
            for v in values]  # fmt: skip


def test_same_key_same_pseudonyms_in_every_run_and_shard(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "medtune.key")
    values = [f"MRN{i:05d}" for i in range(40)]
    here = _shard(key, values)
    # Another run reads the key from the file; two shards split the values between processes.
    again = _shard(load_or_create_key(tmp_path / "medtune.key"), values)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        shards = list(pool.map(_shard, [key, key], [values[::2], values[1::2]]))
    assert here == again
    assert here[::2] == shards[0] and here[1::2] == shards[1]
    assert len({p for p, _, _ in here}) == len(values)  # no collisions among 40 patients


def test_kinds_are_separate_and_keys_matter() -> None:
    pseudo = Pseudonymizer(b"\x01" * 32)
    assert pseudo.pseudonym("patient", "12345") != pseudo.pseudonym("study", "12345")
    assert pseudo.pseudonym("patient", "12345") != Pseudonymizer(b"\x02" * 32).pseudonym(
        "patient", "12345"
    )
    assert re.fullmatch(r"[A-Z2-7]{16}", pseudo.pseudonym("patient", "12345"))
    with pytest.raises(ValueError):
        Pseudonymizer(b"short")


def test_date_shift_is_constant_per_patient_and_never_zero() -> None:
    pseudo = Pseudonymizer(b"\x03" * 32)
    low, high = SHIFT_DAYS
    shifts = {pseudo.date_shift_days(f"patient-{i}") for i in range(200)}
    assert all(-high <= s <= -low for s in shifts) and 0 not in shifts
    assert len(shifts) > 150  # spread out, not one shift for everybody
    first, second = dt.date(2020, 3, 4), dt.date(2021, 6, 10)
    moved = [pseudo.shift_date("patient-7", d) for d in (first, second)]
    assert moved[1] - moved[0] == second - first  # intervals between studies are kept
    assert moved[0] - first == dt.timedelta(days=pseudo.date_shift_days("patient-7"))
    when = dt.datetime(2020, 3, 4, 23, 59)
    assert pseudo.shift_datetime("patient-7", when).time() == when.time()


@pytest.mark.parametrize(
    "uid", ["1.2.840.113619.2.55.3.604688119.868.1234567890.123", "1.2.3", "2.25.0", ""]
)
def test_uids_are_valid_and_stable(uid: str) -> None:
    pseudo = Pseudonymizer(b"\x04" * 32)
    new = pseudo.uid(uid)
    assert UID_RE.match(new) and len(new) <= 64 and new.startswith("2.25.")
    assert new == Pseudonymizer(b"\x04" * 32).uid(uid) != uid
    assert new != pseudo.uid(uid + "1")
