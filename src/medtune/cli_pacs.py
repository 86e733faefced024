"""``medtune pacs``: a local Orthanc to try the PACS path in a minute, and pulls from any PACS.

    medtune pacs up                      # start Orthanc on free loopback ports
    medtune pacs push cohort/dicom       # upload a folder of DICOM files
    medtune pacs pull dicomweb+http://127.0.0.1:PORT/dicom-web --out staging --modality CR
    medtune pacs down

Registered in ``cli.py`` as a sub-app. Like every command there, each one imports its module
inside the function so that ``medtune --help`` stays fast, and prints counts, never values.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

pacs_app = typer.Typer(
    help="A local Orthanc PACS (up, down, status, push) and pulls from any PACS.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Server state folder: config, storage, log "
        "(default $MEDTUNE_PACS_DIR or ~/.cache/medtune/pacs).",
    ),
]


@pacs_app.command()
def up(
    state_dir: StateDir = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port (default: a free one).")] = None,
    dicom_port: Annotated[
        int | None, typer.Option(help="DICOM port (default: a free one).")
    ] = None,
    aet: Annotated[str, typer.Option(help="The server's AE title.")] = "ORTHANC",
) -> None:
    """Start a local Orthanc on 127.0.0.1 with its own config and storage folder."""
    from medtune.io import orthanc

    if orthanc.status(state_dir).running:
        info = orthanc.up(state_dir)  # returns the running server's info, changes nothing
        _print_info("Orthanc is already running", info)
        return
    info = orthanc.up(state_dir, http_port=http_port, dicom_port=dicom_port, aet=aet)
    _print_info("Orthanc is up", info)


@pacs_app.command()
def down(state_dir: StateDir = None) -> None:
    """Stop the local Orthanc (its storage is kept for the next `up`)."""
    from medtune.io import orthanc

    _console().print("Orthanc stopped" if orthanc.down(state_dir) else "Orthanc was not running")


@pacs_app.command()
def status(state_dir: StateDir = None) -> None:
    """Say whether the local Orthanc runs, where, and how much it holds."""
    from medtune.io import orthanc

    state = orthanc.status(state_dir)
    if not state.running or state.info is None:
        _console().print("Orthanc is not running")
        raise typer.Exit(3)  # like `systemctl status`: scripts can test it
    _print_info("Orthanc is running", state.info)
    _console().print(
        f"  holds      {state.studies} studies, {state.series} series, "
        f"{state.instances} instances ({state.disk_mb:.1f} MB)"
    )


@pacs_app.command()
def push(
    source: Annotated[Path, typer.Argument(help="A DICOM file or a folder (searched deeply).")],
    state_dir: StateDir = None,
    url: Annotated[
        str | None, typer.Option(help="Push to this Orthanc instead: http://host:port.")
    ] = None,
) -> None:
    """Upload DICOM files to the local Orthanc (or --url); non-DICOM files are skipped."""
    from medtune.errors import MedtuneError
    from medtune.io import orthanc
    from medtune.io.folder import list_inputs

    if source.is_file():
        files = [source]
    elif source.is_dir():
        files = [item.path for item in list_inputs(source)]
    else:
        raise MedtuneError(f"{source}: no such file or directory")
    summary = orthanc.push(url if url else state_dir, files)
    console = _console()
    console.print(
        f"[bold]pushed {summary.total} files:[/] {summary.accepted} stored, {summary.already} "
        f"already there, {summary.rejected} refused, {summary.skipped} not DICOM"
    )
    for reason, count in summary.reasons.most_common():
        console.print(f"  {count} refused: {reason}")
    if summary.rejected:
        raise typer.Exit(1)


@pacs_app.command()
def pull(
    source: Annotated[
        str,
        typer.Argument(
            help="dicomweb+http://host:port/dicom-web or dimse://AET@host:port?method=get|move"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Staging folder (resumable).")],
    date_from: Annotated[
        str | None, typer.Option("--from", help="First study date, YYYY-MM-DD.")
    ] = None,
    date_to: Annotated[
        str | None, typer.Option("--to", help="Last study date, YYYY-MM-DD.")
    ] = None,
    modality: Annotated[
        list[str] | None, typer.Option(help="Modality (repeatable): CR, DX, CT...")
    ] = None,
    body_part: Annotated[
        list[str] | None, typer.Option(help="Body Part Examined (repeatable): CHEST, HAND...")
    ] = None,
    study: Annotated[
        list[str] | None,
        typer.Option(help="Study Instance UID to fetch as is (repeatable); skips the query."),
    ] = None,
) -> None:
    """Find studies on a PACS and stage their instances in --out; a re-run resumes."""
    from rich.markup import escape

    from medtune.io.pacs import PacsQuery, RetrievedFile, StudyRef, open_source

    query = PacsQuery(
        date_from=_date(date_from, "--from"),
        date_to=_date(date_to, "--to"),
        modalities=tuple(modality or ()),
        body_parts=tuple(body_part or ()),
    )
    pacs = open_source(source)
    console = _console()
    studies: list[StudyRef | str]
    if study:
        # Asked for by UID: each one the server lacks is reported as absent, not dropped.
        studies = list(dict.fromkeys(study))
        console.print(f"[bold]fetching {len(studies)} studies[/] by UID")
    else:
        found = pacs.find(query)
        studies = list(found)
        wanted = sum(ref.n_instances for ref in found)
        console.print(f"[bold]found {len(found)} studies[/] ({wanted} instances)")
    counts = {"fetched": 0, "cached": 0, "failed": 0, "absent": 0}
    reasons: dict[str, int] = {}
    for result in pacs.retrieve(studies, out):
        if isinstance(result, RetrievedFile):
            counts["cached" if result.cached else "fetched"] += 1
        else:
            counts["absent" if result.absent else "failed"] += 1
            key = f"{result.level}: {result.reason}"
            reasons[key] = reasons.get(key, 0) + 1
    console.print(
        f"[bold]staged[/] {counts['fetched']} fetched, {counts['cached']} already there, "
        f"{counts['failed']} failed, {counts['absent']} absent",
        f"(in {escape(str(out))})",
    )
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        console.print(f"  {count} x {reason}")
    if counts["failed"]:
        raise typer.Exit(1)


def _date(text: str | None, flag: str) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        message = f"expected a date YYYY-MM-DD, got {text!r}"
        raise typer.BadParameter(message, param_hint=flag) from None


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    # No wrapping or auto-highlighting: URLs and specs are meant to be copied as printed.
    return Console(soft_wrap=True, highlight=False)


def _print_info(title: str, info) -> None:  # type: ignore[no-untyped-def]
    from rich.markup import escape

    console = _console()
    console.print(f"[bold green]{title}[/]")
    for label, value in (
        ("folder", info.state_dir),
        ("web", f"{info.url}  (pid {info.pid})"),
        ("dicomweb", info.dicomweb_spec),
        ("dimse", info.dimse_spec("get")),
        ("c-move", info.dimse_spec("move")),
    ):
        console.print(f"  {label:<10} {escape(str(value))}")
