"""ZmqSource over a real loopback socket."""

from __future__ import annotations

import numpy as np
import pytest
import zmq
from stemdaq.models import Frame, SeriesEnd, SeriesStart
from stemdaq.receiver import SeriesTracker, StreamDecoder, ZmqSource, recv_message


def test_push_to_zmq_source_v1_and_v2(wire):
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    try:
        push.bind("tcp://127.0.0.1:0")
        endpoint = push.getsockopt_string(zmq.LAST_ENDPOINT)
        arr = wire.frame_array((32, 32))
        with ZmqSource(endpoint, context=ctx) as source:
            assert source.recv(10) is None
            push.send_multipart(
                wire.v1_header(series=2, config=wire.v1_config(shape=(32, 32), nimages=2))
            )
            push.send_multipart(wire.v1_image(0, arr, series=2, encoding="<"))
            push.send(wire.v2(wire.v2_end(9)))
            dec, events = StreamDecoder(), []
            for _ in range(3):
                parts = source.recv(5000)
                assert parts is not None and all(isinstance(p, zmq.Frame) for p in parts)
                events += dec.decode(parts)
            assert [type(e) for e in events] == [SeriesStart, Frame, SeriesEnd]
            frame = events[1]
            assert isinstance(frame.payload, memoryview)  # zero-copy view of the zmq frame
            np.testing.assert_array_equal(
                np.frombuffer(frame.payload, "uint16").reshape(32, 32), arr
            )
            tracker = SeriesTracker((1, 2))
            assert [tracker.accept(e) is not None for e in events[:2]] == [True, True]
        assert source.closed
        source.close()  # idempotent
    finally:
        push.close(0)
        ctx.term()


def test_recv_message_single_part_and_multipart(wire):
    """The data loop's receive: one zmq.Frame for v2, a list of frames for v1 multipart."""
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    try:
        push.bind("tcp://127.0.0.1:0")
        endpoint = push.getsockopt_string(zmq.LAST_ENDPOINT)
        arr = wire.frame_array((16, 16))
        with ZmqSource(endpoint, context=ctx) as source:
            with pytest.raises(zmq.Again):
                recv_message(source.socket, zmq.NOBLOCK)
            push.send(wire.v2(wire.v2_start(series_id=4, shape=(16, 16))))
            push.send(wire.v2(wire.v2_image(0, arr, series_id=4)))
            push.send_multipart(wire.v1_image(1, arr, series=4))
            dec, events = StreamDecoder(), []
            for _ in range(3):
                assert source.recv_ready(5000)
                msg = recv_message(source.socket, zmq.NOBLOCK)
                if isinstance(msg, list):
                    assert len(msg) == 4 and all(isinstance(p, zmq.Frame) for p in msg)
                    events += dec.decode(msg)
                else:
                    assert isinstance(msg, zmq.Frame) and not msg.more
                    events += dec.decode_part(msg)
            assert [type(e) for e in events] == [SeriesStart, Frame, Frame]
            v2, v1 = events[1], events[2]
            assert isinstance(v2.payload, memoryview) and isinstance(v2.payload.obj, zmq.Frame)
            for frame in (v2, v1):
                np.testing.assert_array_equal(wire.unbslz4(frame.payload, (16, 16), "uint16"), arr)
    finally:
        push.close(0)
        ctx.term()
