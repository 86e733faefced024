"""Query and retrieve studies from a PACS, over DICOMweb or DIMSE, into a staging folder.

Both sources have one shape: ``find(query)`` lists the matching studies (UIDs and counts only)
and ``retrieve(studies, staging_dir)`` yields one :class:`RetrievedFile` or :class:`FailedItem`
per instance, so every instance asked for is accounted for: staged, failed with a one-line
reason, or absent from the server. Files are written atomically under a name hashed from the
SOP Instance UID (never a patient or accession value) and in the transfer syntax the server
stored (DIMSE: the bytes as received; DICOMweb: the dataset as parsed, pixel data untouched).
Instances already staged are not fetched again, so a killed job resumes where it stopped.

Body part is filtered at series level: Orthanc (and the standard's study-level keys) do not
match Body Part Examined on studies. Modality is matched per series too, so a study is fetched
only for its series that match. Values are upper-cased (DICOM CS) before matching.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import queue
import socket
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medtune.errors import MedtuneError
from medtune.workspace import atomic_path, flush_to_disk

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

# These libraries log UIDs and query values at INFO/DEBUG (urllib3: every request URL, which
# holds the UIDs in DICOMweb): keep them to warnings, which carry none.
for _name in ("dicomweb_client", "pynetdicom", "urllib3.connectionpool"):
    logging.getLogger(_name).setLevel(logging.WARNING)

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
ANY_SYNTAX = (("application/dicom", "*"),)  # WADO-RS: as stored, no transcoding
DEFAULT_CALLING_AET = "MEDTUNE"


@dataclass(frozen=True)
class PacsQuery:
    """What to look for. Empty fields match everything; several values match any of them."""

    date_from: dt.date | None = None  # StudyDate, inclusive
    date_to: dt.date | None = None
    modalities: tuple[str, ...] = ()  # "CR", "DX", ...
    body_parts: tuple[str, ...] = ()  # Body Part Examined: "CHEST", "HAND", ...
    study_uids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(v.upper() for v in self.modalities))
        object.__setattr__(self, "body_parts", tuple(v.upper() for v in self.body_parts))
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise MedtuneError("query: the start date is after the end date")

    @property
    def study_date(self) -> str | None:
        """The DICOM range "YYYYMMDD-YYYYMMDD" (an end may be open), or None for any date."""
        if self.date_from is None and self.date_to is None:
            return None
        start = self.date_from.strftime("%Y%m%d") if self.date_from else ""
        end = self.date_to.strftime("%Y%m%d") if self.date_to else ""
        return f"{start}-{end}"

    def keeps(self, modality: str | None, body_part: str | None) -> bool:
        """Whether a series with these values matches. A value the server did not return
        passes only where the server was asked to filter on it (a single value)."""
        return _matches(modality, self.modalities) and _matches(body_part, self.body_parts)


def _matches(value: str | None, wanted: tuple[str, ...]) -> bool:
    if not wanted:
        return True
    if not value:
        return len(wanted) == 1  # filtered by the server, which then omitted the value
    return value.upper() in wanted


@dataclass(frozen=True)
class SeriesRef:
    """One series to fetch; modality and body part are not identifying."""

    series_uid: str = field(repr=False)
    modality: str = ""
    body_part: str = ""
    n_instances: int | None = None  # as the server counts them, if it says


@dataclass(frozen=True)
class StudyRef:
    """One study found; ``series`` lists the matching series (empty: all of the study)."""

    study_uid: str = field(repr=False)
    series: tuple[SeriesRef, ...] = ()

    @property
    def n_instances(self) -> int:
        return sum(s.n_instances or 0 for s in self.series)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(sorted({s.modality for s in self.series if s.modality}))


@dataclass(frozen=True)
class RetrievedFile:
    """One instance staged at ``path`` (``cached``: by an earlier run, not fetched again)."""

    path: Path
    study_uid: str = field(repr=False)
    sop_uid: str = field(repr=False)
    cached: bool = False


@dataclass(frozen=True)
class FailedItem:
    """A study, series or instance not staged: ``reason`` is one line without identifiers."""

    level: str  # "study", "series" or "instance"
    reason: str
    absent: bool  # True: the server does not hold it (as opposed to a failed transfer)
    study_uid: str = field(repr=False)
    uid: str = field(default="", repr=False)  # the series or SOP Instance UID, by level


Result = RetrievedFile | FailedItem
Instance = tuple[str, str]  # (Series Instance UID, SOP Instance UID)
BATCH = 200  # instances per retrieve request when resuming (a UID list in one identifier)


class _QueryFailed(MedtuneError):
    """The server refused one query: the item is reported as failed and the batch goes on."""


def staged_path(staging_dir: str | os.PathLike[str], sop_uid: str) -> Path:
    """Where an instance is staged: ``<staging>/<ab>/<abcdef...>.dcm``, hashed from its UID."""
    digest = hashlib.sha256(sop_uid.encode("ascii", "replace")).hexdigest()[:32]
    return Path(staging_dir) / digest[:2] / f"{digest}.dcm"


class _Sink:
    """Writes what a fetch receives, and records which instances it accounted for."""

    def __init__(self, staging: Path, study_uid: str) -> None:
        self.staging = staging
        self.study_uid = study_uid
        self.results: queue.SimpleQueue[Result] = queue.SimpleQueue()  # filled from threads
        self.seen: set[str] = set()

    def store(self, sop_uid: str, write: Callable[[Path], None]) -> bool:
        self.seen.add(sop_uid)
        path = staged_path(self.staging, sop_uid)
        try:
            with atomic_path(path, durable=False) as tmp:  # one sync at the end of retrieve
                write(tmp)
        except Exception as exc:  # a bad instance must not stop the batch
            self.fail(sop_uid, f"could not write the staged file ({type(exc).__name__})")
            return False
        self.results.put(RetrievedFile(path, self.study_uid, sop_uid))
        return True

    def fail(self, sop_uid: str, reason: str, absent: bool = False) -> None:
        self.seen.add(sop_uid)
        self.results.put(FailedItem("instance", reason, absent, self.study_uid, sop_uid))

    def drain(self) -> Iterator[Result]:
        while not self.results.empty():
            yield self.results.get()


class _Source:
    """Retrieval logic both protocols share; subclasses list and fetch."""

    def find(self, query: PacsQuery) -> list[StudyRef]:
        """The studies matching ``query``, each with its matching series."""
        raise NotImplementedError

    def retrieve(
        self, studies: Iterable[StudyRef | str], staging_dir: str | os.PathLike[str]
    ) -> Iterator[Result]:
        """Stage every instance of ``studies`` (refs or Study Instance UIDs) in ``staging_dir``.

        Yields one result per instance (and one per study or series the server lacks). A
        failure of one item never stops the batch; losing the server raises MedtuneError, and
        running again resumes.
        """
        staging = Path(staging_dir)
        staging.mkdir(parents=True, exist_ok=True)
        try:
            with self._session():
                for study in studies:
                    ref = StudyRef(study) if isinstance(study, str) else study
                    yield from self._retrieve_study(ref, staging)
        finally:
            flush_to_disk()  # the atomic writes skipped their fsyncs

    def _retrieve_study(self, study: StudyRef, staging: Path) -> Iterator[Result]:
        uid = study.study_uid
        try:
            series = study.series or tuple(self._list_series(uid))
        except _QueryFailed as exc:
            yield FailedItem("study", str(exc), False, uid)
            return
        if not series:
            yield FailedItem("study", "not found on the server", True, uid)
            return
        listed: list[Instance] = []
        for one in series:
            try:
                sops = self._list_instances(uid, one.series_uid)
            except _QueryFailed as exc:
                yield FailedItem("series", str(exc), False, uid, one.series_uid)
                continue
            if not sops:
                yield FailedItem("series", "not found on the server", True, uid, one.series_uid)
            listed += [(one.series_uid, sop) for sop in sops]
        missing = []
        for series_uid, sop in listed:
            path = staged_path(staging, sop)
            if path.exists():
                yield RetrievedFile(path, uid, sop, cached=True)
            else:
                missing.append((series_uid, sop))
        if not missing:
            return
        sink = _Sink(staging, uid)
        # Nothing staged yet: whole series, as few requests as the protocol allows; else only
        # the missing instances (a resumed job), in batches.
        if len(missing) == len(listed):
            batches = [(list(dict.fromkeys(series_uid for series_uid, _ in listed)), None)]
        else:
            batches = [([], missing[i : i + BATCH]) for i in range(0, len(missing), BATCH)]
        for series_uids, instances in batches:
            reason = self._fetch(uid, series_uids, instances, sink)
            yield from sink.drain()
            for _, sop in instances or missing:
                if sop not in sink.seen:
                    sink.fail(sop, reason or "not received from the server")
            yield from sink.drain()

    # Protocol-specific parts.
    def _session(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def _list_series(self, study_uid: str) -> list[SeriesRef]:
        raise NotImplementedError

    def _list_instances(self, study_uid: str, series_uid: str) -> list[str]:
        raise NotImplementedError

    def _fetch(
        self,
        study_uid: str,
        series_uids: list[str],
        instances: list[Instance] | None,
        sink: _Sink,
    ) -> str | None:
        """Fetch whole series (``instances`` None) or the given (series, SOP) instances into
        ``sink``; return a reason when the server failed the request as a whole."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# DICOMweb: QIDO-RS to find, WADO-RS to retrieve (dicomweb-client).

