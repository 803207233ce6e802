"""``stemdaq sim``: the simulated DECTRIS detector (SIMPLON REST subset + ZeroMQ PUSH)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stemdaq.commands.files import parse_pair


def sim(
    rest_port: Annotated[int, typer.Option(help="SIMPLON REST port (0: any free port)")] = 8080,
    stream_port: Annotated[int, typer.Option(help="ZeroMQ PUSH port (0: any free port)")] = 31001,
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="cbor (stream v2) or json (stream v1); default cbor, json with SIMPLON 1.6.0",
        ),
    ] = None,
    frame_shape: Annotated[
        str, typer.Option(help="Frame shape ny x nx, 96x96 .. 1024x1024")
    ] = "96x96",
    dtype: Annotated[str, typer.Option(help="uint8, uint16 or uint32")] = "uint16",
    compression: Annotated[str, typer.Option(help="bslz4, lz4 or none")] = "bslz4",
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same frames")] = 0,
    frame_time: Annotated[
        float | None, typer.Option(help="Seconds per frame; default: as fast as possible")
    ] = None,
    faults: Annotated[
        str | None,
        typer.Option(
            help="e.g. 'drop=3,7;duplicate=5;reorder=10;corrupt=12;truncate=14;"
            "wrong_series=20;abort_after=50;no_end'"
        ),
    ] = None,
    simplon_version: Annotated[
        str,
        typer.Option(
            help="SIMPLON API version of the REST paths: 1.8.0, or 1.6.0 (EIGER1-class: "
            "stream v1 only, no stream format key)"
        ),
    ] = "1.8.0",
    version_endpoint: Annotated[
        bool,
        typer.Option(
            "--version-endpoint/--no-version-endpoint",
            help="Serve GET /detector/api/version/ (--no-version-endpoint: 404, as some "
            "real servers)",
        ),
    ] = True,
) -> None:
    """Run the simulated detector until stopped (Ctrl-C); prints the chosen ports on start."""
    from stemdaq.errors import ConfigError
    from stemdaq.sim import run_sim
    from stemdaq.sim.server import BindError

    def ready(det: Any) -> None:
        typer.echo(f"rest_port={det.rest_port} stream_port={det.stream_port}", err=False)
        typer.echo(f"SIMPLON: {det.rest_url}  stream: {det.stream_endpoint}", err=True)

    try:
        run_sim(
            rest_port=rest_port,
            stream_port=stream_port,
            host=host,
            fmt=fmt,
            frame_shape=parse_pair(frame_shape, int),
            dtype=dtype,
            compression=compression,
            seed=seed,
            faults=faults,
            frame_time=frame_time,
            on_ready=ready,
            simplon_version=simplon_version,
            version_endpoint=version_endpoint,
        )
    except (BindError, ConfigError) as exc:  # a taken port, a bad flag: one line, no traceback
        typer.echo(f"stemdaq sim: {exc}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    """Add ``sim``."""
    app.command()(sim)
