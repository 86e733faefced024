"""What the CLI prints: progress bars on a terminal, and summaries (tables and lines).

Shared by every command module (cli.py, cli_pacs.py, cli_curate.py). rich is imported only when
a person watches a terminal, so piped and logged runs stay light and can fork their workers.
"""

from __future__ import annotations

import sys
import time


def with_progress(label: str, job):  # type: ignore[no-untyped-def]
    if not sys.stderr.isatty():  # nobody watches: no bar, and no import of rich's machinery
        return job(lambda description, done, total: None)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn(f"[bold]{label}[/] {{task.description}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    # Refreshed by the job's own calls, not by rich's refresh thread: with no thread running,
    # the job may fork its workers (see medtune.parallel).
    bar = Progress(*columns, transient=True, auto_refresh=False)
    with bar:
        tasks: dict[str, int] = {}
        shown = [0.0]

        def progress(description: str, done: int, total: int | None) -> None:
            if description not in tasks:
                tasks[description] = bar.add_task(description, total=total)
            bar.update(tasks[description], completed=done, total=total)
            now = time.monotonic()
            if now - shown[0] > 0.1 or done == total:
                shown[0] = now
                bar.refresh()

        return job(progress)


def print_summary(summary) -> None:  # type: ignore[no-untyped-def]
    if not sys.stdout.isatty():  # a log or a pipe: plain aligned text, and no rich to import
        for title, rows in summary.tables.items():
            cells = [[str(cell) for cell in row] for row in rows]
            widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
            print(title)
            for row in cells:
                pairs = zip(row[1:], widths[1:], strict=True)
                aligned = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in pairs]
                print("  " + "  ".join(aligned))
        for line in summary.lines:
            print(line)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for title, rows in summary.tables.items():
        table = Table(title=title, title_justify="left")
        for column in rows[0]:
            table.add_column(str(column), justify="right" if column != rows[0][0] else "left")
        for row in rows[1:]:
            table.add_row(*(str(cell) for cell in row))
        console.print(table)
    for line in summary.lines:
        console.print(line)
