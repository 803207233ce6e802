"""The in-order lane (``stemdaq.rank.lane``) against the Python path, its reference.

Each test sends the same stream over a real ZeroMQ socket (127.0.0.1) to a real
:class:`~stemdaq.rank.datapath.DataPath` writing a real file, once with the lane and once without
(``DataPath(lane=False)``), and compares what users get: every stored chunk byte for byte, the
bookkeeping (``written``, ``frame_id``, times), the final counters and the frames offered to the
summary. The streams are the simulator's (stream v2, 64x64 uint16 bitshuffle-LZ4: one block per
frame, so K frames share a chunk), clean and with every fault it injects. The C object's own
guards (a full chunk not committed yet, the summary's grid, a failed ``__init__``) are tested on
it alone; a disk that fills while the lane writes is ``tests/faults/test_disk_full.py``.
"""

from __future__ import annotations

import re
import struct
import threading
import time
from array import array
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401 - registers the filters for reading
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stemdaq.config import AcquisitionConfig
from stemdaq.rank import lane as lane_module
from stemdaq.rank.datapath import DataPath, Signals
from stemdaq.receiver import StreamDecoder, ZmqSource
from stemdaq.receiver.fast1 import FastImageDecoder1, UsualV1
from stemdaq.sim.replay import encode_series
from stemdaq.writer import NexusWriter

pytestmark = pytest.mark.skipif(not lane_module.BUILT, reason="built without a C compiler")

IMAGE = "/entry/measurement/event1/image1"
BOOK_FIELDS = ("written", "frame_id", "start_time", "stop_time", "real_time")
# timing and sampling, not accounting: the summary's budget decides them as it runs
NOT_COMPARED = {"summary_cpu_seconds", "summary_frames", "summary_grid_step"}


def run(
    tmp: Path,
    messages: list[list[bytes]],
    *,
    lane: bool,
    scan: tuple[int, int],
    k: int = 4,
    pause_after: int | None = None,
    validate: bool = False,
    **cfg: Any,
) -> dict[str, Any]:
    """Send ``messages``, run a data path until the series ends; what the file and counters say.

    ``pause_after``: the sender stops for 0.4 s after that many messages (longer than the
    chunk hold time), as a detector between scan lines might.
    """
    ctx: zmq.Context = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 0)
    push.setsockopt(zmq.LINGER, 0)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    config = AcquisitionConfig(
        scan_shape=scan,
        stream_endpoint=endpoint,
        min_free_mb=1,
        end_timeout=cfg.pop("end_timeout", 5.0),
        frames_per_chunk=k,
        **cfg,
    )
    source = ZmqSource(endpoint, rcvhwm=0)

    def send() -> None:
        for n, msg in enumerate(messages):
            if n == pause_after:
                time.sleep(0.4)
            push.send_multipart(msg)

    sender = threading.Thread(target=send)
    sender.start()
    name = "lane" if lane else "python"
    writer = NexusWriter(tmp / f"{name}.nxs", config, validate_framing=validate)
    path = DataPath(config, writer, Signals(), name=name, lane=lane)
    try:
        state, _ = path.run(source)
        path.write_pending()
        counters = path.counters(final=True)
        offered = path.summary.offered if path.summary is not None else 0
        taken = path.lane.frames if path.lane is not None else 0
        out = writer.close(state, counters, path.summary)
    finally:
        sender.join()
        source.close()
        push.close(linger=0)
    assert out is not None
    with h5py.File(out, "r") as f:
        ds = f[f"{IMAGE}/image_4d/intensity"]
        chunks = {}
        for i in range(ds.id.get_num_chunks()):
            offset = ds.id.get_chunk_info(i).chunk_offset
            chunks[offset] = ds.id.read_direct_chunk(offset)
        book = {name: f[f"{IMAGE}/frames/{name}"][()] for name in BOOK_FIELDS}
        book["frames_written"] = f[f"{IMAGE}/frames/frames_written"][()]
    return {
        "state": state,
        "counters": counters.model_dump(exclude=NOT_COMPARED),
        "offered": offered,
        "chunks": chunks,
        "book": book,
        "taken": taken,
    }


