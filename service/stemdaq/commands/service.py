"""``stemdaq serve`` (the REST service) and its client: ``status``, ``start``, ``stop``, ``watch``.

The client commands speak HTTP through :mod:`stemdaq_client` only (``--url``/``STEMDAQ_URL``,
``--token``/``STEMDAQ_API_TOKEN``), so they work against a remote server.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stemdaq.commands.options import (
    MetadataOption,
    SetOption,
    acquisition_options,
    deep_merge,
    parse_set,
)

if TYPE_CHECKING:
    from stemdaq_client import Acquisition, Client

DEFAULT_URL = "http://127.0.0.1:8000"
Url = Annotated[str, typer.Option(envvar="STEMDAQ_URL", help="Server URL")]
Token = Annotated[
    str | None, typer.Option(envvar="STEMDAQ_API_TOKEN", help="Bearer token for control commands")
]


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Bind address (env STEMDAQ_API__HOST)")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Bind port, 0: any free port (env STEMDAQ_API__PORT)")
    ] = 8000,
    data_dir: Annotated[
        Path, typer.Option(help="Root of all acquisition files (env STEMDAQ_DATA_DIR)")
    ] = Path("data"),
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML settings file (default: none)")
    ] = None,
    ranks: Annotated[
        int | None,
        typer.Option(
            help="Writer ranks: N > 1 starts N rank processes and a fan (default: 1; env "
            "STEMDAQ_RANKS)"
        ),
    ] = None,
) -> None:
    """Run the REST service (settings: --config YAML < env STEMDAQ_* < these flags)."""
    import uvicorn

    from stemdaq.api.app import create_app
    from stemdaq.errors import ConfigError
    from stemdaq.settings import load_settings

    # a flag left at its default must not hide the env or the YAML file: pass only given ones
    given = {name for name in ("host", "port", "data_dir") if _on_command_line(ctx, name)}
    try:
        api = {k: v for k, v in {"host": host, "port": port}.items() if k in given}
        settings = load_settings(
            config, data_dir=data_dir if "data_dir" in given else None, api=api or None, ranks=ranks
        )
    except (ConfigError, ValueError) as exc:
        typer.echo(f"stemdaq: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cluster = None
    factory = None
    if settings.ranks > 1 or settings.rank_urls:
        from stemdaq.control import close_with_app, ranked_factory

        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per status poll otherwise

        try:
            factory, cluster = ranked_factory(settings)
        except ConfigError as exc:
            typer.echo(f"stemdaq: {exc}", err=True)
            raise typer.Exit(2) from None
    app = create_app(settings, factory=factory)
    if cluster is not None:
        close_with_app(app, cluster)
    server_config = uvicorn.Config(
        app,
        host=settings.api.host,
        port=settings.api.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,
    )
    try:
        _run(server_config, on_exit=app.state.manager.end_streams)
    finally:
        if cluster is not None:
            cluster.close()


def _on_command_line(ctx: typer.Context, name: str) -> bool:
    """True if the parameter ``name`` was given on the command line (not left at its default).

    Compared by name: typer may bring its own copy of click's ``ParameterSource``.
    """
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _run(config: Any, on_exit: Any) -> None:
    """``uvicorn.Server(config).run()``, ending the event streams first on Ctrl-C/SIGTERM.

    Without that, uvicorn's shutdown waits for the open SSE responses until its graceful timeout.
    """
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            on_exit()
            super().handle_exit(sig, frame)

    Server(config).run()


def _client(url: str, token: str | None) -> Client:
    from stemdaq_client import Client

    return Client(url, token)


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


def status(
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON")] = False,
) -> None:
    """Show the service state and the current (or last) acquisition."""
    from stemdaq_client import StemdaqClientError

    try:
        with _client(url, token) as c:
            st = c.status()
    except StemdaqClientError as exc:
        raise _fail(exc) from None
    if as_json:
        sys.stdout.write(st.model_dump_json(indent=2) + "\n")
        return
    # plain "key: value" lines: nothing is cut or folded at any terminal width (paths!)
    lines = [("data dir", st.data_dir)]
    acq = st.acquisition
    if acq is not None:
        lines += [
            ("acquisition", f"{acq.id} ({acq.state.value})"),
            ("file", acq.file_path),
            (
                "frames",
                f"{acq.frames_written} / {acq.frames_expected} written, "
                f"{acq.frames_dropped} dropped",
            ),
        ]
        if not acq.state.is_final:
            lines += [
                ("rate", f"{st.frames_per_second:.0f} frames/s, {st.mb_per_second:.1f} MB/s"),
                ("queue depth", str(st.queue_depth)),
            ]
        if acq.error:
            lines.append(("error", acq.error))
    typer.echo(f"stemdaq {st.version}: {st.state}")
    for key, value in lines:
        typer.echo(f"{key + ':':<13}{value}")


@acquisition_options()
def start(
    url: Url = DEFAULT_URL,
    token: Token = None,
    metadata: MetadataOption = None,
    set_: SetOption = None,
    watch_: Annotated[
        bool, typer.Option("--watch", help="Follow the progress until the file is closed")
    ] = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Arm an acquisition (the flags given change the server's config for this acquisition
    only; every flag of ``stemdaq acquire`` is accepted); prints its id and file."""
    from stemdaq_client import StemdaqClientError

    from stemdaq.commands.files import metadata_changes

    try:
        overrides = deep_merge(settings or {}, parse_set(set_))
        if metadata is not None:
            # the file's metadata and calibration (an ELN's high tension), under the flags
            overrides = deep_merge(metadata_changes(None, metadata), overrides)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        with _client(url, token) as c:
            acq = c.arm(overrides)
            typer.echo(f"{acq.id} {acq.file_path}")
            if watch_:
                final = _follow(c, acq.id)
                raise typer.Exit(0 if final.state.value == "completed" else 1)
    except StemdaqClientError as exc:
        raise _fail(exc) from None


