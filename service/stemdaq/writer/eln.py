"""The ELN sidecar: ``<name>.eln_data.yaml`` next to each closed file, for NOMAD/pynxtools-em.

It holds what stemdaq knows (entry, project, sample, users, microscope, beam energy, dwell
time, detector) in the pynxtools-em ELN convention (:mod:`stemdaq.eln`), so the metadata can
be edited in NOMAD's ELN and converted again, and :func:`stemdaq.eln.load_metadata_file` reads
it back into the same :class:`~stemdaq.config.UserMetadata`. Times, the beam energy and
``is_simulation`` are read from the closed file, so they are what the file says.

Written atomically (a hidden temporary file in the same folder, fsynced, then hard-linked to
its name) and never over an existing file. Best effort: a sidecar that cannot be written is a
logged warning, never a failed acquisition.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from stemdaq.config import AcquisitionConfig
from stemdaq.eln import ELN_SUFFIX, to_eln
from stemdaq.models import DetectorInfo

logger = logging.getLogger(__name__)

_SOURCE = "/entry/measurement/instrument/ebeam_column/electron_source/voltage"


def sidecar_path(final_path: Path) -> Path:
    """``scan.nxs`` -> ``scan.eln_data.yaml`` (same folder)."""
    return final_path.with_name(final_path.stem + ELN_SUFFIX)


def write_eln_sidecar(
    final_path: Path,
    config: AcquisitionConfig,
    detector: DetectorInfo | None,
    *,
    overwrite: bool = False,
) -> Path | None:
    """Write ``<name>.eln_data.yaml`` beside the closed file ``final_path``.

    ``overwrite`` (for a data file written with ``--overwrite``) replaces an existing sidecar
    atomically; without it an existing one is never replaced.

    Returns
    -------
    Path or None
        The sidecar written; None when it exists already (kept), when ``final_path`` is a
        ``.partial`` (no final file) or when it could not be written (a logged warning).
    """
    final_path = Path(final_path)
    if final_path.suffix == ".partial":
        return None
    target = sidecar_path(final_path)
    try:
        facts = _file_facts(final_path)
        beam = facts.get("voltage") or config.calibration.beam_energy
        if beam is None and detector is not None and (detector.incident_energy or 0) > 0:
            beam = detector.incident_energy
        doc = to_eln(
            config.metadata,
            beam_energy=beam,
            is_simulation=facts.get("is_simulation", config.is_simulation),
            start_time=facts.get("start_time"),
            end_time=facts.get("end_time"),
            detector=detector,
        )
        return _write_new(target, _render(doc, final_path.name), overwrite)
    except (OSError, ValueError) as exc:
        logger.warning("ELN sidecar %s not written: %s", target, exc)
        return None


def _render(doc: dict[str, Any], data_file: str) -> str:
    import yaml

    from stemdaq.writer.metadata import program_version

    head = (
        f"# ELN data of {data_file}, written by stemdaq {program_version()}\n"
        "# pynxtools-em ELN convention (eln_data.yaml): entry, project, sample, user; "
        "instrument, electron_source, scan_controller, detector as stemdaq knew them\n"
    )
    return head + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def _file_facts(path: Path) -> dict[str, Any]:
    """start/end time, is_simulation and beam voltage as the closed file records them."""
    import h5py

    facts: dict[str, Any] = {}
    try:
        with h5py.File(path, "r") as f:
            for key, where in (
                ("start_time", "/entry/start_time"),
                ("end_time", "/entry/end_time"),
                ("is_simulation", "/entry/sample/is_simulation"),
                ("voltage", _SOURCE),
            ):
                node = f.get(where)
                if isinstance(node, h5py.Dataset) and node.shape == ():
                    value = node[()]
                    facts[key] = value.decode() if isinstance(value, bytes) else value.item()
    except OSError as exc:  # the sidecar then says what the config says
        logger.debug("%s not read for its sidecar: %s", path, exc)
    return facts


def _write_new(target: Path, text: str, overwrite: bool = False) -> Path | None:
    """``text`` into ``target`` atomically; None (and a warning) if ``target`` exists, unless
    ``overwrite``."""
    if not overwrite and os.path.lexists(target):
        logger.warning("ELN sidecar %s exists; not replaced", target)
        return None
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if overwrite:
            os.replace(tmp, target)
            _sync_dir(target.parent)
            return target
        try:
            os.link(tmp, target)  # fails if the name exists: never clobbers
        except FileExistsError:
            logger.warning("ELN sidecar %s appeared meanwhile; not replaced", target)
            return None
        except OSError:  # a file system without hard links: check, then rename
            if os.path.lexists(target):
                return None
            os.rename(tmp, target)
        _sync_dir(target.parent)
        return target
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _sync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["sidecar_path", "write_eln_sidecar"]