_SERIES_FIELDS = ["Modality", "BodyPartExamined", "NumberOfSeriesRelatedInstances"]


class DicomWebSource(_Source):
    """A DICOMweb server, such as ``http://127.0.0.1:8042/dicom-web`` (Orthanc's plugin)."""

    def __init__(self, url: str) -> None:
        import requests
        from dicomweb_client.api import DICOMwebClient

        self.url = url.rstrip("/")
        session = requests.Session()
        if urllib.parse.urlsplit(self.url).hostname in LOOPBACK_HOSTS:
            session.trust_env = False  # never send loopback traffic through a proxy
        self._client = DICOMwebClient(url=self.url, session=session)

    def find(self, query: PacsQuery) -> list[StudyRef]:
        filters: dict[str, str] = {}
        if query.study_date:
            filters["StudyDate"] = query.study_date
        if len(query.modalities) == 1:
            filters["Modality"] = query.modalities[0]
        if len(query.body_parts) == 1:
            filters["BodyPartExamined"] = query.body_parts[0]
        # One search over all series (QIDO-RS allows study keys there); per study if UIDs given.
        rows: list[dict[str, Any]] = []
        for study_uid in query.study_uids or (None,):
            rows += self._search("series", "0020000E", study_uid, filters, _SERIES_FIELDS)
        studies: dict[str, list[SeriesRef]] = {}
        for row in rows:
            study_uid, series = _value(row, "0020000D"), _series_ref(row)
            if study_uid and series.series_uid and query.keeps(series.modality, series.body_part):
                studies.setdefault(study_uid, []).append(series)
        return [StudyRef(uid, tuple(series)) for uid, series in studies.items()]

    def _list_series(self, study_uid: str) -> list[SeriesRef]:
        rows = self._search("series", "0020000E", study_uid, {}, _SERIES_FIELDS)
        return [ref for ref in map(_series_ref, rows) if ref.series_uid]

    def _list_instances(self, study_uid: str, series_uid: str) -> list[str]:
        rows = self._search("instances", "00080018", study_uid, {}, [], series_uid)
        return [uid for uid in (_value(row, "00080018") for row in rows) if uid]

    def _fetch(
        self,
        study_uid: str,
        series_uids: list[str],
        instances: list[Instance] | None,
        sink: _Sink,
    ) -> str | None:
        import requests

        client, reason = self._client, None
        try:
            for series_uid in series_uids if instances is None else []:
                try:
                    for ds in client.iter_series(study_uid, series_uid, media_types=ANY_SYNTAX):
                        _store_dataset(sink, ds)
                except requests.HTTPError as exc:
                    reason = _http_reason(exc)  # its instances are reported as not received
            for series_uid, sop in instances or []:
                try:
                    ds = client.retrieve_instance(
                        study_uid, series_uid, sop, media_types=ANY_SYNTAX
                    )
                except requests.HTTPError as exc:
                    sink.fail(sop, _http_reason(exc), absent=_status(exc) == 404)
                    continue
                _store_dataset(sink, ds, expected=sop)
        except requests.RequestException as exc:
            raise self._lost(exc) from None
        return reason

    def _search(
        self,
        level: str,
        key: str,
        study_uid: str | None,
        filters: dict[str, str],
        fields: list[str],
        series_uid: str | None = None,
    ) -> list[dict[str, Any]]:
        """A QIDO-RS search, paged by offset until the server has nothing new (Orthanc 1.10
        ignores ``offset`` with some keys, so a page of repeats also ends the loop)."""
        import requests

        kwargs: dict[str, Any] = {"search_filters": dict(filters), "fields": fields or None}
        if study_uid:
            kwargs["study_instance_uid"] = study_uid
        if series_uid:
            kwargs["series_instance_uid"] = series_uid
        search = getattr(self._client, f"search_for_{level}")
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        try:
            while True:
                page = search(offset=len(rows) or None, **kwargs)
                fresh = [row for row in page if _value(row, key) not in seen]
                if not fresh:
                    return rows
                seen.update(_value(row, key) or "" for row in fresh)
                rows += fresh
        except requests.HTTPError as exc:
            code = _status(exc)
            if code == 404:  # some servers answer a search under an unknown study this way
                return rows
            raise _QueryFailed(f"DICOMweb search at {self.url} failed: HTTP {code}") from None
        except requests.RequestException as exc:
            raise self._lost(exc) from None

    def _lost(self, exc: Exception) -> MedtuneError:
        # requests' messages quote the URL, which holds UIDs: name only the server and the kind.
        return MedtuneError(f"DICOMweb server {self.url} unreachable ({type(exc).__name__})")


