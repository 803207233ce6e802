"""``stemdaq rank`` (one writer rank) and ``stemdaq fan`` (the router in front of the ranks).

Both are long-running processes with an HTTP control port (``/healthz``, ``/metrics``), the same
program on one machine (``stemdaq serve --ranks N`` starts them) and as Kubernetes pods.
Settings come from ``--config`` YAML < env ``STEMDAQ_*`` < these flags, as for ``serve``.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Annotated

import typer

ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="YAML settings file (default: none)")
]
Host = Annotated[str, typer.Option(help="Bind address of the control port (HTTP)")]


def _settings(config: Path | None, **overrides: object):  # noqa: ANN202 - Settings
    from stemdaq.errors import ConfigError
    from stemdaq.settings import load_settings

    try:
        settings = load_settings(config, **overrides)
    except (ConfigError, ValueError) as exc:
        typer.echo(f"stemdaq: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return settings


def rank(
    rank_index: Annotated[
        int | None,
        typer.Option(
            help="This rank's index (env STEMDAQ_RANK_INDEX); default the host name's "
            "trailing ordinal (StatefulSet pod name-N)"
        ),
    ] = None,
    host: Host = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(help="Control port (env STEMDAQ_RANK_PORT, default 8100)")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Root of all acquisition files (env STEMDAQ_DATA_DIR)")
    ] = None,
    config: ConfigFile = None,
) -> None:
    """Run one writer rank: it writes the frames it owns to its own file."""
    import uvicorn

    from stemdaq.rank.server import create_rank_app, rank_index_from_host

    settings = _settings(config, rank_index=rank_index, rank_port=port, data_dir=data_dir)
    index = settings.rank_index
    if index is None:
        index = rank_index_from_host(socket.gethostname())
    if index is None:
        typer.echo(
            "stemdaq: no rank index: give --rank-index / STEMDAQ_RANK_INDEX, or run in a pod "
            f"named name-N (this host is {socket.gethostname()!r})",
            err=True,
        )
        raise typer.Exit(2)
    typer.echo(f"stemdaq rank {index} on {host}:{settings.rank_port}", err=True)
    uvicorn.run(
        create_rank_app(settings, index),
        host=host,
        port=settings.rank_port,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )


def fan(
    host: Host = "127.0.0.1",
    bind: Annotated[str, typer.Option(help="Bind address of the data ports (ZeroMQ)")] = (
        "127.0.0.1"
    ),
    ranks: Annotated[int | None, typer.Option(help="Ranks (env STEMDAQ_RANKS)")] = None,
    fan_port: Annotated[
        int | None,
        typer.Option(
            help="First data port: rank i connects to fan_port + i (env STEMDAQ_FAN_PORT)"
        ),
    ] = None,
    fan_control_port: Annotated[
        int | None, typer.Option(help="Control port (env STEMDAQ_FAN_CONTROL_PORT)")
    ] = None,
    config: ConfigFile = None,
) -> None:
    """Run the fan: PULL the detector's stream, PUSH each image to the rank that owns it."""
    import uvicorn

    from stemdaq.routing.fan import Fan
    from stemdaq.routing.server import create_fan_app

    settings = _settings(config, ranks=ranks, fan_port=fan_port, fan_control_port=fan_control_port)
    router = Fan(
        settings.ranks,
        bind=bind,
        port=settings.fan_port,
        send_timeout=settings.fan_send_timeout,
        sndhwm=settings.queue_size,
    )
    typer.echo(
        f"stemdaq fan for {settings.ranks} ranks on {host}:{settings.fan_control_port}, "
        f"data ports {settings.fan_port}..{settings.fan_port + settings.ranks - 1}",
        err=True,
    )
    uvicorn.run(
        create_fan_app(router),
        host=host,
        port=settings.fan_control_port,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )


def relink(
    master: Annotated[Path, typer.Argument(help="The master file (<name> or <name>.partial)")],
) -> None:
    """Point a scale-out master at its rank files as they are named now (after the service
    died mid-scan); run it only when nothing writes these files any more."""
    from stemdaq.writer.relink import relink as relink_master

    try:
        changed = relink_master(master)
    except (OSError, ValueError) as exc:
        typer.echo(f"stemdaq: {master}: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{master}: {len(changed)} datasets relinked" if changed else f"{master}: in order")


def register(app: typer.Typer) -> None:
    """Add ``rank``, ``fan`` and ``relink``."""
    app.command()(rank)
    app.command()(fan)
    app.command()(relink)