def compare(tmp: Path, messages: list[list[bytes]], **kw: Any) -> tuple[dict, dict]:
    """Both paths on the same stream; assert they agree; return (lane, python) results."""
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    fast = run(tmp / "a", messages, lane=True, **kw)
    ref = run(tmp / "b", messages, lane=False, **kw)
    assert ref["taken"] == 0
    assert fast["state"] == ref["state"]
    assert fast["counters"] == ref["counters"]
    assert fast["offered"] == ref["offered"]
    assert sorted(fast["chunks"]) == sorted(ref["chunks"])
    for offset, chunk in ref["chunks"].items():
        assert fast["chunks"][offset] == chunk, f"chunk {offset} differs"
    for name, values in ref["book"].items():
        np.testing.assert_array_equal(fast["book"][name], values, err_msg=name)
    return fast, ref


def series(n: int, scan: tuple[int, int], **kw: Any) -> list[list[bytes]]:
    return encode_series(n, frame_shape=(64, 64), scan_shape=scan, **kw)


def test_clean_series_is_taken_by_the_lane(tmp_path):
    scan = (6, 10)  # K=4: chunks of 4, 4 and 2 frames per row
    fast, ref = compare(tmp_path, series(60, scan), scan=scan)
    assert ref["counters"]["frames_written"] == 60
    assert ref["book"]["written"].all()
    # images 0-23 (ids that are their own header byte) and the rest of a chunk after an
    # integer grew a byte take the Python path
    assert fast["taken"] >= 30


@pytest.mark.parametrize("k", [2, 3, 8])
def test_chunk_sizes_and_serpentine(tmp_path, k):
    """Odd rows come last column first: the lane fills their chunks downwards."""
    scan = (5, 12)
    fast, _ = compare(tmp_path, series(60, scan), scan=scan, k=k, serpentine=True)
    assert fast["taken"] >= 24  # rows 2-4 (images 24-59), less a chunk after a layout change


def test_serpentine_with_faults(tmp_path):
    scan = (6, 10)
    msgs = series(60, scan, faults="drop=36;duplicate=45;reorder=51,52")
    compare(tmp_path, msgs, scan=scan, serpentine=True)


@pytest.mark.parametrize(
    "faults",
    [
        "drop=30,41,42",
        "duplicate=29,30,33",
        "reorder=30,31,45",
        "corrupt=30,37;truncate=44",
        "wrong_series=31;malformed=38",
        "drop=59",  # the last frame: the last chunk is written with its gap at the end
        "no_end",
    ],
)
def test_faults(tmp_path, faults):
    scan = (6, 10)
    fast, ref = compare(tmp_path, series(60, scan, faults=faults), scan=scan, end_timeout=0.5)
    assert fast["taken"] > 0


def test_integers_through_their_token_lengths(tmp_path):
    """Image ids cross 23 and 255 and times grow: the layout changes, the lane is armed anew."""
    scan = (20, 16)
    fast, _ = compare(tmp_path, series(320, scan, frame_time=0.02), scan=scan)
    assert fast["taken"] >= 250


def test_pause_mid_chunk_hands_the_chunk_over(tmp_path):
    """The stream pauses with a chunk half full: handed over after the hold, then completed
    by frames that came later (the chunk read back and written again), as the Python path."""
    scan = (6, 10)
    compare(tmp_path, series(60, scan), scan=scan, pause_after=1 + 26)