def _value(row: dict[str, Any], tag: str) -> str | None:
    values = row.get(tag, {}).get("Value") or [None]
    return None if values[0] is None else str(values[0])


def _series_ref(row: dict[str, Any]) -> SeriesRef:
    count = _value(row, "00201209")
    return SeriesRef(
        series_uid=_value(row, "0020000E") or "",
        modality=(_value(row, "00080060") or "").upper(),
        body_part=(_value(row, "00180015") or "").upper(),
        n_instances=int(count) if count and count.isdigit() else None,
    )


def _status(exc: Any) -> int:
    return exc.response.status_code if getattr(exc, "response", None) is not None else 0


def _http_reason(exc: Any) -> str:
    code = _status(exc)
    return "not found on the server" if code == 404 else f"refused by the server (HTTP {code})"


def _store_dataset(sink: _Sink, ds: Dataset, expected: str | None = None) -> None:
    sop = str(ds.get("SOPInstanceUID", "") or "")
    if not sop:
        sink.fail(expected or "", "instance received without a SOP Instance UID")
        return
    if expected and sop != expected:
        sink.fail(expected, "the server sent a different instance than asked for")
    # Saved as parsed: file meta, transfer syntax and encapsulated pixel data unchanged.
    sink.store(sop, lambda tmp: ds.save_as(tmp, enforce_file_format=True))


