"""ZmqSource over a real loopback socket."""

from __future__ import annotations

import numpy as np
import zmq

from stemdaq.models import Frame, SeriesEnd, SeriesStart
from stemdaq.receiver import SeriesTracker, StreamDecoder, ZmqSource


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