def test_late_first_frame_of_a_written_chunk(tmp_path):
    """Image 44 (the first of its chunk) comes last, after a pause in which a flush wrote its
    chunk with a gap: it is read back and written again, on both paths."""
    scan = (6, 10)
    msgs = series(60, scan)
    late = msgs.pop(1 + 44)
    msgs.insert(len(msgs) - 1, late)
    compare(tmp_path, msgs, scan=scan, pause_after=len(msgs) - 2, flush_seconds=0.1)


def test_summary_off(tmp_path):
    scan = (6, 10)
    fast, _ = compare(tmp_path, series(60, scan), scan=scan, summary=False)
    assert fast["offered"] == 0 and fast["taken"] > 0


def test_lane_stays_out_where_it_does_not_apply(tmp_path):
    """Two channels per message; one frame per chunk; frames stemdaq compresses."""
    scan = (4, 8)
    fast, _ = compare(tmp_path, series(32, scan, channels=("a", "b")), scan=scan)
    assert fast["taken"] == 0
    (tmp_path / "k1").mkdir()
    fast, _ = compare(tmp_path / "k1", series(32, scan), scan=scan, k=1)
    assert fast["taken"] == 0
    (tmp_path / "raw").mkdir()
    fast, _ = compare(tmp_path / "raw", series(32, scan, compression="none"), scan=scan)
    assert fast["taken"] == 0


def test_validate_framing_on_writes_the_same(tmp_path):
    """The lane walks every frame's blocks itself, as the writer's own framing check would."""
    scan = (6, 10)
    fast, _ = compare(tmp_path, series(60, scan), scan=scan, validate=True)
    assert fast["taken"] > 0


# -- the C object alone -------------------------------------------------------------------------


def chunk_header(k: int) -> bytes:
    """The 12-byte header of a chunk of k 64x64 uint16 frames (one 8 KiB block each)."""
    return struct.pack(">QI", k * 8192, 8192)


def _usual_messages(n: int) -> tuple[Any, list[bytes]]:
    """A 64x64 series' image messages and the decoder's usual layout after image 30."""
    msgs = [m[0] for m in series(n, (8, 8))[1:-1]]
    decoder = StreamDecoder()
    for msg in msgs[:31]:
        decoder.decode_part(msg)
    usual = decoder.usual_image()
    assert usual is not None
    return usual, msgs


def _lane(grid: bytes | None = None) -> tuple[Any, dict[str, Any]]:
    n = 64
    bufs = {
        "seen": bytearray(n),
        "in_file": bytearray(16),
        "pending": bytearray(16),
        "written": bytearray(n),
        "frame_id": array("q", [-1]) * n,
        "t_start": array("d", [np.nan]) * n,
        "t_stop": array("d", [np.nan]) * n,
        "t_real": array("d", [np.nan]) * n,
    }
    lane = lane_module.Lane(4, 8, n, False, *bufs.values(), chunk_header(4), b"\0" * 20, grid)
    return lane, bufs


def test_a_full_chunk_takes_nothing_until_committed():
    (layout, payload, sec), msgs = _usual_messages(64)
    lane, bufs = _lane()
    assert lane.arm(layout, payload, sec.start_den, sec.stop_den, sec.real_time)
    assert [lane.push(m) for m in msgs[32:36]] == [0, 0, 0, 1]  # row 4, chunk 0: full
    assert lane.push(msgs[36]) == -1  # the next chunk waits for the commit
    assert not bufs["seen"][36]
    assert bytes(memoryview(lane))[:12] == chunk_header(4)
    assert lane.commit() == (32, 4, 4)
    assert list(bufs["frame_id"][32:36]) == [32, 33, 34, 35]
    assert bytes(bufs["written"][32:36]) == b"\1" * 4
    assert lane.push(msgs[36]) == 0
    assert lane.arm(layout, payload, 0, 0, None) is False  # a chunk being filled keeps its layout
    assert [p[0] for p in lane.handover()] == [36]
    assert lane.take_counts()[0] == 5


