"""The block walk: the compiled one (``stemdaq._blockwalk``) against the Python reference, and
the decoders and framing checks with the Python walk (what runs where no compiler built it)."""

from __future__ import annotations

import struct

import pytest
import stemdaq.receiver.fast2 as fast2_module
import stemdaq.receiver.framing as framing_module
from hypothesis import given, settings
from hypothesis import strategies as st
from stemdaq.errors import DecodeError
from stemdaq.models import Frame
from stemdaq.receiver import blockwalk
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
