"""Ownership, the header reads the fan routes by, and the fan itself on real ZeroMQ sockets."""

from __future__ import annotations

import numpy as np
import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st
from polling import free_ports
from stemdaq.models import Frame, SeriesEnd, SeriesStart
from stemdaq.rank.ownership import Ownership, hyperslabs
from stemdaq.receiver import StreamDecoder
from stemdaq.routing.fan import Fan
from stemdaq.routing.headers import (
    NOT_IMAGE,
    is_end,
    is_start,
    series_id,
    v1_image_id,
    v2_image_id,
)
from stemdaq.sim.replay import encode_series


@given(
    n_rows=st.integers(1, 40),
    ranks=st.integers(1, 6),
    block=st.integers(1, 5),
    n_k=st.integers(1, 7),
)
def test_hyperslabs_cover_every_row_once_and_match_the_owner(n_rows, ranks, block, n_k) -> None:
    seen = np.zeros(n_rows, dtype=int)
    for r in range(ranks):
        own = Ownership(ranks, r, block, (n_rows, n_k))
        rows = np.zeros(n_rows, dtype=bool)
        for start, stride, count, b in hyperslabs(ranks, r, block, n_rows):
            for j in range(count):
                rows[start + j * stride : start + j * stride + b] = True
                assert start + j * stride + b <= n_rows  # never past the end
        np.testing.assert_array_equal(rows, own.row_mask())
        seen += rows
        assert own.owned_positions == rows.sum() * n_k
        for image_id in range(0, n_rows * n_k, max(1, n_k // 2)):
            assert (own.owner(image_id) == r) == rows[image_id // n_k]
    assert (seen == 1).all()


def test_ownership_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="rank_index"):
        Ownership(2, 2, 1, (4, 4))
    with pytest.raises(ValueError):
        Ownership(2, 0, 0, (4, 4))


@pytest.mark.parametrize("fmt", ["cbor", "json"])
def test_header_reads_agree_with_the_full_decoder(fmt) -> None:
    messages = encode_series(300, fmt=fmt, frame_shape=(8, 8), dtype="uint16")
    decoder = StreamDecoder(fast=False)
    images = ends = 0
    for msg in messages:
        events = decoder.decode(msg)
        image_id = v2_image_id(msg[0]) if len(msg) == 1 else v1_image_id(msg[0])
        frames = [e for e in events if isinstance(e, Frame)]
        if frames:
            images += 1
            assert image_id == frames[0].frame_id
        else:
            assert image_id == NOT_IMAGE
        assert is_end(msg[0]) == any(isinstance(e, SeriesEnd) for e in events)
        assert is_start(msg[0]) == any(isinstance(e, SeriesStart) for e in events)
        ends += is_end(msg[0])
    assert images == 300 and ends == 1


def test_header_read_of_garbage_is_not_an_image() -> None:
    for junk in (b"", b"\xd9\xd9\xf7", b"\x64type\x65image", bytes(200), b'{"htype": "dimage-1.0"'):
        assert v2_image_id(junk) == NOT_IMAGE
        assert v1_image_id(junk) == NOT_IMAGE


def test_fan_routes_blocks_in_order_and_starts_and_ends_to_every_rank() -> None:
    ranks, block_rows, n_k, n = 3, 2, 5, 70  # 14 rows: blocks of 10 frames
    messages = encode_series(n, fmt="cbor", frame_shape=(8, 8), dtype="uint16")
    ctx = zmq.Context()
    src = ctx.socket(zmq.PUSH)
    src_port = src.bind_to_random_port("tcp://127.0.0.1")
    port = free_ports(ranks)
    fan = Fan(ranks, port=port, send_timeout=5)
    pulls = []
    try:
        for r in range(ranks):
            s = ctx.socket(zmq.PULL)
            s.connect(f"tcp://127.0.0.1:{port + r}")
            pulls.append(s)
        fan.arm(f"tcp://127.0.0.1:{src_port}", n_k=n_k, block_rows=block_rows)
        stale_end = encode_series(1, fmt="cbor", frame_shape=(8, 8), series_id=99)[-1]
        for msg in [stale_end, *messages]:  # an aborted series' late end does not end routing
            src.send_multipart(msg)
        assert fan.wait(30)
        assert fan.counters.state == "completed"
        assert sum(fan.counters.frames) == n and fan.counters.dropped == [0] * ranks
        for r, s in enumerate(pulls):
            decoder = StreamDecoder()
            events = []
            while s.poll(2000):
                events += [
                    e
                    for e in decoder.decode(s.recv_multipart())
                    if not (isinstance(e, SeriesEnd) and e.series_id == 99)  # the stale end
                ]
                if events and isinstance(events[-1], SeriesEnd):
                    break
            assert isinstance(events[0], SeriesStart) and isinstance(events[-1], SeriesEnd)
            ids = [e.frame_id for e in events if isinstance(e, Frame)]
            assert ids == sorted(ids)  # the detector's order
            assert ids == [i for i in range(n) if (i // (n_k * block_rows)) % ranks == r]
    finally:
        fan.close()
        for s in [src, *pulls]:
            s.close(0)
        ctx.term()


def test_fan_counts_a_rank_that_takes_nothing_as_lost() -> None:
    messages = encode_series(40, fmt="cbor", frame_shape=(8, 8), dtype="uint16")
    ctx = zmq.Context()
    src = ctx.socket(zmq.PUSH)
    src_port = src.bind_to_random_port("tcp://127.0.0.1")
    port = free_ports(2)
    fan = Fan(2, port=port, send_timeout=0.3, sndhwm=4)
    pull = ctx.socket(zmq.PULL)  # rank 0 only: rank 1 never connects
    try:
        pull.connect(f"tcp://127.0.0.1:{port}")
        fan.arm(f"tcp://127.0.0.1:{src_port}", n_k=4, block_rows=1)
        for msg in messages:
            src.send_multipart(msg)
        got = 0
        while pull.poll(3000):
            msg = pull.recv_multipart()
            got += 1
            if is_end(msg[0]):
                break
        assert fan.wait(10)
        c = fan.counters
        assert c.state == "completed" and c.lost == [1]
        assert c.frames[0] == 20 and c.frames[1] + c.dropped[1] == 20 and c.dropped[1] > 0
        assert got == 22  # start + its 20 frames + end
    finally:
        fan.close()
        src.close(0)
        pull.close(0)
        ctx.term()


@pytest.mark.parametrize("fmt", ["cbor", "json"])
def test_series_id_of_starts_and_ends(fmt) -> None:
    messages = encode_series(2, fmt=fmt, frame_shape=(8, 8), series_id=70000)
    assert series_id(messages[0][0]) == 70000 and series_id(messages[-1][0]) == 70000


def test_fan_told_the_series_passes_a_stale_series_and_routes_the_right_one() -> None:
    stale = encode_series(3, fmt="cbor", frame_shape=(8, 8), series_id=4)
    ours = encode_series(12, fmt="cbor", frame_shape=(8, 8), series_id=5)
    ctx = zmq.Context()
    src = ctx.socket(zmq.PUSH)
    src_port = src.bind_to_random_port("tcp://127.0.0.1")
    port = free_ports(1)
    fan = Fan(1, port=port, send_timeout=5)
    pull = ctx.socket(zmq.PULL)
    try:
        pull.connect(f"tcp://127.0.0.1:{port}")
        fan.arm(f"tcp://127.0.0.1:{src_port}", n_k=4, block_rows=1)
        fan.expect_series(5)
        for msg in [stale[0], stale[-1], *ours]:  # a whole stale series (start, end) first
            src.send_multipart(msg)
        assert fan.wait(30)
        assert fan.counters.state == "completed" and fan.counters.frames == [12]
        decoder, events = StreamDecoder(), []
        while pull.poll(2000):
            events += decoder.decode(pull.recv_multipart())
            if isinstance(events[-1], SeriesEnd) and events[-1].series_id == 5:
                break
        assert [e.frame_id for e in events if isinstance(e, Frame)] == list(range(12))
    finally:
        fan.close()
        src.close(0)
        pull.close(0)
        ctx.term()