def test_summary_grid_and_min_class():
    """Flag 2 for frames on the summary's grid, the rest counted as not wanted."""
    (layout, payload, sec), msgs = _usual_messages(64)
    grid = bytes([1 if i % 2 else 0 for i in range(64)])
    lane, _ = _lane(grid)
    lane.arm(layout, payload, sec.start_den, sec.stop_den, sec.real_time)
    lane.min_class = 1
    flags = [lane.push(m) for m in msgs[32:36]]
    assert flags == [0, 2, 0, 3]
    assert lane.last()[0] == 35
    assert lane.take_counts()[2] == 2


def test_a_lane_whose_init_failed_takes_nothing():
    lane = lane_module.Lane.__new__(lane_module.Lane)
    with pytest.raises(ValueError):
        lane.__init__(1, 8, 64, False, *([bytearray(64)] * 8), b"\0" * 12, b"", None)
    assert lane.push(b"\0" * 100) == -1
    assert lane.handover() == []
    with pytest.raises(RuntimeError):
        lane.arm((b"a", 1, b"b", 2, b"c", 3, b"d", 4, 5), (b"\0" * 12, 1, 1, 0), 0, 0, None)
    with pytest.raises(RuntimeError):
        lane.commit()
    with pytest.raises(BufferError):
        memoryview(lane)


_SERIES_CACHE: dict[tuple[tuple[int, int], str], list[list[bytes]]] = {}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.sampled_from([(4, 10), (5, 12), (3, 16)]),
    k=st.sampled_from([2, 3, 4, 8]),
    serpentine=st.booleans(),
    fmt=st.sampled_from(["cbor", "json"]),
    data=st.data(),
)
def test_random_streams_agree(tmp_path_factory, shape, k, serpentine, fmt, data):
    """Drops, duplicates, moves and a missing end, drawn at random (stream v2 and v1): both
    paths agree."""
    if (shape, fmt) not in _SERIES_CACHE:
        _SERIES_CACHE[shape, fmt] = series(shape[0] * shape[1], shape, fmt=fmt)
    start, *images, end = _SERIES_CACHE[shape, fmt]
    images = list(images)
    n = len(images)
    for _ in range(data.draw(st.integers(0, 4), label="moves")):
        i = data.draw(st.integers(0, n - 1))
        images.insert(data.draw(st.integers(0, n - 1)), images.pop(i))
    dropped = data.draw(st.sets(st.integers(0, n - 1), max_size=4), label="dropped")
    doubled = data.draw(st.sets(st.integers(0, n - 1), max_size=3), label="duplicated")
    msgs = [start]
    for i, msg in enumerate(images):
        if i not in dropped:
            msgs += [msg, msg] if i in doubled else [msg]
    if data.draw(st.booleans(), label="end"):
        msgs.append(end)
    compare(
        tmp_path_factory.mktemp("random"),
        msgs,
        scan=shape,
        k=k,
        serpentine=serpentine,
        end_timeout=0.3,
    )


# -- stream v1 (JSON multipart) -----------------------------------------------------------------


@pytest.mark.parametrize("serpentine", [False, True])
def test_v1_series_is_taken_by_the_lane(tmp_path, serpentine):
    scan = (6, 10)
    fast, ref = compare(tmp_path, series(60, scan, fmt="json"), scan=scan, serpentine=serpentine)
    assert ref["counters"]["frames_written"] == 60
    assert fast["taken"] >= 40


@pytest.mark.parametrize(
    "faults",
    [
        "drop=30,41;duplicate=33;reorder=45,46",
        "corrupt=30;truncate=37;malformed=44;wrong_series=50",
        "no_end",
    ],
)
def test_v1_faults(tmp_path, faults):
    scan = (6, 10)
    msgs = series(60, scan, fmt="json", faults=faults)
    fast, _ = compare(tmp_path, msgs, scan=scan, end_timeout=0.5)
    assert fast["taken"] > 0


