"""``stemdaq inspect``: what is in an acquisition file, and whether it is whole.

The file is read in a child process with a time bound (:func:`stemdaq.writer.probe.probe_file`):
a damaged file cannot hang or crash the command, and no traceback reaches the user.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

if TYPE_CHECKING:
    from stemdaq.writer.probe import FileProbe, Verify
    from stemdaq.writer.probe_reader import ImageProbe

WIDTH = 80


def inspect(
    file: Annotated[Path, typer.Argument(help="NeXus file written by stemdaq (or its .partial)")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.5, help="Seconds before giving up on the file")
    ] = 30.0,
    verify: Annotated[
        str,
        typer.Option(
            "--verify",
            help="index: every written frame has its chunk; sample: and a sample of frames "
            "decodes (first, last, 16 spread); all: every written frame decodes",
        ),
    ] = "sample",
) -> None:
    """Summarise a file and check that its data are whole.

    Exits 0 when the layout is right and every scan position is written and verified, 1 when the
    layout is broken or the data are incomplete (gaps, aborted, failed, not closed, frames that
    do not read back), 2 when the file cannot be read (not HDF5, damaged, timed out).
    """
    from stemdaq.writer.probe import VERIFY_MODES, probe_file

    if verify not in VERIFY_MODES:
        typer.echo(f"error: --verify must be one of {', '.join(VERIFY_MODES)}", err=True)
        raise typer.Exit(2)
    probe = probe_file(file, timeout=timeout, verify=cast("Verify", verify), layout=True)
    code, why = probe.verdict()
    if as_json:
        details = probe.to_json()
        details.pop("layout", None)
        out: dict[str, Any] = {"path": str(file)}
        if probe.layout is not None:
            out = probe.layout.to_json()
        out.update(exit_code=code, verdict=why, readable=probe.readable, error=probe.error)
        out["probe"] = details
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        sys.stdout.write("\n".join(render(probe, WIDTH)) + "\n")
    if code == 2:
        typer.echo(f"error: cannot read {file}: {probe.error}", err=True)
    raise typer.Exit(code)


def render(probe: FileProbe, width: int = WIDTH) -> list[str]:
    """Plain-text report: a head block, then one ``key: value`` block per NXdata."""
    from stemdaq.writer.inspect import wrap

    code, why = probe.verdict()
    head = [f"file: {probe.path}", f"verdict: {why}"]
    if probe.opened_swmr:
        head.append(f"opened: in SWMR mode only; a plain open says: {probe.open_note}")
    if probe.state_read:
        head.append(f"state: {probe.state or 'none recorded (not closed by stemdaq)'}")
    if code == 2 and probe.stage:
        head.append(f"stopped while: {probe.stage}")
    if probe.stored_error:
        head.append(f"error in the file: {probe.stored_error}")
    head += [f"warning in the file: {w}" for w in probe.stored_warnings]
    if probe.layout is not None:
        n = len(probe.layout.problems)
        head.append(f"layout: {'OK' if not n else f'broken, {n} problem(s) listed below'}")
    out = [ln for text in head for ln in wrap(text, width)]
    blocks = {im.dataset.rsplit("/", 1)[0]: _frame_rows(im) for im in probe.images}
    if probe.layout is not None:
        return out + probe.layout.lines(width, head=False, extra=blocks)
    for im in probe.images:  # the reader stopped before the layout check
        rows = [("frames", f"{im.frames_claimed} written of {im.positions}")]
        rows += blocks[im.dataset.rsplit("/", 1)[0]]
        out += ["", im.dataset.rsplit("/", 1)[0]]
        out += [ln for key, value in rows for ln in wrap(f"{key}: {value}", width, indent="  ")]
    return out


def _frame_rows(im: ImageProbe) -> list[tuple[str, str]]:
    rows = [("in the chunk index", "not checked")]
    if im.frames_verified is not None:
        rows = [("in the chunk index", f"{im.frames_verified} of {im.frames_claimed} written")]
    if im.verified_by in ("sample", "all"):
        rows.append((f"decoded ({im.verified_by})", f"{im.frames_decoded} frames"))
    if im.unreadable:
        where = ", ".join(f"[{m}, {k}]" for m, k in im.unreadable_positions)
        more = " ..." if im.unreadable > len(im.unreadable_positions) else ""
        rows.append(("unreadable", f"{im.unreadable} at {where}{more}"))
    if im.unclaimed_chunks:
        rows.append(("frames after the last bookkeeping flush", str(im.unclaimed_chunks)))
    return rows


def register(app: typer.Typer) -> None:
    """Add ``inspect``."""
    app.command()(inspect)