def stop(
    acq_id: Annotated[
        str | None, typer.Argument(help="Acquisition id (default: the running one)")
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    abort: Annotated[
        bool, typer.Option(help="Close the file now instead of finishing the series")
    ] = False,
) -> None:
    """Stop (or --abort) an acquisition."""
    from stemdaq_client import StemdaqClientError

    try:
        with _client(url, token) as c:
            if acq_id is None:
                current = c.status().acquisition
                if current is None or current.state.is_final:
                    typer.echo("no acquisition is running", err=True)
                    raise typer.Exit(1)
                acq_id = current.id
            acq = c.abort(acq_id) if abort else c.stop(acq_id)
    except StemdaqClientError as exc:
        raise _fail(exc) from None
    typer.echo(f"{acq.id} {'abort' if abort else 'stop'} requested ({acq.state.value})")


def watch(
    acq_id: Annotated[
        str | None, typer.Argument(help="Acquisition id (default: the running one)")
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Live progress bar of an acquisition until its file is closed."""
    from stemdaq_client import StemdaqClientError

    try:
        with _client(url, token) as c:
            if acq_id is None:
                current = c.status().acquisition
                if current is None:
                    typer.echo("no acquisition yet", err=True)
                    raise typer.Exit(1)
                acq_id = current.id
            final = _follow(c, acq_id)
    except StemdaqClientError as exc:
        raise _fail(exc) from None
    raise typer.Exit(0 if final.state.value == "completed" else 1)


def _follow(c: Client, acq_id: str, poll: float = 0.25) -> Acquisition:
    """Rich progress bar, polling ``GET /acquisitions/{id}`` (robust across proxies)."""
    from rich.console import Console

    from stemdaq.commands.progress import follow

    console = Console(stderr=True)
    acq = follow(lambda: c.get(acq_id), acq_id, poll, console)
    if acq.error:
        console.print(f"[red]error:[/red] {acq.error}")
    return acq


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``status``, ``start``, ``stop`` and ``watch``."""
    app.command()(serve)
    app.command()(status)
    app.command()(start)
    app.command()(stop)
    app.command()(watch)
