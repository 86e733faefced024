"""The ``medtune`` command: one thin command per verb that parses, then calls a module.

Heavy modules (numpy, torch, pydicom, pydantic) are imported inside each command so that
``medtune --help`` answers at once. Errors are one line on stderr: usage errors exit 2, failures
exit 1, and a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from medtune import __version__
from medtune.cli_output import print_summary as _print_summary
from medtune.cli_output import with_progress as _with_progress


def _new_app() -> typer.Typer:
    return typer.Typer(
        name="medtune",
        help="Fine-tune healthcare foundation models on your own imaging data, on your own "
        "machines.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


app = _new_app()
config_app = typer.Typer(
    help="Show and list recipes (YAML configs).", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(config_app, name="config")


def _add_pacs_commands() -> None:
    from medtune.cli_pacs import pacs_app  # typer only: keeps --help fast

    app.add_typer(pacs_app, name="pacs")


_add_pacs_commands()


def _add_evaluate_commands() -> None:
    from medtune.cli_evaluate import evaluate_app  # typer only: keeps --help fast

    app.add_typer(evaluate_app, name="evaluate")


_add_evaluate_commands()

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe value: --set synth.patients=20 (repeatable)."),
]


def _version(value: bool) -> None:
    if value:
        print(f"medtune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on failure.")] = False,
) -> None:
    """Fine-tune healthcare foundation models on your own imaging data, on your own machines."""


# ---------------------------------------------------------------------------------------------
# Verbs.


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Output directory (created).")],
    patients: Annotated[int | None, typer.Option(help="Number of patients.")] = None,
    sites: Annotated[int | None, typer.Option(help="Number of hospitals.")] = None,
    size: Annotated[int | None, typer.Option(help="Long side of each image, px.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (same seed, same bytes).")] = None,
    anatomies: Annotated[
        list[str] | None,
        typer.Option(help="Anatomies to include, comma-separated or repeated (default: all)."),
    ] = None,
    images: Annotated[int | None, typer.Option(help="Stop after this many images.")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes (0 = one per core).")] = None,
    recipe: Annotated[str, typer.Option(help="Recipe name or YAML path.")] = "synth/default",
    set_: SetOption = None,
    force: Annotated[bool, typer.Option(help="Write into a non-empty --out.")] = False,
) -> None:
    """Generate a synthetic multi-site X-ray cohort.

    Writes DICOM files per site, RIS report exports, ground truth and a PHI manifest.
    """
    from medtune.config import SynthConfig, load_recipe

    overrides = list(set_ or [])
    flags = _add_flags(overrides, (
        ("patients", "--patients", patients),
        ("sites", "--sites", sites),
        ("size", "--size", size),
        ("seed", "--seed", seed),
        ("max_images", "--images", images),
        ("workers", "--workers", workers),
    ))  # fmt: skip
    if anatomies:
        names = [name.strip() for item in anatomies for name in item.split(",") if name.strip()]
        overrides.append(f"anatomies=[{', '.join(names)}]")
        flags["anatomies"] = "--anatomies"
    config = load_recipe(recipe, overrides, expect=SynthConfig, flags=flags)
    assert isinstance(config, SynthConfig)

    from medtune.synth.cohort import generate_cohort

    summary = _with_progress(
        "synth", lambda progress: generate_cohort(config, out, force=force, progress=progress)
    )
    _print_summary(summary)


@app.command()
def demo(
    recipe: Annotated[str, typer.Option(help="Recipe name or YAML path.")] = "demo",
    set_: SetOption = None,
    workspace: Annotated[
        Path | None, typer.Option(help="Workspace directory (default from the recipe).")
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="A smaller cohort and budget (the demo-quick recipe): minutes.")
    ] = False,
) -> None:
    """Run the pipeline on the embedded synthetic cohort.

    This is what `make demo` runs.
    """
    from medtune.config import DemoConfig, load_recipe

    if quick:
        recipe = "demo-quick" if recipe == "demo" else recipe
    overrides = list(set_ or [])
    if workspace is not None:
        overrides.append(f"workspace={workspace}")
    config = load_recipe(recipe, overrides, expect=DemoConfig, flags={"workspace": "--workspace"})
    assert isinstance(config, DemoConfig)

    from medtune.demo import run_demo

    summary = _with_progress("demo", lambda progress: run_demo(config, progress=progress))
    _print_summary(summary)


@config_app.command("show")
def config_show(
    recipe: Annotated[str, typer.Argument(help="Recipe name (such as 'demo') or YAML path.")],
    set_: SetOption = None,
) -> None:
    """Print a recipe resolved: overrides applied, every default filled in."""
    from medtune.config import dump_yaml, load_recipe

    print(dump_yaml(load_recipe(recipe, list(set_ or []))), end="")


@config_app.command("list")
def config_list() -> None:
    """List the shipped recipes."""
    from medtune.config import available_recipes

    for name in available_recipes():
        print(name)


@app.command()
def ingest(
    source: Annotated[
        str,
        typer.Argument(
            help="Folder of DICOM files (any layout), or a PACS: dicomweb+http://host:port/"
            "dicom-web or dimse://AET@host:port?method=get|move."
        ),
    ],
    workspace: Annotated[Path, typer.Option("--workspace", "-w", help="Workspace directory.")],
    staging: Annotated[
        Path | None,
        typer.Option(help="PACS sources: where retrieved files wait (resumable; keep it private)."),
    ] = None,
    date_from: Annotated[str | None, typer.Option("--from", help="PACS: first study date.")] = None,
    date_to: Annotated[str | None, typer.Option("--to", help="PACS: last study date.")] = None,
    modality: Annotated[list[str] | None, typer.Option(help="PACS: modality (repeatable).")] = None,
    body_part: Annotated[
        list[str] | None, typer.Option(help="PACS: Body Part Examined (repeatable).")
    ] = None,
    reports: Annotated[
        list[Path] | None, typer.Option(help="RIS export (CSV/JSONL) or FHIR JSON (repeatable).")
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(help="Pseudonym key file, kept outside the workspace (created if absent)."),
    ] = None,
    deid_options: Annotated[
        str | None,
        typer.Option(
            help="Annex E options, comma-separated (default: retain-long-modified-dates,"
            "retain-patient-chars)."
        ),
    ] = None,
    no_deid: Annotated[
        bool, typer.Option("--no-deid", help="Turn de-identification off (recorded in the card).")
    ] = False,
    ocr: Annotated[
        str | None, typer.Option(help="Burned-in text check: off, flagged, all.")
    ] = None,
    size: Annotated[int | None, typer.Option(help="Output image side, px (default 256).")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes (0 = one per core).")] = None,
    shard: Annotated[str | None, typer.Option(help="Take part i of N of the inputs: i/N.")] = None,
    recipe: Annotated[str, typer.Option(help="Recipe name or YAML path.")] = "ingest/default",
    set_: SetOption = None,
) -> None:
    """De-identify and preprocess DICOM files into a workspace dataset.

    Every input ends up ingested, quarantined with a reason, or counted as a duplicate.
    """
    from medtune.config import IngestConfig, load_recipe

    overrides = list(set_ or [])
    flags = _add_flags(overrides, (
        ("size", "--size", size),
        ("workers", "--workers", workers),
        ("deid.ocr", "--ocr", ocr),
    ), deid_options)  # fmt: skip
    if no_deid:
        overrides.append("deid.enabled=false")
    config = load_recipe(recipe, overrides, expect=IngestConfig, flags=flags)
    assert isinstance(config, IngestConfig)

    from medtune.dataset.ingest import ShardSpec, ingest_with_reports

    key_path = key or default_key_path()
    pacs_counts: dict[str, int] | None = None
    if "://" in source:
        from medtune.dataset.ingest import stage_from_pacs
        from medtune.io.pacs import PacsQuery

        query = PacsQuery(
            date_from=_iso_date(date_from, "--from"),
            date_to=_iso_date(date_to, "--to"),
            modalities=tuple(modality or ()),
            body_parts=tuple(body_part or ()),
        )
        folder = staging or default_staging_path(source)
        pacs_counts = _with_progress(
            "retrieve", lambda progress: stage_from_pacs(source, query, folder)
        )
        source = str(folder)

    def quarantined(item, reason) -> None:  # type: ignore[no-untyped-def]
        # The user's own console, on their machine: the path they gave helps them find the file.
        print(f"quarantined {item.relative}: {reason}", file=sys.stderr)

    summary = _with_progress(
        "ingest",
        lambda progress: ingest_with_reports(
            source, workspace, config, key_path, reports or [], ShardSpec.parse(shard),
            progress=lambda done, total: progress("files", done, total),
            on_quarantine=quarantined,
        ),
    )  # fmt: skip
    if pacs_counts is not None:
        pacs_table = [list(pacs_counts), list(pacs_counts.values())]
        summary.tables = {"retrieved from the PACS": pacs_table, **summary.tables}
    _print_summary(summary)


@app.command()
def deid(
    source: Annotated[
        str | None, typer.Argument(help="Folder of DICOM files (omit with --reports).")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Output folder (or .csv/.jsonl for reports).")
    ] = Path(),
    reports: Annotated[
        Path | None, typer.Option(help="De-identify this report export (CSV/JSONL) instead.")
    ] = None,
    text_column: Annotated[str, typer.Option(help="Report text column.")] = "report_text",
    id_column: Annotated[str, typer.Option(help="Report id column.")] = "accession_number",
    patient_column: Annotated[
        str | None, typer.Option(help="Patient id column: dates shift as the patient's images.")
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="Pseudonym key file (created if absent).")
    ] = None,
    deid_options: Annotated[
        str | None, typer.Option(help="Annex E options, comma-separated.")
    ] = None,
    ocr: Annotated[
        str | None, typer.Option(help="Burned-in text check: off, flagged, all.")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Processes (0 = one per core).")] = None,
) -> None:
    """Write de-identified DICOM files (or a de-identified report export).

    Same profile, burned-in text check and leak scan as ingest; a log and quarantine list.
    """
    from medtune.config import IngestConfig, load_recipe

    key_path = key or default_key_path()
    if str(out) in ("", "."):
        raise typer.BadParameter("--out is required", param_hint="--out")
    if reports is not None:
        from medtune.deid.pseudonyms import Pseudonymizer, load_or_create_key
        from medtune.deid.text import deidentify_report_file

        pseudo = Pseudonymizer(load_or_create_key(key_path))
        summary = deidentify_report_file(
            reports, out, text_column, id_column, patient_column, pseudo
        )
        print(f"reports: {summary.rows} rows, {summary.written} written, "
              f"{summary.rejected} rejected -> {out}")  # fmt: skip
        return
    if source is None:
        raise typer.BadParameter("give a SOURCE folder or --reports FILE", param_hint="SOURCE")
    overrides: list[str] = []
    pairs = (("workers", "--workers", workers), ("deid.ocr", "--ocr", ocr))
    flags = _add_flags(overrides, pairs, deid_options)
    config = load_recipe("ingest/default", overrides, expect=IngestConfig, flags=flags)
    assert isinstance(config, IngestConfig)

    from medtune.dataset.export import export_deidentified

    def quarantined(item, reason) -> None:  # type: ignore[no-untyped-def]
        print(f"quarantined {item.relative}: {reason}", file=sys.stderr)

    summary = _with_progress(
        "deid",
        lambda progress: export_deidentified(
            source, out, config, key_path,
            progress=lambda done, total: progress("files", done, total),
            on_quarantine=quarantined,
        ),
    )  # fmt: skip
    _print_summary(summary)


def _add_commands() -> None:
    from medtune.cli_curate import COMMANDS as CURATE  # typer only: keeps --help fast
    from medtune.cli_train import COMMANDS as TRAIN

    for command in (*CURATE, *TRAIN):
        app.command()(command)


_add_commands()


def _add_flags(
    overrides: list[str],
    pairs: tuple[tuple[str, str, object], ...],
    deid_options: str | None = None,
) -> dict[str, str]:
    """Turn the flags given (dotted key, flag, value) into ``--set`` overrides, appended to
    ``overrides``; return key -> flag, so config errors name the flag the user typed."""
    flags: dict[str, str] = {}
    for dotted, flag, value in pairs:
        if value is not None:
            overrides.append(f"{dotted}={value}")
            flags[dotted] = flag
    if deid_options is not None:
        names = [n.strip() for n in deid_options.split(",") if n.strip()]
        overrides.append(f"deid.options=[{', '.join(names)}]")
        flags["deid.options"] = "--deid-options"
    return flags


def _iso_date(text: str | None, flag: str):  # type: ignore[no-untyped-def]
    import datetime as dt

    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"expected YYYY-MM-DD, got {text!r}", param_hint=flag) from None


def default_staging_path(spec: str) -> Path:
    """Per PACS source, under the user's cache: raw (identified) files never enter a workspace."""
    import hashlib

    digest = hashlib.sha256(spec.encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "medtune" / "staging" / digest


def default_key_path() -> Path:
    """$MEDTUNE_KEY, else ~/.config/medtune/pseudonym.key: outside any workspace."""
    import os

    env = os.environ.get("MEDTUNE_KEY")
    if env:
        return Path(env)
    return Path.home() / ".config" / "medtune" / "pseudonym.key"


# ---------------------------------------------------------------------------------------------
# Entry point.


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: 0 ok, 1 failure, 2 usage error, 130 interrupted."""
    import os

    # Pydantic looks for plugins in every installed package's entry points on first use (40 ms
    # a command); medtune uses none. Set PYDANTIC_DISABLE_PLUGINS yourself to choose otherwise.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    command = typer.main.get_command(_app_for(args))
    try:
        result = command.main(args=args, prog_name="medtune", standalone_mode=False)
    except typer.exceptions.TyperException as exc:  # typer's vendored click usage errors
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(ctx.get_help() if ctx else "", file=sys.stderr)
            return 2
        where = ctx.command_path if ctx else "medtune"
        message = _one_line(exc.format_message())
        print(f"{where}: error: {message} (see '{where} --help')", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2) or 2)
    except typer.Abort:
        print("medtune: aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("medtune: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from medtune.errors import MedtuneError

        if debug:
            traceback.print_exc()
        if isinstance(exc, MedtuneError):
            print(f"medtune: error: {_one_line(str(exc))}", file=sys.stderr)
        else:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            print(
                f"medtune: error: {type(exc).__name__}: {_one_line(first)[:200]}"
                + ("" if debug else " (run with --debug for the traceback)"),
                file=sys.stderr,
            )
        return 1
    return result if isinstance(result, int) else 0


def _app_for(args: list[str]) -> typer.Typer:
    """The app with only the command being run, when it is a top-level verb: typer builds every
    command's parameters before it runs one, a tenth of a second that a short job feels."""
    wanted = next((arg for arg in args if not arg.startswith("-")), None)
    for info in app.registered_commands:
        name = info.name or (info.callback.__name__ if info.callback else "")
        if name.replace("_", "-") == wanted:
            lean = _new_app()
            lean.registered_callback = app.registered_callback
            lean.registered_commands = [info]
            return lean
    return app


def _one_line(text: str) -> str:
    return " ".join(text.split())


def entry() -> None:
    """The ``medtune`` program: :func:`main`, then an exit that skips the interpreter's teardown.

    Tearing down pydicom's decoder plugins, Arrow and the other native modules takes 0.2-0.3 s
    after every command, longer than a small job's work. By now each file medtune wrote is
    closed (every writer is a ``with`` block) and renamed into place, so the exit handlers are
    run, the standard streams flushed, and the process ends at once.
    """
    import atexit
    import os

    code = main()
    atexit._run_exitfuncs()  # logging's flush, weakref finalizers, multiprocessing's joins
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            code = code or 1
    os._exit(code)


if __name__ == "__main__":
    entry()