# ---------------------------------------------------------------------------------------------
# DIMSE: C-FIND to find, C-GET or C-MOVE to retrieve (pynetdicom).

# Image storage SOP classes offered for C-GET (the SCP role is negotiated for each), and the
# transfer syntaxes offered for each in a context of its own, so the server can send every
# instance as stored: 11 x 11 + 2 = 123 of the 128 contexts an association may hold.
GET_STORAGE_CLASSES = (
    "ComputedRadiographyImageStorage",
    "DigitalXRayImageStorageForPresentation",
    "DigitalXRayImageStorageForProcessing",
    "DigitalMammographyXRayImageStorageForPresentation",
    "CTImageStorage",
    "EnhancedCTImageStorage",
    "MRImageStorage",
    "EnhancedMRImageStorage",
    "UltrasoundImageStorage",
    "UltrasoundMultiFrameImageStorage",
    "SecondaryCaptureImageStorage",
)
GET_TRANSFER_SYNTAXES = (
    "ExplicitVRLittleEndian",
    "ImplicitVRLittleEndian",
    "JPEGLosslessSV1",
    "JPEGLossless",
    "JPEGLSLossless",
    "JPEGLSNearLossless",
    "JPEG2000Lossless",
    "JPEG2000",
    "RLELossless",
    "JPEGBaseline8Bit",
    "JPEGExtended12Bit",
)
_PENDING = (0xFF00, 0xFF01)


