"""The per-frame work in C (``stemdaq._hotpath``) against its Python reference: the block walk,
the stream v2 fast path's read of a usual image, and the decoders and framing checks with the
Python walk and read (what runs where no compiler built the extension)."""

from __future__ import annotations

import struct

import pytest
import stemdaq.receiver.fast2 as fast2_module
import stemdaq.receiver.framing as framing_module
from hypothesis import given, settings
from hypothesis import strategies as st
from stemdaq.errors import DecodeError
from stemdaq.models import Frame
from stemdaq.receiver import StreamDecoder, blockwalk
from stemdaq.receiver.blockwalk import walk, walk_python
from stemdaq.receiver.framing import check_bslz4, check_lz4_hdf5
from stemdaq.sim.replay import encode_series

BUFFER_KINDS = (bytes, bytearray, memoryview)


def table(sizes: list[int], fill: bytes = b"\x5a") -> bytes:
    """Blocks with these (declared) sizes, each followed by that many bytes."""
    return b"".join(struct.pack(">I", s) + fill * s for s in sizes)


@settings(max_examples=400, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 300), max_size=12),
    head=st.binary(max_size=16),
    cut=st.integers(0, 40),
    n=st.integers(-2, 14),
    bound=st.integers(-1, 320),
    start_shift=st.integers(-3, 3),
)
def test_compiled_walk_equals_the_python_walk(sizes, head, cut, n, bound, start_shift):
    buf = head + table(sizes)
    buf = buf[: max(0, len(buf) - cut)]
    start = max(-1, len(head) + start_shift)
    expected = walk_python(buf, start, n, bound)
    for kind in BUFFER_KINDS:
        assert walk(kind(buf), start, n, bound) == expected


