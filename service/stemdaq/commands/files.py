"""``stemdaq acquire``: one acquisition into one file, no server."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from stemdaq.commands.options import (
    SetOption,
    acquisition_options,
    deep_merge,
    parse_set,
)
from stemdaq.commands.progress import follow
from stemdaq.config import AcquisitionConfig
from stemdaq.errors import StemdaqError
from stemdaq.models import AcquisitionInfo, AcquisitionState

logger = logging.getLogger(__name__)


def parse_pair(text: str, kind: type = int, sep: str = "x") -> tuple[Any, Any]:
    """``"64x32"`` -> ``(64, 32)``; a single number applies to both."""
    parts = [p for p in text.lower().replace(",", sep).split(sep) if p]
    try:
        values = [kind(p) for p in parts]
    except ValueError:
        raise typer.BadParameter(f"expected N{sep}M, got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2:
        raise typer.BadParameter(f"expected N{sep}M, got {text!r}")
    return values[0], values[1]


def summary_lines(info: AcquisitionInfo) -> list[str]:
    """The end-of-acquisition summary as ``key: value`` lines (nothing cut at any width)."""
    c = info.counters
    rows: list[tuple[str, str]] = [
        ("file", info.file_path),
        ("frames expected", str(c.frames_expected)),
        ("frames written", str(c.frames_written)),
        ("gaps", f"{c.gaps} (positions without a frame)"),
        ("never received", str(c.frames_missing)),
        ("frames dropped", str(c.frames_dropped)),
    ]
    rows += [(f"  dropped: {reason}", str(n)) for reason, n in sorted(c.dropped.items()) if n]
    rows += [
        ("messages ignored", str(c.messages_ignored)),
        ("bytes written", f"{c.bytes_written / 1e6:.1f} MB"),
    ]
    if info.elapsed_seconds > 0:
        rows.append(("rate", f"{c.frames_written / info.elapsed_seconds:.0f} frames/s (average)"))
    rows += [("warning", w) for w in info.warnings]
    if info.error:
        rows.append(("error", info.error))
    width = max(len(k) for k, _ in rows)
    head = f"acquisition {info.id}: {info.state.value}"
    return [head, *(f"{k:<{width}}  {v}" for k, v in rows)]


def frames_lost(info: AcquisitionInfo) -> bool:
    """True if the file lacks any frame the scan should have."""
    return (
        info.state is not AcquisitionState.COMPLETED
        or info.counters.frames_written < info.frames_expected
    )


@acquisition_options(exclude=frozenset({"file_template"}))
def acquire(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output NeXus file")],
    metadata: Annotated[
        Path | None,
        typer.Option(
            help="YAML/JSON file with user metadata (sample, users, microscope, ...): stemdaq's "
            "format or a pynxtools-em/NOMAD eln_data.yaml"
        ),
    ] = None,
    site_metadata: Annotated[
        Path | None,
        typer.Option(
            envvar="STEMDAQ_SITE_METADATA",
            help="YAML/JSON file of what is fixed at this site (microscope vendor, model, serial "
            "number, emitter type, location, beam energy); --metadata and the flags override it",
        ),
    ] = None,
    set_: SetOption = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Replace --out if it exists (at the end, once the new file is closed). "
            "An existing <out>.partial is never replaced"
        ),
    ] = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Record one acquisition into one file (no server needed).

    --detector alone: configure, arm and trigger the detector over SIMPLON and read its stream
    on port 31001; --stream alone: wait for a series someone else starts; both: control one
    and read the other. Ctrl-C once stops (the detector ends the series, what was recorded is
    kept), twice aborts. Exits 0 when every position is in the file, 1 when the acquisition ran
    but the file is not complete (gaps, stopped, aborted, failed), 2 when it was refused before
    anything started (bad settings, existing output, no space, stream unreachable).
    """
    from stemdaq.acquisition import Acquisition

    try:
        values = deep_merge(metadata_changes(site_metadata, metadata), settings or {})
        values = deep_merge(values, parse_set(set_))
        if not values.get("detector_url") and not values.get("stream_endpoint"):
            raise typer.BadParameter("give --detector, --stream or both")
        config = AcquisitionConfig.model_validate(values)
    except (ValueError, StemdaqError) as exc:
        raise typer.BadParameter(_one_line(exc)) from None
    console = Console(stderr=True)
    acq = Acquisition(config, out, acq_id=out.stem, overwrite=overwrite)
    interrupts = 0

    def on_interrupt(*_: object) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            console.print("[yellow]stopping (Ctrl-C again to abort)[/yellow]")
            acq.stop()
        else:
            acq.abort()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        try:
            acq.start()
        except StemdaqError as exc:
            typer.echo(f"error: {exc}", err=True)  # one line, never wrapped or cut
            acq.close()
            if not acq.detector_was_armed:  # refused before anything irreversible
                raise typer.Exit(2) from None
            # armed, then failed: it ran, and the summary says how it ended
            sys.stdout.write("\n".join(summary_lines(acq.info())) + "\n")
            raise typer.Exit(1) from None
        follow(acq.info, "acquisition", console=console, wait=acq.wait)
        acq.close()
    finally:
        signal.signal(signal.SIGINT, previous)
    info = acq.info()
    sys.stdout.write("\n".join(summary_lines(info)) + "\n")
    raise typer.Exit(1 if frames_lost(info) else 0)


def _one_line(exc: Exception) -> str:
    """A pydantic error as one readable line per field, without its URLs."""
    from pydantic import ValidationError

    from stemdaq.config import format_validation_error

    if isinstance(exc, ValidationError):
        return format_validation_error(exc).removeprefix("invalid settings: ")
    return str(exc)


def load_metadata(path: Path | None) -> dict[str, Any]:
    """The ``metadata`` settings from a metadata file (stemdaq's format or a pynxtools-em
    ``eln_data.yaml``), validated; :func:`metadata_changes` also gives its calibration.

    Raises
    ------
    ConfigError
        One line naming the file and each invalid field.
    """
    if path is None:
        return {}
    changes = metadata_changes(None, path)
    if "calibration" in changes:
        logger.warning("%s: calibration %s not applied here", path, changes["calibration"])
    return dict(changes.get("metadata", {}))


def metadata_changes(site: Path | None, path: Path | None) -> dict[str, Any]:
    """Config changes from the site file under those of the acquisition's metadata file.

    Raises
    ------
    ConfigError
        One line naming the file and each invalid field.
    """
    from stemdaq.eln import load_metadata_file

    base = load_metadata_file(site) if site is not None else {}
    return deep_merge(base, load_metadata_file(path) if path is not None else {})


def register(app: typer.Typer) -> None:
    """Add ``acquire``."""
    app.command()(acquire)


__all__ = [
    "acquire",
    "register",
    "frames_lost",
    "load_metadata",
    "metadata_changes",
    "summary_lines",
    "parse_pair",
]