class DimseSource(_Source):
    """A DICOM node over DIMSE: C-FIND (Study Root), then C-GET or C-MOVE.

    With ``method="move"`` a storage SCP titled ``calling_aet`` listens on
    ``listen_host:move_port`` while :meth:`retrieve` runs; the server must know that AE
    (Orthanc: ``DicomModalities``, which ``medtune pacs up`` writes).
    """

    def __init__(
        self,
        host: str,
        port: int,
        called_aet: str = "ANY-SCP",
        calling_aet: str = DEFAULT_CALLING_AET,
        method: str = "get",
        move_port: int | None = None,
        listen_host: str = "127.0.0.1",
        timeout: float = 30.0,
    ) -> None:
        if method not in {"get", "move"}:
            raise MedtuneError(f"DIMSE method must be 'get' or 'move', got {method!r}")
        if method == "move" and not move_port:
            raise MedtuneError("DIMSE C-MOVE needs the port of medtune's storage SCP (port=)")
        import pynetdicom

        # Never log query or response identifiers (pynetdicom's default is to log them).
        pynetdicom._config.LOG_REQUEST_IDENTIFIERS = False
        pynetdicom._config.LOG_RESPONSE_IDENTIFIERS = False
        self.host, self.port, self.method = host, int(port), method
        self.called_aet, self.calling_aet = called_aet, calling_aet
        self.move_port, self.listen_host, self.timeout = move_port, listen_host, timeout
        self._assoc: Any = None
        self._sink: _Sink | None = None

    @property
    def where(self) -> str:
        return f"{self.called_aet}@{self.host}:{self.port}"

    def find(self, query: PacsQuery) -> list[StudyRef]:
        modality = query.modalities[0] if len(query.modalities) == 1 else ""
        body_part = query.body_parts[0] if len(query.body_parts) == 1 else ""
        with self._connected():
            rows: list[Dataset] = []
            for uid in query.study_uids or ("",):
                rows += self._c_find(
                    "STUDY",
                    StudyInstanceUID=uid,
                    StudyDate=query.study_date or "",
                    ModalitiesInStudy=modality,
                )
            found: list[StudyRef] = []
            for study_uid in dict.fromkeys(str(r.get("StudyInstanceUID", "")) for r in rows):
                if not study_uid:
                    continue
                series = self._series(study_uid, modality, body_part)
                series = [s for s in series if query.keeps(s.modality, s.body_part)]
                if series:
                    found.append(StudyRef(study_uid, tuple(series)))
            return found

    # Connection and storage SCP.

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        # For C-MOVE the storage SCP listens before the first request, and stops after the last.
        scp = self._storage_scp() if self.method == "move" else contextlib.nullcontext()
        with scp, self._connected():
            yield

    @contextlib.contextmanager
    def _connected(self) -> Iterator[None]:
        self._ae = self._make_ae()
        self._associate()
        try:
            yield
        finally:
            if self._assoc is not None and self._assoc.is_established:
                self._assoc.release()
            self._assoc = None

    def _make_ae(self) -> Any:
        from pydicom import uid
        from pynetdicom import AE
        from pynetdicom import sop_class as sc

        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.add_requested_context(sc.StudyRootQueryRetrieveInformationModelFind)
        if self.method == "get":
            ae.add_requested_context(sc.StudyRootQueryRetrieveInformationModelGet)
            for name in GET_STORAGE_CLASSES:
                for syntax in GET_TRANSFER_SYNTAXES:
                    ae.add_requested_context(getattr(sc, name), getattr(uid, syntax))
        else:
            ae.add_requested_context(sc.StudyRootQueryRetrieveInformationModelMove)
        return ae

    def _associate(self) -> None:
        from pynetdicom import build_role, evt
        from pynetdicom import sop_class as sc

        roles = []
        if self.method == "get":
            roles = [build_role(getattr(sc, name), scp_role=True) for name in GET_STORAGE_CLASSES]
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_CONN_OPEN, _no_delay)]
        assoc = self._ae.associate(
            self.host, self.port, ae_title=self.called_aet, ext_neg=roles, evt_handlers=handlers
        )
        if not assoc.is_established:
            raise MedtuneError(f"DIMSE: no association with {self.where} (refused or unreachable)")
        _reactor_hands_off(assoc)
        self._assoc = assoc

    def _ready(self) -> Any:
        # An association the server dropped (idle timeout, restart) is re-opened once.
        if self._assoc is None or not self._assoc.is_established:
            self._associate()
        return self._assoc

    @contextlib.contextmanager
    def _storage_scp(self) -> Iterator[None]:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_CONN_OPEN, _no_delay)]
        try:
            server = ae.start_server(
                (self.listen_host, int(self.move_port or 0)), block=False, evt_handlers=handlers
            )
        except OSError as exc:
            where = f"{self.listen_host}:{self.move_port}"
            raise MedtuneError(
                f"DIMSE: cannot listen on {where} for C-MOVE ({exc.strerror})"
            ) from None
        try:
            yield
        finally:
            server.shutdown()

    def _on_store(self, event: Any) -> int:
        sink = self._sink
        if sink is None:
            return 0xA700  # nothing asked for: refuse (out of resources)
        sop = str(event.request.AffectedSOPInstanceUID)
        data = event.encoded_dataset(include_meta=True)  # the bytes as received
        return 0x0000 if sink.store(sop, lambda tmp: tmp.write_bytes(data)) else 0xA700

    # Queries.

    def _c_find(self, level: str, **keys: str) -> list[Dataset]:
        from pydicom.dataset import Dataset
        from pynetdicom import sop_class as sc

        ident = Dataset()
        ident.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(ident, keyword, value)
        rows = []
        model = sc.StudyRootQueryRetrieveInformationModelFind
        for status, row in self._ready().send_c_find(ident, model):
            code = getattr(status, "Status", None)
            if code is None:
                raise MedtuneError(f"DIMSE: {self.where} stopped answering C-FIND")
            if code in _PENDING and row is not None:
                rows.append(row)
            elif code not in _PENDING and code != 0x0000:
                raise _QueryFailed(f"C-FIND refused by {self.where} (status 0x{code:04X})")
        return rows

    def _series(self, study_uid: str, modality: str = "", body_part: str = "") -> list[SeriesRef]:
        rows = self._c_find(
            "SERIES",
            StudyInstanceUID=study_uid,
            SeriesInstanceUID="",
            Modality=modality,
            BodyPartExamined=body_part,
            NumberOfSeriesRelatedInstances="",
        )
        out = []
        for row in rows:
            count = str(row.get("NumberOfSeriesRelatedInstances", "") or "")
            out.append(
                SeriesRef(
                    series_uid=str(row.get("SeriesInstanceUID", "") or ""),
                    modality=str(row.get("Modality", "") or "").upper(),
                    body_part=str(row.get("BodyPartExamined", "") or "").upper(),
                    n_instances=int(count) if count.isdigit() else None,
                )
            )
        return [ref for ref in out if ref.series_uid]

    def _list_series(self, study_uid: str) -> list[SeriesRef]:
        return self._series(study_uid)

    def _list_instances(self, study_uid: str, series_uid: str) -> list[str]:
        rows = self._c_find(
            "IMAGE", StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid, SOPInstanceUID=""
        )
        return [uid for uid in (str(r.get("SOPInstanceUID", "") or "") for r in rows) if uid]

    # Retrieval.

    def _fetch(
        self,
        study_uid: str,
        series_uids: list[str],
        instances: list[Instance] | None,
        sink: _Sink,
    ) -> str | None:
        from pydicom.dataset import Dataset
        from pynetdicom import sop_class as sc

        # One request: a list of UIDs is a valid unique key in a C-GET/C-MOVE identifier, and
        # Orthanc spends ~0.2 s in its job engine per C-MOVE request, whatever its size.
        ident = Dataset()
        ident.StudyInstanceUID = study_uid
        if instances is None:
            ident.QueryRetrieveLevel = "SERIES"
            ident.SeriesInstanceUID = series_uids
        else:
            ident.QueryRetrieveLevel = "IMAGE"
            ident.SeriesInstanceUID = list(dict.fromkeys(series for series, _ in instances))
            ident.SOPInstanceUID = [sop for _, sop in instances]
        assoc = self._ready()
        self._sink = sink  # before sending: C-MOVE stores may arrive at once, on other threads
        try:
            if self.method == "get":
                answers = assoc.send_c_get(ident, sc.StudyRootQueryRetrieveInformationModelGet)
            else:
                model = sc.StudyRootQueryRetrieveInformationModelMove
                answers = assoc.send_c_move(ident, self.calling_aet, model)
            reason = None
            for status, _ in answers:
                code = getattr(status, "Status", None)
                if code is None:
                    raise MedtuneError(f"DIMSE: {self.where} stopped answering C-{self.op}")
                if code not in _PENDING and code != 0x0000:
                    failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
                    reason = f"C-{self.op} at {self.where}: status 0x{code:04X}" + (
                        f", {failed} sub-operation(s) failed" if failed else ""
                    )
            return reason
        finally:
            self._sink = None

    @property
    def op(self) -> str:
        return self.method.upper()


