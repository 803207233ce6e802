"""``stemdaq inspect``: what is in an acquisition file, and whether it is whole."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from stemdaq.errors import StemdaqError


def inspect(
    file: Annotated[Path, typer.Argument(help="NeXus file written by stemdaq")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Summarise a file (NXimage groups, shapes, units, compression, frames written/missing).

    Exits 1 when the file breaks the stemdaq/NXem layout, 2 when it cannot be read.
    """
    from stemdaq.writer import inspect_file

    try:
        report = inspect_file(file)
    except (OSError, StemdaqError) as exc:
        typer.echo(f"error: cannot inspect {file}: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        Console().print(report)
    raise typer.Exit(0 if report.ok else 1)


def register(app: typer.Typer) -> None:
    """Add ``inspect``."""
    app.command()(inspect)