def test_v1_frame_numbers_padded_and_no_config_part(tmp_path):
    """The benchmark's sender right-aligns frame numbers with spaces (fewer as the digits grow);
    a detector may leave out the config part (no times)."""
    scan = (4, 32)
    msgs = series(128, scan, fmt="json")

    def pad(m: re.Match) -> bytes:
        return b'"frame":' + b"%6d" % int(m.group(1))

    padded = [msgs[0]]
    for msg in msgs[1:-1]:
        padded.append([re.sub(rb'"frame": (\d+)', pad, bytes(msg[0])), *msg[1:]])
    padded.append(msgs[-1])
    assert b'"frame":    99,' in padded[100][0] and b'"frame":   100,' in padded[101][0]
    (tmp_path / "pad").mkdir()
    fast, _ = compare(tmp_path / "pad", padded, scan=scan)
    assert fast["taken"] >= 90
    three = [msgs[0]] + [m[:3] for m in msgs[1:-1]] + [msgs[-1]]
    (tmp_path / "three").mkdir()
    fast, ref = compare(tmp_path / "three", three, scan=scan)
    assert fast["taken"] >= 90
    assert np.isnan(ref["book"]["start_time"]).all()


def _v1_image_32() -> tuple[Any, list[bytes]]:
    """The usual v1 layout (after image 32 of an 8x8 scan) and image 32's parts."""
    msgs = [[bytes(p) for p in m] for m in series(64, (8, 8), fmt="json")[1:-1]]
    decoder = StreamDecoder()
    for msg in msgs[:33]:
        decoder.decode(msg)
    usual = decoder.usual_image()
    assert isinstance(usual, UsualV1)
    return usual, msgs[32]


def _sub(part: int, old: bytes, new: bytes) -> Any:
    def edit(msg: list[bytes]) -> list[bytes]:
        out = list(msg)
        assert old in out[part]
        out[part] = out[part].replace(old, new)
        return out

    return edit


@pytest.mark.parametrize(
    ("edit", "usual"),
    [
        (lambda m: m, True),
        (_sub(0, b'"frame": 32', b'"frame":' + b" " * 64 + b"32"), True),
        (_sub(0, b'"frame": 32', b'"frame":' + b" " * 65 + b"32"), False),
        (_sub(0, b'"frame": 32', b'"frame": 032'), False),
        (_sub(3, b'"start_time": ', b'"start_time": 1000000000000000000'), False),  # 19+ digits
        (_sub(0, b'"hash": "', b'"hash": "' + b"a" * 224), False),  # 256 characters: fast1 too
        (_sub(0, b'"hash": "', b'"hash": "' + b"a" * 225), False),  # 257: neither
        (_sub(0, b'"hash": "', b'"hash": "\x7f'), False),
        (_sub(0, b"}", b"} "), False),
        (lambda m: [*m, b"{}"], False),
    ],
)
def test_v1_read_takes_only_what_fast1_reads_the_same(edit, usual):
    """Edges of the v1 patterns: whatever the lane takes, fast1 reads, to the same frame."""
    layout, msg = _v1_image_32()
    mutated = edit(msg)
    lane, bufs = _lane()
    assert lane.arm_v1(layout.patterns, layout.payload, layout.n_parts)
    taken = lane.push(mutated)
    frames = FastImageDecoder1().decode(mutated)
    if taken >= 0:
        assert frames is not None and frames[0].frame_id == 32
        assert bytes(lane.handover()[0][-1]) == bytes(frames[0].payload)
    if usual:  # the usual message and a sender's right-aligned frame numbers: taken
        assert taken == 0


def test_v1_patterns_are_checked_at_arm():
    layout, _ = _v1_image_32()
    lane, _ = _lane()
    bad = ((b"{", 2), layout.patterns[1], layout.patterns[2])  # a string hole to the end
    with pytest.raises(ValueError):
        lane.arm_v1(bad, layout.payload, 4)