def _reactor_hands_off(assoc: Any) -> None:
    """Keep pynetdicom's reactor thread from taking responses meant for our requests.

    pynetdicom 3.0.4 pauses its reactor for each request by clearing an event and polling a
    flag the reactor sets just *before* it waits; when the flag is read in that window, the
    reactor runs once more and can take the peer's first response off the queue ("Received
    unexpected C-FIND service message", pydicom/pynetdicom#875). The request then misses a
    match or hangs until the DIMSE timeout: with a fast peer (loopback, no Nagle) it hit about
    one run in two. The reactor is the only caller that does not block; an association that
    medtune opens never serves requests outside its own send_c_* calls, so the reactor is
    given nothing. Only this association object is changed.
    """
    dimse = assoc.dimse
    take = dimse.get_msg

    def get_msg(block: bool = False) -> Any:
        return take(block=True) if block else (None, None)

    dimse.get_msg = get_msg


def _no_delay(event: Any) -> None:
    # DIMSE exchanges small messages both ways: Nagle's algorithm plus delayed ACKs would add
    # ~40 ms to each (C-FIND and C-GET measured 4-8x slower on loopback without this).
    with contextlib.suppress(AttributeError, OSError):
        sock = event.assoc.dul.socket.socket
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# ---------------------------------------------------------------------------------------------
# Source specs.


