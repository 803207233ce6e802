"""The ``stemdaq`` command line (typer): serve, sim, acquire, inspect, status, start, stop, watch."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="4D-STEM acquisition and storage service.")


@app.command()
def version() -> None:
    """Print the stemdaq version."""
    from stemdaq import __version__

    typer.echo(__version__)
