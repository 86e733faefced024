"""A local Orthanc PACS for trying medtune's PACS path: start, stop, inspect, upload.

``up`` writes a config and storage folder of its own under a state directory, starts the Debian
``Orthanc`` binary detached, waits until its REST API answers and records ports and pid in
``state.json``; ``down`` asks it to shut down and kills it only as a last resort. The server
accepts HTTP from loopback only (Orthanc 1.10 has no bind-address option, so
``RemoteAccessAllowed: false`` does the refusing) and DICOM only from medtune's own AE on
127.0.0.1, which is also the C-MOVE destination. Nothing here reads patient data: ``push``
sends files as bytes and counts outcomes, naming only kinds of failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medtune.errors import MedtuneError
from medtune.workspace import atomic_write_text

DEFAULT_AET = "ORTHANC"  # the server's AE title
CLIENT_AET = "MEDTUNE"  # medtune's AE: allowed to query and retrieve, and the C-MOVE destination
LOOPBACK = "127.0.0.1"
INSTALL_HINT = "install the Debian packages orthanc orthanc-dicomweb"
STATE_FILE = "state.json"
LOG_FILE = "orthanc.log"
CONFIG_FILE = "config.json"
START_TIMEOUT_S = 30.0
PORT_ATTEMPTS = 3  # fresh port picks when Orthanc exits on start
STOP_TIMEOUT_S = 15.0

# Where Debian and upstream builds put the DICOMweb plugin; `dpkg -L` is asked when none exists.
PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so",
)


@dataclass(frozen=True)
class ServerInfo:
    """Where a local Orthanc listens, as recorded in ``state.json``."""

    state_dir: Path
    pid: int
    http_port: int
    dicom_port: int
    aet: str
    client_aet: str  # medtune's calling AE title and C-MOVE destination
    move_port: int  # where medtune's storage SCP must listen for C-MOVE

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def dicomweb_spec(self) -> str:
        """The source spec :func:`medtune.io.pacs.open_source` takes for DICOMweb."""
        return f"dicomweb+{self.dicomweb_url}"

    def dimse_spec(self, method: str = "get") -> str:
        """The source spec :func:`medtune.io.pacs.open_source` takes for DIMSE."""
        spec = f"dimse://{self.aet}@{LOOPBACK}:{self.dicom_port}?method={method}"
        spec += f"&calling={self.client_aet}"
        return spec + (f"&port={self.move_port}" if method == "move" else "")


@dataclass(frozen=True)
class ServerStatus:
    """Whether the server answers, and how much it holds (counts only)."""

    running: bool
    info: ServerInfo | None
    studies: int = 0
    series: int = 0
    instances: int = 0
    disk_mb: float = 0.0


@dataclass
class PushSummary:
    """Outcome of an upload: every file given is counted exactly once."""

    accepted: int = 0  # newly stored
    already: int = 0  # the server held it already (a re-run after a kill)
    rejected: int = 0  # DICOM the server refused, see ``reasons``
    skipped: int = 0  # not DICOM (no "DICM" marker): never sent
    reasons: Counter[str] = field(default_factory=Counter)  # kind of failure -> count

    @property
    def total(self) -> int:
        return self.accepted + self.already + self.rejected + self.skipped


def default_state_dir() -> Path:
    """``$MEDTUNE_PACS_DIR``, else ``$XDG_CACHE_HOME/medtune/pacs`` (``~/.cache/medtune/pacs``)."""
    if os.environ.get("MEDTUNE_PACS_DIR"):
        return Path(os.environ["MEDTUNE_PACS_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "medtune" / "pacs"


# ---------------------------------------------------------------------------------------------
# Start and stop.


def up(
    state_dir: str | os.PathLike[str] | None = None,
    http_port: int | None = None,
    dicom_port: int | None = None,
    aet: str = DEFAULT_AET,
    client_aet: str = CLIENT_AET,
    move_port: int | None = None,
) -> ServerInfo:
    """Start a local Orthanc with its config, storage and log under ``state_dir``.

    Ports left as None are picked free on 127.0.0.1. If the server of this state directory is
    already running, its info is returned unchanged. Stored studies survive ``down``/``up``.
    """
    state = _state_path(state_dir)
    running = _running_info(state)
    if running is not None:
        return running
    recorded = read_state(state)
    if recorded is not None and _pid_is_ours(recorded.pid, state):
        # Alive but not answering: a second server on the same index would corrupt it.
        raise MedtuneError(f"Orthanc of {state} runs but does not answer: `medtune pacs down`")
    binary = shutil.which("Orthanc")
    if binary is None:
        raise MedtuneError(f"Orthanc not found on PATH: {INSTALL_HINT}")
    plugin = find_dicomweb_plugin()
    state.mkdir(parents=True, exist_ok=True)
    chosen = (http_port, dicom_port, move_port)
    # A port picked free can be taken by another process before Orthanc binds it: then Orthanc
    # exits on start, and a new pick is tried (ports the caller named are never changed).
    for attempt in range(1, PORT_ATTEMPTS + 1):
        ports = tuple(port or _free_port() for port in chosen)
        config = orthanc_config(state, ports[0], ports[1], aet, client_aet, ports[2], plugin)
        atomic_write_text(state / CONFIG_FILE, json.dumps(config, indent=2))
        proc = _start(binary, state)
        info = ServerInfo(state, proc.pid, ports[0], ports[1], aet, client_aet, ports[2])
        try:
            _wait_until_up(info, proc.poll)
            break
        except _ExitedOnStart:
            _stop_pid(proc.pid, state)
            if attempt == PORT_ATTEMPTS or all(chosen):
                raise MedtuneError(f"Orthanc exited on start (port taken or bad config): "
                                   f"see {state / LOG_FILE}") from None  # fmt: skip
        except BaseException:
            _stop_pid(proc.pid, state)
            raise
    atomic_write_text(state / STATE_FILE, json.dumps(_state_json(info), indent=2))
    return info


def _start(binary: str, state: Path) -> subprocess.Popen[bytes]:
    log = state / LOG_FILE
    with open(log, "ab") as log_fh:
        # A session of its own: the server outlives this process and a Ctrl-C in the shell.
        return subprocess.Popen(
            [binary, f"--logfile={log}", "--no-jobs", str(state / CONFIG_FILE)],
            cwd=state,
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=log_fh,
            start_new_session=True,
            # DCMTK (Orthanc's DICOM stack) reads this: without it, Nagle's algorithm and delayed
            # ACKs cost ~40 ms per DIMSE message, 5x slower C-FIND/C-GET on loopback.
            env={**os.environ, "TCP_NODELAY": "1"},
        )


class _ExitedOnStart(Exception):
    pass


def down(state_dir: str | os.PathLike[str] | None = None) -> bool:
    """Stop the server of ``state_dir``; True if one was running. Storage is kept."""
    state = _state_path(state_dir)
    info = read_state(state)
    if info is None:
        return False
    was_running = _pid_is_ours(info.pid, state)
    if was_running:
        # A clean shutdown first (the index is SQLite: a kill may cost a journal replay).
        with contextlib.suppress(OSError):
            _http(info.url + "/tools/shutdown", data=b"", timeout=5)
        if not _wait_gone(info.pid, state, STOP_TIMEOUT_S):
            _stop_pid(info.pid, state)
    (state / STATE_FILE).unlink(missing_ok=True)
    return was_running


def status(state_dir: str | os.PathLike[str] | None = None) -> ServerStatus:
    """Whether the server of ``state_dir`` answers, with its study/series/instance counts."""
    state = _state_path(state_dir)
    info = _running_info(state)
    if info is None:
        return ServerStatus(running=False, info=read_state(state))
    stats = json.loads(_http(info.url + "/statistics", timeout=5))
    return ServerStatus(
        running=True,
        info=info,
        studies=int(stats.get("CountStudies", 0)),
        series=int(stats.get("CountSeries", 0)),
        instances=int(stats.get("CountInstances", 0)),
        disk_mb=float(stats.get("TotalDiskSizeMB", 0.0)),
    )


def read_state(state_dir: str | os.PathLike[str]) -> ServerInfo | None:
    """The info ``up`` recorded in ``state_dir``, or None (whether or not it still runs)."""
    state = _state_path(state_dir)
    try:
        raw = json.loads((state / STATE_FILE).read_text())
        return ServerInfo(
            state_dir=state,
            pid=int(raw["pid"]),
            http_port=int(raw["http_port"]),
            dicom_port=int(raw["dicom_port"]),
            aet=str(raw["aet"]),
            client_aet=str(raw["client_aet"]),
            move_port=int(raw["move_port"]),
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise MedtuneError(f"{state / STATE_FILE}: unreadable server state ({exc})") from exc


def find_dicomweb_plugin() -> Path:
    """The path of ``libOrthancDicomWeb.so``: known places first, then ``dpkg -L``."""
    for candidate in PLUGIN_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        listed = subprocess.run(
            ["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, timeout=10
        ).stdout
        for line in listed.splitlines():
            if "libOrthancDicomWeb.so" in line and Path(line).is_file():
                return Path(line)
    raise MedtuneError(f"Orthanc DICOMweb plugin not found: {INSTALL_HINT}")


def orthanc_config(
    state: Path,
    http_port: int,
    dicom_port: int,
    aet: str,
    client_aet: str,
    move_port: int,
    plugin: Path,
) -> dict[str, object]:
    """The Orthanc configuration ``up`` writes: loopback, own storage, DICOMweb, one peer AE."""
    return {
        "Name": "medtune",
        "StorageDirectory": str(state / "storage"),
        "IndexDirectory": str(state / "index"),
        "Plugins": [str(plugin)],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,  # refuses HTTP clients other than loopback
        "AuthenticationEnabled": False,  # safe only because of the line above
        "WebDavEnabled": False,
        "OrthancExplorerEnabled": True,
        "DicomServerEnabled": True,
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        # Only medtune's AE on 127.0.0.1 may talk DICOM to it: the server has no bind address.
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "DicomCheckModalityHost": True,
        "DicomModalities": {"medtune": {"AET": client_aet, "Host": LOOPBACK, "Port": move_port}},
        "DicomScuTimeout": 10,
        "UnknownSopClassAccepted": False,
        "StorageCompression": False,
        "OverwriteInstances": False,
        "SaveJobs": False,
        "StableAge": 5,
        "SyncStorageArea": False,  # a sandbox server: speed over surviving a power cut
        "DeidentifyLogs": True,  # C-FIND and REST logs without patient values
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
    }


# ---------------------------------------------------------------------------------------------
# Upload.


def push(
    target: str | os.PathLike[str] | None,
    files: Iterable[str | os.PathLike[str]],
    progress: Callable[[int], None] | None = None,
) -> PushSummary:
    """Upload ``files`` to an Orthanc (its state dir, or a base URL ``http://host:port``).

    One POST /instances per file. Files without the DICOM "DICM" marker are skipped, never
    sent; a file the server refuses is counted under a reason and the batch goes on. Pushing
    the same files again is harmless (counted as ``already``). ``progress`` gets files done.
    """
    if isinstance(target, str) and target.startswith(("http://", "https://")):
        base = target.rstrip("/")
    else:
        state = _state_path(target)
        info = read_state(state)
        if info is None:
            raise MedtuneError(f"no server recorded in {state}: run `medtune pacs up` first")
        base = info.url
    try:
        _http(base + "/system", timeout=5)
    except OSError as exc:
        raise MedtuneError(f"no Orthanc answers at {base} ({type(exc).__name__})") from None
    summary = PushSummary()
    for done, path in enumerate(files, start=1):
        outcome = _push_one(base, Path(path))
        if outcome == "accepted":
            summary.accepted += 1
        elif outcome == "already":
            summary.already += 1
        elif outcome == "skipped":
            summary.skipped += 1
        else:
            summary.rejected += 1
            summary.reasons[outcome] += 1
        if progress is not None:
            progress(done)
    return summary


def _push_one(base: str, path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
            if len(head) < 132 or head[128:132] != b"DICM":
                return "skipped"
            data = head + fh.read()
    except OSError as exc:
        return f"unreadable file ({type(exc).__name__})"
    try:
        answer = json.loads(_http(base + "/instances", data=data, timeout=60))
    except urllib.error.HTTPError as exc:
        return f"refused by the server (HTTP {exc.code})"
    except (OSError, ValueError) as exc:
        return f"no answer from the server ({type(exc).__name__})"
    status_text = str(answer.get("Status", "")) if isinstance(answer, dict) else ""
    if status_text == "Success":
        return "accepted"
    if status_text == "AlreadyStored":
        return "already"
    return "refused by the server (unexpected answer)"


# ---------------------------------------------------------------------------------------------
# Process and HTTP helpers.


def _state_path(state_dir: str | os.PathLike[str] | None) -> Path:
    # Absolute, so the config's paths and the pid check do not depend on the working directory.
    return (
        (Path(state_dir) if state_dir is not None else default_state_dir()).expanduser().absolute()
    )


def _http(url: str, data: bytes | None = None, timeout: float = 10) -> bytes:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        request.add_header("Content-Type", "application/dicom")
    # Never through a proxy: the server is on loopback and the data may be patient data.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        return response.read()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _state_json(info: ServerInfo) -> dict[str, object]:
    raw = asdict(info)
    raw.pop("state_dir")
    raw["url"] = info.url
    raw["dicomweb"] = info.dicomweb_url
    return raw


def _wait_until_up(info: ServerInfo, exited: Callable[[], int | None]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if exited() is not None:
            raise _ExitedOnStart
        with contextlib.suppress(OSError):
            _http(info.url + "/system", timeout=1)
            return
        time.sleep(0.1)
    raise MedtuneError(
        f"Orthanc did not answer within {START_TIMEOUT_S:.0f} s: see {info.state_dir / LOG_FILE}"
    )


def _running_info(state: Path) -> ServerInfo | None:
    info = read_state(state)
    if info is None or not _pid_is_ours(info.pid, state):
        return None
    try:
        _http(info.url + "/system", timeout=2)
    except OSError:
        return None
    return info


def _pid_is_ours(pid: int, state: Path) -> bool:
    """True if ``pid`` is a live Orthanc started with this state dir's config (not a reused pid)."""
    _reap(pid)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in {"Z", "X"}:  # a zombie is gone for our purposes
        return False
    is_orthanc = bool(cmdline) and Path(os.fsdecode(cmdline[0])).name == "Orthanc"
    return is_orthanc and os.fsencode(state / CONFIG_FILE) in cmdline


def _reap(pid: int) -> None:
    # If this process started the server (tests, one CLI session), collect its exit status so
    # it does not linger as a zombie; for a server started by another process this is a no-op.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _wait_gone(pid: int, state: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_is_ours(pid, state):
            return True
        time.sleep(0.1)
    return not _pid_is_ours(pid, state)


def _stop_pid(pid: int, state: Path) -> None:
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if not _pid_is_ours(pid, state):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait_gone(pid, state, wait_s):
            return
    raise MedtuneError(f"could not stop Orthanc (pid {pid}) of {state}")