def open_source(spec: str) -> DicomWebSource | DimseSource:
    """A source from its spec string.

    - ``dicomweb+http://host:8042/dicom-web`` (or ``dicomweb+https://...``)
    - ``dimse://CALLED@host:4242?method=get&calling=MEDTUNE`` (``method=move`` needs
      ``port=``, where medtune's storage SCP listens; ``listen=`` its address, default loopback)
    """
    if spec.startswith(("dicomweb+http://", "dicomweb+https://")):
        return DicomWebSource(spec.removeprefix("dicomweb+"))
    if spec.startswith("dimse://"):
        parts = urllib.parse.urlsplit(spec)
        options = dict(urllib.parse.parse_qsl(parts.query))
        unknown = sorted(set(options) - {"method", "calling", "port", "listen", "timeout"})
        if unknown:
            raise MedtuneError(f"source {spec!r}: unknown option {unknown[0]!r}")
        try:
            port = parts.port or 104
            move_port = int(options["port"]) if "port" in options else None
            timeout = float(options.get("timeout", 30))
        except ValueError as exc:
            raise MedtuneError(f"source {spec!r}: bad number ({exc})") from None
        if not parts.hostname:
            raise MedtuneError(f"source {spec!r}: no host (expected dimse://AET@host:port)")
        return DimseSource(
            host=parts.hostname,
            port=port,
            called_aet=urllib.parse.unquote(parts.username or "ANY-SCP"),
            calling_aet=options.get("calling", DEFAULT_CALLING_AET),
            method=options.get("method", "get"),
            move_port=move_port,
            listen_host=options.get("listen", "127.0.0.1"),
            timeout=timeout,
        )
    raise MedtuneError(
        f"unknown source {spec!r}: expected dicomweb+http(s)://host:port/path "
        "or dimse://AET@host:port?method=get|move"
    )


def summarize(results: Iterable[Result]) -> dict[str, int]:
    """Counts by outcome (fetched, cached, failed, absent): what a log or a table may show."""
    counts = {"fetched": 0, "cached": 0, "failed": 0, "absent": 0}
    for result in results:
        if isinstance(result, RetrievedFile):
            counts["cached" if result.cached else "fetched"] += 1
        else:
            counts["absent" if result.absent else "failed"] += 1
    return counts


__all__: Sequence[str] = [
    "DicomWebSource",
    "DimseSource",
    "FailedItem",
    "PacsQuery",
    "RetrievedFile",
    "SeriesRef",
    "StudyRef",
    "open_source",
    "staged_path",
    "summarize",
]
