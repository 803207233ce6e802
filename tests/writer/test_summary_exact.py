"""The summary's sums are bit-exact: every decoder, codec and integer dtype against numpy."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from stemdaq.errors import DecodeError
from stemdaq.models import Codec
from stemdaq.writer.summary import SummaryAccumulator
from stemdaq.writer.summary_decode import DECODERS, Sums, available_decoder, make_decoder
from writer_helpers import make_frame

HAVE_DECTRIS = available_decoder() == "dectris"


def _frames(n: int, shape: tuple[int, int], dtype: str) -> list[np.ndarray]:
    """Sparse counts, a few pixels at the dtype's maximum (the overflow edge)."""
    rng = np.random.default_rng(len(shape) + n)
    vmax = int(np.iinfo(dtype).max)
    out = []
    for _ in range(n):
        a = rng.poisson(3.0, size=shape).astype(dtype)
        a.reshape(-1)[rng.integers(0, a.size, 5)] = vmax
        out.append(a)
    return out


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("codec", [Codec.BSLZ4, Codec.LZ4, Codec.RAW])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
@pytest.mark.parametrize("shape", [(12, 16), (33, 17), (64, 64)])
def test_sums_match_numpy(decoder, codec, dtype, shape):
    """(33, 17): a bitshuffle tail of fewer than 8 elements, stored raw."""
    arrs = _frames(20, shape, dtype)
    acc = SummaryAccumulator((4, 5), shape, dtype, cpu_share=1.0, decoder=decoder)
    for p, a in enumerate(arrs):
        assert acc.offer(p, make_frame(p, a, codec))
    pattern, total, included = acc.finish()
    stack = np.stack(arrs).astype(np.uint64)
    assert included.all() and acc.failed == 0
    assert acc.decoder == (decoder if HAVE_DECTRIS else "bitshuffle")
    assert pattern.dtype == np.uint64 and total.dtype == np.uint64
    np.testing.assert_array_equal(pattern, stack.sum(axis=0))
    np.testing.assert_array_equal(total, stack.sum(axis=(1, 2)).reshape(4, 5))


@pytest.mark.parametrize("codec", [Codec.BSLZ4, Codec.LZ4])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
def test_decoders_agree_with_the_reference(codec, dtype):
    arr = _frames(1, (48, 40), dtype)[0]
    payload = make_frame(0, arr, codec).payload
    for name in DECODERS:
        out = make_decoder(codec, arr.shape, np.dtype(dtype), name)(memoryview(payload))
        np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_staging_is_moved_before_it_overflows(dtype):
    """All-maximum frames, past the staging room (257 for uint8, 65537 for uint16)."""
    vmax = int(np.iinfo(dtype).max)
    n = 600 if dtype == "uint8" else 65_600
    frame = np.full((1, 8), vmax, dtype=dtype)
    sums = Sums(1, (1, 8), dtype)
    for _ in range(n):
        sums.add(0, frame)
    assert (sums.finish() == n * vmax).all()
    assert sums.finish() is sums.pattern and (sums.pattern == n * vmax).all()  # idempotent


@pytest.mark.parametrize("shape", [(512, 512), (257, 263), (1, 70_000)])
def test_frame_totals_beyond_uint32_are_exact(shape):
    """512x512 uint16 at maximum sums to 2**34: blocks of 65536; 257x263 and 1x70000: uint64."""
    frame = np.full(shape, 65535, dtype=np.uint16)
    sums = Sums(2, shape, "uint16")
    sums.add(1, frame)
    assert int(sums.image[1]) == frame.size * 65535
    assert (sums.finish() == 65535).all()


def test_signed_and_float_frames():
    ints = [np.array([[-5, 3], [2, -1]], dtype=np.int16)] * 3
    sums = Sums(3, (2, 2), "int16")
    for p, a in enumerate(ints):
        sums.add(p, a)
    assert sums.pattern.dtype == np.int64
    np.testing.assert_array_equal(sums.finish(), 3 * ints[0].astype(np.int64))
    assert sums.image.tolist() == [-1, -1, -1]
    floats = np.random.default_rng(1).random((5, 6, 7)).astype(np.float32)
    fsums = Sums(5, (6, 7), "float32")
    for p, a in enumerate(floats):
        fsums.add(p, a)
    np.testing.assert_allclose(fsums.finish(), floats.astype(np.float64).sum(axis=0))
    np.testing.assert_allclose(fsums.image, floats.astype(np.float64).sum(axis=(1, 2)))


@pytest.mark.parametrize("decoder", DECODERS)
def test_corrupt_payloads_raise_decode_error_and_are_counted(decoder):
    arr = _frames(1, (32, 32), "uint16")[0]
    good = make_frame(0, arr, Codec.BSLZ4).payload
    huge = struct.pack(">QI", 1 << 60, 8192) + good[12:]  # would allocate an exabyte
    decode = make_decoder(Codec.BSLZ4, (32, 32), np.dtype("uint16"), decoder)
    for bad in (huge, good[:-5], good[:11], good[:12] + bytes(len(good) - 12)):
        with pytest.raises((DecodeError, RuntimeError, ValueError)):
            decode(bad)
    raw = make_decoder(Codec.RAW, (32, 32), np.dtype("uint16"), decoder)
    with pytest.raises(DecodeError):
        raw(arr.tobytes()[:-2])
    acc = SummaryAccumulator((1, 2), (32, 32), "uint16", cpu_share=1.0, decoder=decoder)
    frame = make_frame(0, arr, Codec.BSLZ4)
    frame.payload = huge
    assert acc.offer(0, frame) and acc.offer(1, make_frame(1, arr, Codec.BSLZ4))
    _, total, included = acc.finish()
    assert included.tolist() == [[False, True]] and acc.failed == 1
    assert int(total[0, 1]) == int(arr.sum())


def test_unknown_decoder_is_refused():
    with pytest.raises(ValueError, match="unknown decoder"):
        make_decoder(Codec.BSLZ4, (4, 4), np.dtype("uint16"), "zlib")
    with pytest.raises(ValueError, match="unknown decoder"):
        SummaryAccumulator((1, 1), (4, 4), "uint16", decoder="zlib")


def test_the_bitshuffle_fallback_when_dectris_is_missing(monkeypatch):
    from stemdaq.writer import summary_decode

    monkeypatch.setattr(summary_decode, "_dectris_decompress", None)
    assert available_decoder() == available_decoder("dectris") == "bitshuffle"
    arr = _frames(1, (16, 16), "uint16")[0]
    acc = SummaryAccumulator((1, 1), (16, 16), "uint16", cpu_share=1.0)
    assert acc.decoder == "bitshuffle" and acc.offer(0, make_frame(0, arr, Codec.BSLZ4))
    np.testing.assert_array_equal(acc.finish()[0], arr.astype(np.uint64))
