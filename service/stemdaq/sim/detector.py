"""The simulated DECTRIS detector: SIMPLON state machine + ZeroMQ stream, usable without HTTP.

Life cycle of a series (as on a DCU): ``arm`` sends the start message (state ``ready``); each
``trigger`` sends frames (state ``acquire``); after the last trigger the end message goes out and
the detector is ``idle`` again, so ``disarm`` afterwards is a no-op. ``disarm``/``cancel``/
``abort`` before that stop the frames and send the end message (as DECTRIS and tickit do); the
``abort_after`` fault stops without one.

Triggers: in ``ints`` each trigger gives ``nimages`` frames and the series has ``ntrigger``
triggers (``inte``: one frame per trigger). External modes (``exts``/``exte``) have no hardware
trigger here: one ``trigger`` command stands for the scan engine's whole trigger train and sends
every frame of the series.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from stemdaq.errors import ConfigError, DetectorError
from stemdaq.sim.encode import SeriesEncoder, SeriesInfo, n_frames
from stemdaq.sim.faults import Faults, Injection, InjectionLog
from stemdaq.sim.frames import FrameGenerator, default_scan_shape
from stemdaq.sim.host import SimHost
from stemdaq.sim.params import (
    BIT_DEPTH_DTYPE,
    ConfigStore,
    detector_params,
    stream_format_for,
    stream_params,
)
from stemdaq.sim.series import Series
from stemdaq.sim.stream import StreamSender

logger = logging.getLogger(__name__)

STATES = ("na", "idle", "ready", "acquire", "configure", "initialize", "error")


class SimulatedDetector(SimHost):
    """A DECTRIS-compatible detector on loopback: SIMPLON REST + stream v2/v1 over ZeroMQ PUSH.

    Parameters
    ----------
    rest_host, rest_port
        SIMPLON HTTP server address; port 0 picks a free port (see :attr:`rest_port`).
    stream_port
        ZeroMQ PUSH port, bound on ``stream_host`` (default: ``rest_host``); 0 picks a free port.
    fmt
        ``cbor`` (stream v2) or ``json``/``legacy`` (stream v1); REST ``stream/config/format``.
        Default: ``cbor``, or ``json`` for SIMPLON 1.6 (which streams v1 only).
    frame_shape, dtype, compression
        Initial detector config (``y/x_pixels_in_detector``, ``bit_depth_image``, ``compression``).
    seed
        Frames are ``generator.frame(image_id)``, deterministic from the seed.
    faults
        :class:`Faults` or its CLI string, applied to every series.
    frame_time
        Seconds per frame to pace the stream; ``None`` or 0: as fast as possible (the config's
        ``frame_time`` is then only announced, default 1 ms).
    scan_shape
        Scan shape of the synthetic sample; default: square-ish for the series' frame count.
    channels
        Stream v2 channels: ``("threshold_1",)`` or ``("threshold_1", "threshold_2")`` (also
        REST ``config/threshold/2/mode``); stream v1 carries the first only.
    simplon_version
        ``1.8.0`` or ``1.6.0`` (EIGER1-class: stream v1 only, no stream ``format`` key, so a
        ``PUT`` to it answers 404); the REST paths are ``/{module}/api/{simplon_version}/...``.
    version_endpoint
        False: ``GET /detector/api/version/`` answers 404, as on some real servers.
    """

    def __init__(
        self,
        rest_host: str = "127.0.0.1",
        rest_port: int = 0,
        stream_port: int = 0,
        fmt: str | None = None,
        frame_shape: tuple[int, int] = (96, 96),
        dtype: str = "uint16",
        compression: str = "bslz4",
        seed: int = 0,
        faults: Faults | str | None = None,
        frame_time: float | None = None,
        scan_shape: tuple[int, int] | None = None,
        channels: tuple[str, ...] = ("threshold_1",),
        header_detail: str = "basic",
        split_header: bool = False,
        stream_host: str | None = None,
        simplon_version: str = "1.8.0",
        version_endpoint: bool = True,
    ) -> None:
        if dtype not in BIT_DEPTH_DTYPE.values():
            raise ConfigError(f"dtype {dtype!r} not one of {sorted(BIT_DEPTH_DTYPE.values())}")
        super().__init__(rest_host, rest_port, stream_port, stream_host)
        self._fixed_format = stream_format_for(simplon_version, fmt)
        self.simplon_version = simplon_version
        self.version_endpoint = version_endpoint
        self.seed = seed
        self.faults = Faults.parse(faults)
        self.paced = bool(frame_time)
        self.scan_shape = scan_shape
        self.split_header = split_header
        self.config = ConfigStore(
            detector_params(
                (int(frame_shape[0]), int(frame_shape[1])), dtype, compression, frame_time or 0.001
            )
        )
        self.stream_config = ConfigStore(stream_params(simplon_version))
        if "format" in self.stream_config.params:
            self.stream_config.set("format", self._fixed_format)
        self.stream_config.set("header_detail", header_detail)
        # SIMPLON threshold/{n}/mode; each enabled threshold is one stream v2 channel
        self.threshold_modes = {n: "enabled" if n <= len(channels) else "disabled" for n in (1, 2)}
        self.log = InjectionLog()
        self.sequence_id = 0
        self._state = "idle"
        self._series: Series | None = None
        self._generator: FrameGenerator | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> SimulatedDetector:
        """Bind the stream socket and start the REST server (returns immediately).

        Raises
        ------
        BindError
            A port is taken (or not allowed); nothing is left open.
        """
        from stemdaq.sim.simplon import create_simplon_app

        # a blocked send waits, it never drops: the HWM only bounds the memory queued for a slow
        # receiver (about 1 GiB of raw frames, 64 .. 100000 messages)
        cfg = self.config.values()
        frame_bytes = (
            cfg["x_pixels_in_detector"] * cfg["y_pixels_in_detector"] * cfg["bit_depth_image"] // 8
        )
        hwm = max(64, min(100_000, (1 << 30) // max(1, frame_bytes)))
        self._open(create_simplon_app(self), hwm)
        logger.info(
            "simulated detector: SIMPLON %s %s, stream %s",
            self.simplon_version,
            self.rest_url,
            self.stream_endpoint,
        )
        return self

    def stop(self) -> None:
        """Stop sending, shut the REST server down, close the socket."""
        with self._lock:
            if self._series is not None:
                self._series.cancelled.set()
        self._close()

    def __enter__(self) -> SimulatedDetector:
        self.start()
        self.wait_for_listen()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record_error(self, exc: BaseException) -> None:
        with self._lock:
            super()._record_error(exc)
            self._state = "error"

    # -- status ---------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """SIMPLON detector state: idle, ready, acquire, error."""
        return self._state

    @property
    def stream_format(self) -> str:
        """``cbor`` (stream v2) or ``json``/``legacy`` (stream v1): the stream ``format`` key,
        or ``json`` where there is none (SIMPLON 1.6)."""
        if "format" in self.stream_config.params:
            return str(self.stream_config["format"])
        return self._fixed_format

    @property
    def stream_state(self) -> str:
        """SIMPLON stream state: disabled, ready, acquire, error."""
        if self.stream_config["mode"] != "enabled":
            return "disabled"
        return {"acquire": "acquire", "error": "error"}.get(self._state, "ready")

    @property
    def dropped(self) -> int:
        """Messages the stream gave up on (cancelled while the receiver was not taking them)."""
        return self._sender.dropped if self._sender is not None else 0

    @property
    def injected(self) -> list[Injection]:
        """Faults applied so far, in order."""
        return self.log.snapshot()

    @property
    def generator(self) -> FrameGenerator:
        """The frame generator of the current (or last) series: ``generator.frame(image_id)``."""
        if self._generator is None:
            self._generator = self._make_generator(n_frames(self.config.values()))
        return self._generator

    def _make_generator(self, n: int) -> FrameGenerator:
        cfg = self.config.values()
        shape = (int(cfg["y_pixels_in_detector"]), int(cfg["x_pixels_in_detector"]))
        dtype = BIT_DEPTH_DTYPE[int(cfg["bit_depth_image"])]
        scan = tuple(self.scan_shape) if self.scan_shape else default_scan_shape(n)
        bend = (float(cfg["sim_deflection_x"]), float(cfg["sim_deflection_y"]))
        key = (shape, dtype, scan, bend)
        g = self._generator
        if g is not None and (g.frame_shape, g.dtype.name, g.scan_shape, g.deflection) == key:
            return g
        return FrameGenerator(shape, dtype, scan, self.seed, deflection=bend)  # type: ignore[arg-type]

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until the series is over and every queued message has been sent."""
        deadline = time.monotonic() + timeout
        while self._state not in ("idle", "error") or (
            self._sender is not None and self._sender.busy
        ):
            if time.monotonic() > deadline:
                raise DetectorError(f"simulator still {self._state} after {timeout} s")
            time.sleep(0.002)
        self.maybe_raise()

    # -- commands -------------------------------------------------------------------------------

    def configure(self, **values: Any) -> list[str]:
        """Set detector config values (SIMPLON names); returns the changed names."""
        changed: list[str] = []
        for name, value in values.items():
            changed += [c for c in self.config.set(name, value) if c not in changed]
        return changed

    def arm(self) -> int:
        """Arm: queue the start message; returns the sequence id (= the stream's series id)."""
        with self._lock:
            if self._state != "idle":
                raise DetectorError(f"cannot arm in state {self._state!r}")
            sender = self._require_sender()
            cfg = self.config.values()
            n = n_frames(cfg)
            self._generator = self._make_generator(n)
            self.sequence_id += 1
            channels = tuple(
                f"threshold_{k}"
                for k, mode in sorted(self.threshold_modes.items())
                if mode == "enabled"
            )
            info = SeriesInfo(
                series_id=self.sequence_id,
                n_images=n,
                config=cfg,
                fmt=self.stream_format,
                header_detail=self.stream_config["header_detail"],
                split_header=self.split_header,
                channels=channels or ("threshold_1",),
                user_data={"seed": self.seed, "scan_shape": list(self._generator.scan_shape)},
                header_appendix=self.stream_config["header_appendix"],
                image_appendix=self.stream_config["image_appendix"],
            )
            series = Series(SeriesEncoder(info, self._generator, self.faults, self.log))
            self._series = series
            self._state = "ready"
            enabled = self.stream_config["mode"] == "enabled"
        if enabled:
            sender.submit(series.send_start)
        return self.sequence_id

    def trigger(self) -> None:
        """One trigger: queue the frames it produces (and the end message after the last)."""
        with self._lock:
            series = self._series
            if (
                series is None
                or self._state not in ("ready", "acquire")
                or series.triggers_left <= 0
            ):
                raise DetectorError(f"cannot trigger in state {self._state!r} (arm first)")
            ids, last = series.next_trigger()
            self._state = "acquire"
            sender = self._require_sender()
            pace = float(series.encoder.info.config["frame_time"]) if self.paced else 0.0
        sender.submit(lambda s: self._send_frames(s, series, ids, pace, last))
        if last:
            self._queue_end(series)

    def disarm(self) -> int:
        """End the series now (the end message goes out); no-op when idle."""
        return self._close_series()

    def cancel(self) -> int:
        """Like :meth:`disarm`."""
        return self._close_series()

    def abort(self) -> int:
        """Stop the frames at once; the end message is still sent (DECTRIS, tickit)."""
        return self._close_series()

    def initialize(self) -> int:
        """Reset to ``idle`` (a running series is aborted) and clear an error state."""
        seq = self._close_series()
        with self._lock:
            self._errors.clear()
            self._state = "idle"
        return seq

    def run_series(
        self, n_images: int, timeout: float = 60.0, wait: bool = True, **config: Any
    ) -> int:
        """Configure ``ints`` x ``n_images`` (plus ``config``), arm, trigger; wait until sent."""
        self.configure(trigger_mode="ints", ntrigger=1, nimages=n_images, **config)
        seq = self.arm()
        self.trigger()
        if wait:
            self.wait_idle(timeout)
        return seq

    # -- internals ------------------------------------------------------------------------------

    def _close_series(self) -> int:
        with self._lock:
            series = self._series
            if series is None:
                return self.sequence_id
            series.cancelled.set()
            self._state = "idle"
            self._series = None
        self._queue_end(series)
        return self.sequence_id

    def _queue_end(self, series: Series) -> None:
        with self._lock:
            if series.end_queued:
                return
            series.end_queued = True
        self._require_sender().submit(lambda s: self._send_end(s, series))

    def _send_frames(
        self, sender: StreamSender, series: Series, ids: list[int], pace: float, last: bool
    ) -> None:
        enabled = self.stream_config["mode"] == "enabled"
        done = series.send_frames(sender, ids, pace, enabled, self.log)
        with self._lock:
            if self._series is not series:
                return
            if series.fault_aborted:
                self._series, self._state = None, "idle"
            elif done and not last:
                self._state = "ready"

    def _send_end(self, sender: StreamSender, series: Series) -> None:
        series.send_end(sender, self.stream_config["mode"] == "enabled")
        with self._lock:
            if self._series is series:
                self._series, self._state = None, "idle"
