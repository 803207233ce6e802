"""Checks made before anything irreversible (creating the file, arming the detector).

Each check raises a :mod:`stemdaq.errors` exception with one readable message that names what
is wrong and what to change: the API maps it to 4xx/507, the CLI to exit code 2.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from stemdaq.config import BOOKKEEPING_BYTES_PER_POSITION, AcquisitionConfig
from stemdaq.errors import ConfigError, PathError, StorageError, StreamError
from stemdaq.models import DetectorInfo

logger = logging.getLogger(__name__)

#: share of the machine's RAM the per-position bookkeeping of one acquisition may take
MAX_RAM_SHARE = 0.25
_CONNECT_TIMEOUT = 3.0  # seconds for the TCP check of the stream endpoint


def physical_memory() -> int | None:
    """Bytes of RAM of this machine, None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config: AcquisitionConfig) -> None:
    """Refuse a scan whose bookkeeping would take more than a quarter of the machine's RAM."""
    ram = physical_memory()
    need = config.n_positions * BOOKKEEPING_BYTES_PER_POSITION
    if ram is not None and need > MAX_RAM_SHARE * ram:
        raise ConfigError(
            f"scan_shape {list(config.scan_shape)} ({config.n_positions:,} positions) needs "
            f"{need / 2**30:.2f} GiB of RAM for its bookkeeping, more than "
            f"{MAX_RAM_SHARE:.0%} of this machine's {ram / 2**30:.1f} GiB"
        )


def check_output(path: Path) -> None:
    """The output's folder exists (or can be made), is a folder and is writable."""
    path = Path(path)
    if path.is_dir():
        raise PathError(f"{path} is a directory, not a file name")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PathError(f"cannot create the folder {folder}: {exc.strerror or exc}") from None
    if not folder.is_dir():
        raise PathError(f"{folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PathError(f"cannot write into {folder} (permission denied)")


def estimated_bytes(config: AcquisitionConfig, frame_bytes: int, channels: int = 1) -> int:
    """The file's size as estimated before arming: frames / assumed compression ratio."""
    return int(config.n_positions * channels * frame_bytes / config.assumed_compression_ratio)


def check_space(config: AcquisitionConfig, folder: Path, frame_bytes: int | None) -> int:
    """Free space covers the estimated file plus ``min_free_mb``; returns the free bytes.

    Without a frame size (passive mode before the first frame) only ``min_free_mb`` is checked.
    """
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    reserve = int(config.min_free_mb * 1e6)
    need = reserve + (estimated_bytes(config, frame_bytes) if frame_bytes else 0)
    if free < need:
        what = (
            f"the file is estimated at {estimated_bytes(config, frame_bytes) / 1e9:.3f} GB "
            f"({config.n_positions:,} frames of {frame_bytes:,} bytes at an assumed "
            f"compression ratio of {config.assumed_compression_ratio:g}), plus min_free_mb "
            f"({config.min_free_mb:g} MB) to keep free"
            if frame_bytes
            else f"min_free_mb ({config.min_free_mb:g} MB) must stay free (the file's size is "
            "estimated once the first frame shows the frame size)"
        )
        raise StorageError(
            f"not enough free space in {folder}: {free / 1e9:.3f} GB free, {what}; free some "
            "space, or lower min_free_mb / raise assumed_compression_ratio if you know better"
        )
    return free


def _host_port(endpoint: str) -> tuple[str, int] | None:
    """(host, port) of a ``tcp://`` endpoint; None for other transports."""
    parts = urlsplit(endpoint)
    if parts.scheme != "tcp":
        return None
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.hostname == "*":
        raise StreamError(f"stream endpoint {endpoint!r} has no host:port to connect to")
    return parts.hostname, port


def check_stream(endpoint: str, timeout: float = _CONNECT_TIMEOUT) -> None:
    """Something listens at the stream endpoint (a TCP connect, closed at once).

    ZeroMQ's own connect never fails (it retries in the background), so an endpoint where
    nothing listens would only show up as a series that never starts.
    """
    if endpoint.startswith("ipc://"):
        if not os.path.exists(endpoint.removeprefix("ipc://")):
            raise StreamError(f"stream endpoint {endpoint}: no such socket file")
        return
    target = _host_port(endpoint)
    if target is None:
        return  # inproc:// and the like: nothing to check from here
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as exc:
        raise StreamError(
            f"stream endpoint {endpoint} is unreachable ({exc.strerror or exc}): nothing "
            "listens there; check stream_endpoint (or the detector's stream settings)"
        ) from None


def detector_frame_bytes(detector: object) -> int | None:
    """Bytes of one raw frame as the detector is configured (SIMPLON ``x/y_pixels_in_detector``
    and ``bit_depth_image``), None when it does not say."""
    get = getattr(detector, "get_config", None)
    if get is None:
        return None
    try:
        nx = int(get("detector", "x_pixels_in_detector"))
        ny = int(get("detector", "y_pixels_in_detector"))
        bits = int(get("detector", "bit_depth_image"))
    except Exception as exc:  # an older or partial SIMPLON: the check waits for the first frame
        logger.info("frame size not read from the detector (%s); checked at the first frame", exc)
        return None
    return nx * ny * max(1, (bits + 7) // 8) if nx > 0 and ny > 0 else None


#: SIMPLON detector config keys read before arming, as DetectorInfo fields
CALIBRATION_KEYS = {
    "detector_distance": "detector_distance",
    "incident_energy": "incident_energy",
    "x_pixel_size": "pixel_size_x",
    "y_pixel_size": "pixel_size_y",
    "beam_center_x": "beam_center_x",
    "beam_center_y": "beam_center_y",
}


def detector_calibration(detector: object) -> DetectorInfo:
    """What the detector's SIMPLON config says about the geometry (missing keys left out)."""
    get = getattr(detector, "get_config", None)
    values: dict[str, float] = {}
    if get is not None:
        for key, field in CALIBRATION_KEYS.items():
            try:
                value = get("detector", key)
            except Exception:  # a detector without the key: the stream or the config decides
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[field] = float(value)
    return DetectorInfo(**values)


def check_before_detector(config: AcquisitionConfig, file_path: Path) -> None:
    """The checks that need no detector: memory, the output, the stream endpoint (in order)."""
    check_memory(config)
    check_output(file_path)
    check_stream(config.resolved_stream_endpoint())


def check_with_detector(
    config: AcquisitionConfig, file_path: Path, detector: object | None
) -> DetectorInfo | None:
    """Free space for the file (its size from the detector's frame size in active mode);
    returns the calibration the detector's config gives (None in passive mode)."""
    frame_bytes, calibration = None, None
    if detector is not None:
        frame_bytes = detector_frame_bytes(detector)
        calibration = detector_calibration(detector)
    check_space(config, file_path.parent, frame_bytes)
    return calibration
