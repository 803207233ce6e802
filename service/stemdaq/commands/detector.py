"""``stemdaq detector status|disarm|abort|initialize URL``: get a detector back into shape.

For the day an acquisition was killed and the detector stays armed (or acquiring): these talk to
the detector's SIMPLON API directly, no stemdaq server needed, and print the detector's state
after the command. An unreachable or refusing detector is one line on stderr and exit 1.
"""

from __future__ import annotations

from typing import Annotated

import typer

detector_app = typer.Typer(
    no_args_is_help=True,
    help="Check or reset a detector over SIMPLON (e.g. one an aborted acquisition left armed).",
)

DetectorUrl = Annotated[
    str, typer.Argument(help="SIMPLON URL of the detector, e.g. http://127.0.0.1:8080")
]
Timeout = Annotated[float, typer.Option(help="Seconds to wait for each HTTP answer")]


def _run(
    url: str, command: str | None, timeout: float, command_timeout: float | None = None
) -> None:
    """Send ``command`` (None: none), then print the detector's state; exit 1 on any error.

    ``command_timeout`` (default ``timeout``) bounds the command itself, which a DCU answers only
    once it is done.
    """
    import httpx

    from stemdaq.detector import SimplonClient
    from stemdaq.errors import DetectorError

    try:
        with SimplonClient(url, timeout=timeout) as det:
            if command is None:
                description = det.description()
                typer.echo(f"detector: {det.base_url}")
                if description:
                    typer.echo(f"description: {description}")
                typer.echo(f"SIMPLON: {det.version}")
            else:
                det.command(command, timeout=httpx.Timeout(command_timeout or timeout))
                typer.echo(f"{command}: done")
            typer.echo(f"state: {det.state()}")
    except DetectorError as exc:
        typer.echo(f"stemdaq detector {command or 'status'}: {exc}", err=True)
        raise typer.Exit(1) from None


@detector_app.command()
def status(url: DetectorUrl, timeout: Timeout = 10.0) -> None:
    """Show the detector's model, SIMPLON version and state (idle, ready, acquire, error...)."""
    _run(url, None, timeout)


@detector_app.command()
def disarm(url: DetectorUrl, timeout: Timeout = 10.0) -> None:
    """Disarm: end the series (the end-of-series message goes out)."""
    _run(url, "disarm", timeout)


@detector_app.command()
def abort(url: DetectorUrl, timeout: Timeout = 10.0) -> None:
    """Abort the running or armed series at once."""
    _run(url, "abort", timeout)


@detector_app.command()
def initialize(
    url: DetectorUrl,
    timeout: Timeout = 10.0,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the initialization to finish")
    ] = 300.0,
) -> None:
    """Initialize: reset the detector (clears an error state; can take minutes on a DCU)."""
    _run(url, "initialize", timeout, wait)


def register(app: typer.Typer) -> None:
    """Add the ``detector`` group."""
    app.add_typer(detector_app, name="detector")