def test_walk_finds_the_end_of_a_real_payload(wire) -> None:
    arr = wire.frame_array((64, 64))  # 8192 bytes: one block
    payload = wire.bslz4(arr)
    end = walk(memoryview(payload), 12, 1, 8192 + 8192 // 255 + 16)
    assert end == len(payload) == walk_python(payload, 12, 1, 8192 + 8192 // 255 + 16)


def test_every_single_byte_change_and_cut_of_a_block_table(wire) -> None:
    arr = wire.frame_array((96, 96))  # 18432 bytes: 2 full blocks and a part
    payload = bytearray(wire.bslz4(arr))
    bound = 8192 + 8192 // 255 + 16
    for i in range(12, min(len(payload), 200)):
        for value in (0, 1, 0x7F, 0xFF):
            changed = bytearray(payload)
            changed[i] = value
            assert walk(changed, 12, 3, bound) == walk_python(changed, 12, 3, bound)
    for cut in range(len(payload) + 1):
        part = bytes(payload[:cut])
        assert walk(part, 12, 3, bound) == walk_python(part, 12, 3, bound)


def test_wrong_arguments_are_errors_not_crashes() -> None:
    with pytest.raises(TypeError):
        walk(b"\0\0\0\1x", 0, 1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        walk(12, 0, 1, 10)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        walk(b"\0\0\0\1x", "0", 1, 10)  # type: ignore[arg-type]


def test_which_walk_runs_is_said() -> None:
    assert blockwalk.COMPILED is (walk is not walk_python)


@pytest.fixture
def python_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoders and checks as they run where the extension was not built."""
    monkeypatch.setattr(fast2_module, "read_image", None)  # it walks in C
    monkeypatch.setattr(fast2_module, "walk_blocks", walk_python)
    monkeypatch.setattr(framing_module, "walk_blocks", walk_python)


@pytest.mark.parametrize("fmt", ["cbor", "json"])
def test_decoders_with_the_python_walk(python_walk, fmt) -> None:
    from test_fast_paths import FAULTS, compare

    msgs = encode_series(10, fmt=fmt, frame_shape=(48, 40), dtype="uint16", faults=FAULTS)
    events = compare(msgs)
    assert sum(isinstance(e, Frame) for ev in events for e in ev) >= 5


def test_framing_errors_say_the_same_with_either_walk(wire, monkeypatch) -> None:
    arr = wire.frame_array((96, 96))  # three blocks
    payload = wire.bslz4(arr)
    bad_cases = [
        payload[:-1],
        payload[:20],
        payload[: len(payload) // 2],
        payload[:12] + struct.pack(">I", 0) + payload[16:],
        payload[:12] + struct.pack(">I", 1 << 20) + payload[16:],
        payload + b"\0",
    ]

    def messages() -> list[str]:
        out = []
        for bad in bad_cases:
            with pytest.raises(DecodeError) as info:
                check_bslz4(bad, arr.nbytes, 2)
            out.append(str(info.value))
        return out

    raw = wire.frame_array((128, 100)).tobytes()  # lz4: 6 blocks of 4096 bytes and a rest
    lz4 = wire.lz4_hdf5(raw, block=4096)
    lz4_cases = [
        lz4[:-1],
        lz4[: len(lz4) // 2],
        lz4[:12] + struct.pack(">I", 0) + lz4[16:],
        lz4 + b"\0",
    ]

    def lz4_messages() -> list[str]:
        out = []
        for bad in lz4_cases:
            with pytest.raises(DecodeError) as info:
                check_lz4_hdf5(bad, len(raw))
            out.append(str(info.value))
        return out

    compiled, compiled_lz4 = messages(), lz4_messages()
    monkeypatch.setattr(framing_module, "walk_blocks", walk_python)
    assert messages() == compiled
    assert lz4_messages() == compiled_lz4
    for said in (compiled, compiled_lz4):
        assert any("truncated" in m for m in said), said
        assert any("invalid size" in m for m in said), said
    check_lz4_hdf5(lz4, len(raw))  # the whole payload passes with either walk


@pytest.fixture
def python_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream v2 fast path reads every image in Python (as without the extension)."""
    monkeypatch.setattr(fast2_module, "read_image", None)


@pytest.mark.parametrize("fmt", ["cbor", "json"])
def test_decoders_with_the_python_read(python_read, fmt) -> None:
    from test_fast_paths import FAULTS, compare

    decoder = fast2_module.FastImageDecoder()
    assert not decoder.read_in_c
    msgs = encode_series(40, fmt=fmt, frame_shape=(48, 40), dtype="uint16", faults=FAULTS)
    events = compare(msgs)
    assert sum(isinstance(e, Frame) for ev in events for e in ev) >= 30


@pytest.mark.parametrize("index", [0, 3])  # the bitshuffle-LZ4 layouts
def test_every_single_byte_change_and_cut_with_the_python_read(python_read, wire, index):
    from test_fast_paths import test_every_single_byte_change_and_cut

    test_every_single_byte_change_and_cut(wire, index)


@pytest.mark.skipif(not blockwalk.COMPILED, reason="the extension was not built")
@pytest.mark.parametrize("compression", ["bslz4", "lz4", "none"])
def test_the_usual_image_is_read_in_c(monkeypatch: pytest.MonkeyPatch, compression) -> None:
    """Every bitshuffle-LZ4 image after the first few takes the C read; other codecs never do,
    and each image's frame equals the full decoder's."""
    from test_fast_paths import compare

    read = fast2_module.read_image
    assert read is not None
    hits: list[bool] = []

    def spy(*args):
        r = read(*args)
        hits.append(r is not None)
        return r

    monkeypatch.setattr(fast2_module, "read_image", spy)
    msgs = encode_series(100, frame_shape=(48, 40), dtype="uint16", compression=compression)
    decoder = StreamDecoder()
    for msg in msgs:
        decoder.decode(msg)
    if compression == "bslz4":
        # ids from 24 on have a fixed layout (one-byte integers before); the first image of the
        # layout is read in Python, the others in C; the end message is tried and refused
        assert hits == [True] * (100 - 25) + [False]
    else:
        assert not any(hits)
    compare(msgs)  # and the frames are the full decoder's


def test_the_c_read_refuses_wrong_arguments() -> None:
    read = fast2_module.read_image
    if read is None:
        pytest.skip("the extension was not built")
    layout = (b"a", 2, b"b", 4, b"c", 6, b"d", 8, 25)
    payload = (bytes(12), 1, 8300, 0)
    assert read(b"short", layout, payload) is None
    with pytest.raises(TypeError):
        read(b"x", layout[:8], payload)
    with pytest.raises(TypeError):
        read(b"x", layout, payload[:3])
    with pytest.raises(TypeError):
        read(b"x", (b"", *layout[1:]), payload)
    with pytest.raises(TypeError):
        read(12, layout, payload)
    with pytest.raises(TypeError):
        read(b"x", layout, ("not bytes", 1, 2, 3))
