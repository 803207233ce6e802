"""The shared vocabulary of stemdaq: what flows from the stream to the file and to the API.

Hot-path types (:class:`Frame`, the stream events) are slotted dataclasses: one is made per
frame, so they must be cheap. Everything that crosses the HTTP boundary or the file's metadata
is a pydantic model with field descriptions, so the OpenAPI document explains itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Codec(str, enum.Enum):
    """How a frame's payload is encoded as it arrives from the stream.

    ``BSLZ4`` and ``LZ4`` payloads always carry the HDF5 filter framing (the 12-byte bitshuffle
    header, or the 16-byte HDF5-LZ4 header + block sizes), so they can be written to a dataset
    with the matching filter by direct chunk write, unchanged.
    """

    RAW = "raw"
    BSLZ4 = "bslz4"
    LZ4 = "lz4"


class DropReason(str, enum.Enum):
    """Why a frame (or a whole message) did not reach the file.

    Every reason is a label of the ``stemdaq_frames_dropped_total`` counter and a key of
    :attr:`Counters.dropped`.
    """

    MALFORMED = "malformed"  # not a valid stream message (bad CBOR/JSON, missing keys)
    CORRUPT = "corrupt"  # payload cannot be decoded (bad length, bad compression framing)
    WRONG_SHAPE = "wrong_shape"  # shape/dtype differs from the series' start message
    OUT_OF_RANGE = "out_of_range"  # frame id beyond the scan size
    DUPLICATE = "duplicate"  # second copy of a frame already written
    WRONG_SERIES = "wrong_series"  # belongs to another series than the current one
    NO_SERIES = "no_series"  # image arrived while no series was open (stray after abort)
    WRITE_ERROR = "write_error"  # HDF5 refused the write
    ABORTED = "aborted"  # arrived after the acquisition was aborted / closed
    UNKNOWN_CHANNEL = "unknown_channel"  # channel not recorded by the configuration


#: drops that are not one of the scan's expected frames (extra copies, strays, other channels)
EXTRA_DROPS = frozenset(
    {
        DropReason.DUPLICATE.value,
        DropReason.OUT_OF_RANGE.value,
        DropReason.NO_SERIES.value,
        DropReason.UNKNOWN_CHANNEL.value,
    }
)


# ---------------------------------------------------------------------------------------------
# Stream events: what a decoder yields, in stream order
# ---------------------------------------------------------------------------------------------


class DetectorInfo(BaseModel):
    """Detector description as announced by the stream (v2 ``start`` / v1 config part).

    Units are SI except where the name says otherwise; every field is optional because
    senders differ in what they announce.
    """

    model_config = ConfigDict(extra="allow")

    description: str | None = Field(
        None, description="Detector model, e.g. 'Dectris ARINA Si 192x192'"
    )
    serial_number: str | None = Field(None, description="Detector serial number")
    software_version: str | None = Field(None, description="Detector firmware/software version")
    pixel_size_x: float | None = Field(None, description="Pixel pitch along x, m")
    pixel_size_y: float | None = Field(None, description="Pixel pitch along y, m")
    sensor_material: str | None = Field(None, description="Sensor material, e.g. 'Si'")
    sensor_thickness: float | None = Field(None, description="Sensor thickness, m")
    bit_depth_image: int | None = Field(None, description="Bits per pixel of the images")
    count_time: float | None = Field(None, description="Exposure per frame, s")
    frame_time: float | None = Field(None, description="Frame period, s")
    beam_center_x: float | None = Field(None, description="Beam centre x, pixels")
    beam_center_y: float | None = Field(None, description="Beam centre y, pixels")
    incident_energy: float | None = Field(None, description="Incident energy, eV")
    incident_wavelength: float | None = Field(None, description="Incident wavelength, angstrom")
    detector_distance: float | None = Field(None, description="Detector distance, m")
    saturation_value: int | None = Field(None, description="Counts at which a pixel saturates")
    threshold_energy: dict[str, float] | None = Field(None, description="Threshold per channel, eV")
    compression: str | None = Field(None, description="Compression announced by the detector")


@dataclass(slots=True)
class SeriesStart:
    """A series begins (stream v2 ``start``, stream v1 ``dheader-1.0`` + config)."""

    series_id: int
    protocol: Literal["stream2", "stream1"]
    unique_id: str | None = None
    n_images: int | None = None  # None when the header does not say (v1 header_detail none)
    frame_shape: tuple[int, int] | None = None  # (ny, nx), numpy order
    dtype: str | None = None  # "uint8" | "uint16" | "uint32" | "float32"
    channels: tuple[str, ...] = ()
    detector: DetectorInfo = field(default_factory=DetectorInfo)
    raw: dict[str, Any] = field(default_factory=dict)  # the remaining header fields, for the file


@dataclass(slots=True)
class Frame:
    """One detector image of one channel, still encoded as it came off the wire.

    ``payload`` is a zero-copy view where the transport allows it. For ``Codec.RAW`` it holds
    ``ny*nx*itemsize`` little-endian bytes; for ``BSLZ4``/``LZ4`` the HDF5-framed chunk.
    Times are seconds since the series' arm (``None`` when the stream does not give them).
    """

    series_id: int
    frame_id: int
    channel: str
    shape: tuple[int, int]
    dtype: str
    codec: Codec
    payload: bytes | memoryview
    start_time: float | None = None
    stop_time: float | None = None
    real_time: float | None = None


@dataclass(slots=True)
class SeriesEnd:
    """A series ends (v2 ``end``, v1 ``dseries_end-1.0``)."""

    series_id: int


@dataclass(slots=True)
class Rejected:
    """A message, or one frame of it, that the decoder could not accept.

    The receiver counts it under ``reason`` and logs ``detail``; it never raises.
    """

    reason: DropReason
    detail: str
    series_id: int | None = None
    frame_id: int | None = None


StreamEvent = SeriesStart | Frame | SeriesEnd | Rejected


# ---------------------------------------------------------------------------------------------
# Acquisition state and progress, shared by the engine, the CLI and the API
# ---------------------------------------------------------------------------------------------


class AcquisitionState(str, enum.Enum):
    """Life cycle of one acquisition."""

    ARMED = "armed"  # file reserved, waiting for the series to start
    ACQUIRING = "acquiring"  # frames are arriving
    FINISHING = "finishing"  # end seen / stop requested: draining the queue, closing the file
    COMPLETED = "completed"  # file closed and renamed; every scan position written
    # the series ended (end message, end timeout, or stop) but positions are missing or the end
    # message never came: the file is whole and closed, ``warnings`` and the file say what is not
    COMPLETED_WITH_GAPS = "completed_with_gaps"
    ABORTED = "aborted"  # closed early on request; gaps are marked in the file
    FAILED = "failed"  # closed because of an error (see ``error``)

    @property
    def is_final(self) -> bool:
        """True once the file is closed and nothing will change any more."""
        return self in (
            AcquisitionState.COMPLETED,
            AcquisitionState.COMPLETED_WITH_GAPS,
            AcquisitionState.ABORTED,
            AcquisitionState.FAILED,
        )


class Counters(BaseModel):
    """Frame accounting of one acquisition. ``frames_written`` only ever grows."""

    frames_expected: int = Field(0, description="Scan positions x recorded channels")
    frames_received: int = Field(0, description="Image frames taken off the stream (all channels)")
    frames_written: int = Field(0, description="Frames stored in the file (monotonic)")
    frames_dropped: int = Field(0, description="Frames that did not reach the file, all reasons")
    dropped: dict[str, int] = Field(default_factory=dict, description="frames_dropped by reason")
    messages_ignored: int = Field(
        0, description="Non-frame messages ignored (other series, strays)"
    )
    bytes_received: int = Field(0, description="Payload bytes received")
    bytes_written: int = Field(0, description="Chunk bytes written to the file (compressed)")
    frames_missing: int = Field(
        0,
        description="Scan positions x channels never received (gaps no drop accounts for), at "
        "close; frames_written + frames_dropped + frames_missing = frames_expected, except that "
        "duplicates and frames outside the scan are dropped beyond the expected count",
    )
    gaps: int = Field(
        0,
        description="Scan positions x channels without a frame in the file (written = 0), at "
        "close: dropped ones and never received ones",
    )
    summary_frames: int = Field(0, description="Frames included in the summed pattern / image")
    summary_cpu_seconds: float = Field(
        0.0,
        description="CPU the summary thread used, measured (its thread CPU clock); it keeps to "
        "summary_cpu_share x the wall time by subsampling",
    )
    summary_grid_step: int = Field(
        1,
        description="The summary's sampling: 1 every frame, 2/4/8/16 every n-th row and "
        "column (coarse to fine), 0 paused over its budget",
    )


class RankInfo(BaseModel):
    """One writer rank of a scale-out acquisition (``ranks`` > 1)."""

    index: int = Field(description="Rank index: it owns the blocks index, index + N, ...")
    url: str = Field(description="The rank's control URL")
    state: str = Field(description="Its acquisition's state, or 'lost' (died, unreachable)")
    file_path: str | None = Field(None, description="The rank's file (beside the master)")
    frames_expected: int = Field(0, description="Positions x channels this rank owns")
    frames_written: int = Field(0, description="Frames in the rank's file")
    frames_dropped: int = Field(0, description="Frames the rank dropped (all reasons)")
    frames_per_second: float = Field(0.0, description="The rank's write rate")
    error: str | None = Field(None, description="Why the rank failed or was lost")


class AcquisitionInfo(BaseModel):
    """One acquisition as the API, the CLI and bluesky/ophyd-async see it."""

    id: str = Field(description="Acquisition id, unique on this server")
    state: AcquisitionState = Field(description="Life-cycle state")
    file_path: str = Field(
        description="Path of the NeXus file (absolute): its final name while recording, then the "
        "file as it exists (the final name, or <file>.partial if it could not be finished)"
    )
    file_uri: str = Field(
        description="file:// URI of file_path: the final name, where the data can be read once "
        "the acquisition is final (while writing, see writing_file_uri)"
    )
    dataset_path: str = Field(
        "/entry/measurement/event1/image1/image_4d/intensity",
        description="HDF5 path of the 4D intensity dataset (first recorded channel)",
    )
    shape: list[int] | None = Field(
        None, description="[n_m, n_k, n_j, n_i], known once the series starts"
    )
    dtype: str | None = Field(None, description="numpy dtype of the frames, e.g. uint16")
    chunk_shape: list[int] | None = Field(
        None,
        description="HDF5 chunk shape (1, K, ny, nx): K frames of a scan row per chunk "
        "(frames_per_chunk, where the frames allow it)",
    )
    channels: list[str] = Field(default_factory=list, description="Recorded stream channels")
    series_id: int | None = Field(None, description="Detector series id")
    frames_expected: int = Field(0, description="Frames the scan should produce (all channels)")
    frames_written: int = Field(0, description="Frames stored so far (monotonic)")
    rows_written: int = Field(
        0,
        description="Complete scan rows in the file (monotonic): rows 0 .. rows_written-1 hold "
        "every frame of every channel; a row with a gap ends the count. SWMR readers see them "
        "after the next flush (flush_seconds, or POST .../flush)",
    )
    writing: bool = Field(
        False, description="True while the file is open for writing (series started, not closed)"
    )
    writing_file_uri: str | None = Field(
        None,
        description="file:// URI of the file being written (<file>.partial) while writing, "
        "readable with h5py.File(path, 'r', swmr=True); None before the series and once closed "
        "(file_uri then names the file that exists)",
    )
    frame_shape: list[int] | None = Field(
        None, description="[ny, nx] of one frame, known once the series starts"
    )
    swmr: bool = Field(
        True, description="The file is written in HDF5 SWMR mode (always true for stemdaq)"
    )
    frames_dropped: int = Field(0, description="Frames that did not reach the file")
    counters: Counters = Field(default_factory=Counters, description="Full frame accounting")
    frames_per_second: float = Field(0.0, description="Write rate over the last second")
    mb_per_second: float = Field(0.0, description="Uncompressed MB/s over the last second")
    queue_depth: int = Field(0, description="Frames waiting between receiver and writer")
    created_at: str = Field(description="ISO 8601 time the acquisition was armed")
    started_at: str | None = Field(None, description="ISO 8601 time of the series start")
    finished_at: str | None = Field(None, description="ISO 8601 time the file was closed")
    elapsed_seconds: float = Field(0.0, description="Seconds since the series start")
    eta_seconds: float | None = Field(None, description="Estimated seconds to completion")
    error: str | None = Field(None, description="Why the acquisition failed, if it did")
    warnings: list[str] = Field(
        default_factory=list, description="Things worth knowing, e.g. no end message"
    )
    detector_protocol: str | None = Field(
        None,
        description="Active mode: the SIMPLON API version and stream format negotiated with the "
        "detector, and the settings it does not have",
    )
    config: dict[str, Any] = Field(default_factory=dict, description="Effective acquisition config")
    ranks: list[RankInfo] = Field(
        default_factory=list,
        description="Scale-out: per-rank state and counters (empty with one rank)",
    )
