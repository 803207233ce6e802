"""The stream over real loopback ZeroMQ: frames bit for bit, faults, pacing, commands."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from sim_wire import Puller, decode_v1_image, decode_v2
from stemdaq.sim import SimulatedDetector, run_sim
from stemdaq.sim.faults import WRONG_SERIES_OFFSET, Injection

MakeSim = Callable[..., SimulatedDetector]
Pull = Callable[[str], Puller]


def _images(msgs: list[list[bytes]]) -> list[dict]:
    return [d for d in (decode_v2(m[0]) for m in msgs) if d["type"] == "image"]


@pytest.mark.parametrize(
    ("dtype", "compression"),
    [
        ("uint8", "bslz4"),
        ("uint16", "bslz4"),
        ("uint32", "bslz4"),
        ("uint16", "lz4"),
        ("uint32", "lz4"),
        ("uint8", "none"),
        ("uint16", "none"),
    ],
)
def test_v2_series_bit_for_bit(make_sim: MakeSim, pull: Pull, dtype: str, compression: str) -> None:
    det = make_sim(dtype=dtype, compression=compression, frame_shape=(96, 128), seed=11)
    p = pull(det.stream_endpoint)
    seq = det.run_series(12)
    msgs = p.until_end()
    assert all(m[0][:3] == b"\xd9\xd9\xf7" for m in msgs)
    decoded = [decode_v2(m[0]) for m in msgs]
    assert [d["type"] for d in decoded] == ["start"] + ["image"] * 12 + ["end"]
    assert decoded[0]["series_id"] == seq and decoded[0]["image_dtype"] == dtype
    assert [d["image_id"] for d in decoded[1:-1]] == list(range(12))
    for d in decoded[1:-1]:
        np.testing.assert_array_equal(d["data"]["threshold_1"], det.generator.frame(d["image_id"]))
    assert det.injected == [] and det.dropped == 0


@pytest.mark.parametrize("compression", ["bslz4", "lz4", "none"])
def test_v1_series_bit_for_bit(make_sim: MakeSim, pull: Pull, compression: str) -> None:
    det = make_sim(fmt="json", compression=compression, seed=4)
    p = pull(det.stream_endpoint)
    det.run_series(5)
    msgs = p.until_end(v2=False)
    assert len(msgs) == 7 and len(msgs[0]) == 2 and all(len(m) == 4 for m in msgs[1:-1])
    for i, m in enumerate(msgs[1:-1]):
        head, frame = decode_v1_image(m)
        assert head["frame"] == i and head["series"] == 1
        np.testing.assert_array_equal(frame, det.generator.frame(i))


def test_over_http_like_a_dcu(make_sim: MakeSim, pull: Pull) -> None:
    det = make_sim(seed=1)
    p = pull(det.stream_endpoint)
    with httpx.Client(base_url=det.rest_url, timeout=5) as http:
        http.put("/detector/api/1.8.0/config/trigger_mode", json={"value": "ints"})
        http.put("/detector/api/1.8.0/config/nimages", json={"value": 4})
        http.put("/detector/api/1.8.0/config/ntrigger", json={"value": 2})
        http.put("/stream/api/1.8.0/config/format", json={"value": "cbor"})
        seq = http.put("/detector/api/1.8.0/command/arm").json()["sequence id"]
        assert decode_v2(p.recv()[0])["type"] == "start"  # sent at arm
        http.put("/detector/api/1.8.0/command/trigger")
        first = [decode_v2(p.recv()[0]) for _ in range(4)]
        assert [d["image_id"] for d in first] == [0, 1, 2, 3]
        time.sleep(0.05)
        assert (
            http.get("/detector/api/1.8.0/status/state").json()["value"] == "ready"
        )  # 1 trigger left
        assert p.recv(0.2) is None
        http.put("/detector/api/1.8.0/command/trigger")
        rest = p.until_end()
        assert [d.get("image_id") for d in map(decode_v2, (m[0] for m in rest))] == [
            4,
            5,
            6,
            7,
            None,
        ]
        det.wait_idle(5)
        assert http.get("/detector/api/1.8.0/status/state").json()["value"] == "idle"
        assert http.put("/detector/api/1.8.0/command/disarm").json() == {"sequence id": seq}
    assert p.recv(0.2) is None  # disarm after the end sends nothing more


def test_disarm_mid_series_sends_end(make_sim: MakeSim, pull: Pull) -> None:
    det = make_sim(frame_time=0.01)
    p = pull(det.stream_endpoint)
    det.configure(nimages=1000)
    det.arm()
    det.trigger()
    time.sleep(0.1)
    det.disarm()
    msgs = p.until_end(timeout=2)
    kinds = [decode_v2(m[0])["type"] for m in msgs]
    assert kinds[0] == "start" and kinds[-1] == "end" and 2 < kinds.count("image") < 100
    assert det.state == "idle"


def test_fault_injection_over_the_wire(make_sim: MakeSim, pull: Pull) -> None:
    faults = "drop=3,7;duplicate=5;reorder=10;corrupt=12;truncate=14;wrong_series=16"
    det = make_sim(faults=faults, compression="bslz4")
    p = pull(det.stream_endpoint)
    seq = det.run_series(20)
    msgs = p.until_end()
    order, broken = [], []
    for m in msgs[1:-1]:
        try:
            d = decode_v2(m[0])
        except Exception:  # noqa: BLE001 - corrupt / truncate
            broken.append(m)
            continue
        order.append((d["series_id"], d["image_id"]))
        if d["series_id"] == seq:
            np.testing.assert_array_equal(
                d["data"]["threshold_1"], det.generator.frame(d["image_id"])
            )
    expected = [(seq, i) for i in (0, 1, 2, 4, 5, 5, 6, 8, 9, 11, 10, 13, 15)]
    expected += [(seq + WRONG_SERIES_OFFSET, 16), (seq, 17), (seq, 18), (seq, 19)]
    assert order == expected
    assert len(broken) == 2
    assert decode_v2(msgs[-1][0])["type"] == "end"
    assert sorted(det.injected) == sorted(
        [
            Injection("drop", seq, 3),
            Injection("drop", seq, 7),
            Injection("duplicate", seq, 5),
            Injection("reorder", seq, 10),
            Injection("corrupt", seq, 12),
            Injection("truncate", seq, 14),
            Injection("wrong_series", seq, 16),
        ]
    )


def test_abort_after_fault_stops_without_end(make_sim: MakeSim, pull: Pull) -> None:
    det = make_sim(faults="abort_after=5")
    p = pull(det.stream_endpoint)
    seq = det.run_series(10)
    msgs = []
    while (m := p.recv(0.3)) is not None:
        msgs.append(decode_v2(m[0]))
    assert [d["type"] for d in msgs] == ["start"] + ["image"] * 5
    assert det.injected == [Injection("abort_after", seq, 5)] and det.state == "idle"
    seq2 = det.run_series(3)  # the next series is complete up to its own abort point
    assert seq2 == seq + 1
    assert decode_v2(p.recv()[0])["series_id"] == seq2


def test_no_end_fault(make_sim: MakeSim, pull: Pull) -> None:
    det = make_sim(faults="no_end", fmt="json")
    p = pull(det.stream_endpoint)
    seq = det.run_series(2)
    msgs = []
    while (m := p.recv(0.3)) is not None:
        msgs.append(m)
    assert len(msgs) == 3 and not any(b"dseries_end" in m[0] for m in msgs)
    assert det.injected == [Injection("no_end", seq, None)]


def test_split_header_quirk(make_sim: MakeSim, pull: Pull) -> None:
    det = make_sim(fmt="json", split_header=True, header_detail="all")
    p = pull(det.stream_endpoint)
    det.run_series(1)
    msgs = p.until_end(v2=False)
    assert [len(m) for m in msgs] == [1] * 8 + [4, 1]


def test_pacing_by_frame_time(make_sim: MakeSim, pull: Pull) -> None:
    det = make_sim(frame_time=0.01)
    p = pull(det.stream_endpoint)
    t0 = time.perf_counter()
    det.run_series(20)
    elapsed = time.perf_counter() - t0
    assert len(p.until_end()) == 22
    assert 0.15 < elapsed < 1.5  # 20 frames x 10 ms, loosely


def test_fast_mode_and_determinism_across_detectors(make_sim: MakeSim, pull: Pull) -> None:
    a, b, c = make_sim(seed=7), make_sim(seed=7), make_sim(seed=8)
    got = {}
    for name, det in (("a", a), ("b", b), ("c", c)):
        p = pull(det.stream_endpoint)
        t0 = time.perf_counter()
        det.run_series(200)
        assert time.perf_counter() - t0 < 5
        got[name] = [d["data"]["threshold_1"] for d in _images(p.until_end())]
    assert len(got["a"]) == 200
    assert all(np.array_equal(x, y) for x, y in zip(got["a"], got["b"], strict=True))
    assert not any(np.array_equal(x, y) for x, y in zip(got["a"], got["c"], strict=True))


def test_abort_while_blocked_counts_dropped(make_sim: MakeSim) -> None:
    det = make_sim()  # nobody connected: PUSH cannot send
    det.configure(nimages=3)
    det.arm()
    det.trigger()
    time.sleep(0.2)
    assert det.state == "acquire"
    det.abort()
    time.sleep(0.2)
    assert det.dropped >= 1
    with httpx.Client(base_url=det.rest_url) as http:
        assert http.get("/stream/api/1.8.0/status/dropped").json()["value"] == det.dropped


def test_two_channels(make_sim: MakeSim, pull: Pull) -> None:
    det = make_sim(channels=("threshold_1", "threshold_2"))
    p = pull(det.stream_endpoint)
    det.run_series(2)
    start, *images, _ = (decode_v2(m[0]) for m in p.until_end())
    assert list(start["channels"]) == ["threshold_1", "threshold_2"]
    np.testing.assert_array_equal(
        images[1]["data"]["threshold_2"], det.generator.frame(1, channel=1)
    )


def test_run_sim_reports_ports_and_stops(pull: Pull) -> None:
    ready: list[SimulatedDetector] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=run_sim,
        kwargs={
            "rest_port": 0,
            "stream_port": 0,
            "seed": 3,
            "faults": "drop=1",
            "on_ready": ready.append,
            "stop_event": stop,
        },
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not ready and time.monotonic() < deadline:
            time.sleep(0.01)
        det = ready[0]
        assert det.rest_port > 0 and det.stream_port > 0
        p = pull(det.stream_endpoint)
        with httpx.Client(base_url=det.rest_url) as http:
            assert http.get("/detector/api/version/").json()["value"] == "1.8.0"
            http.put("/detector/api/1.8.0/config/nimages", json={"value": 3})
            http.put("/detector/api/1.8.0/command/arm")
            http.put("/detector/api/1.8.0/command/trigger")
        assert [d["image_id"] for d in _images(p.until_end())] == [0, 2]
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
