"""HDF5 framing: checks, and the framed payloads read back through the real HDF5 filters."""

from __future__ import annotations

import struct

import h5py
import hdf5plugin
import lz4.block
import numpy as np
import pytest
from stemdaq.errors import DecodeError
from stemdaq.receiver import check_bslz4, check_lz4_hdf5, lz4_hdf5_frame


def _roundtrip_h5(tmp_path, payload: bytes, arr: np.ndarray, compression) -> np.ndarray:
    with h5py.File(tmp_path / "f.h5", "w") as f:
        ds = f.create_dataset(
            "d", shape=(1, *arr.shape), chunks=(1, *arr.shape), dtype=arr.dtype, **compression
        )
        ds.id.write_direct_chunk((0, 0, 0), payload)
        return ds[0]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
def test_bslz4_payload_is_a_valid_hdf5_chunk(wire, tmp_path, dtype):
    arr = wire.frame_array((64, 50), dtype)
    payload = wire.bslz4(arr)
    check_bslz4(payload, arr.nbytes, arr.dtype.itemsize)
    back = _roundtrip_h5(tmp_path, payload, arr, hdf5plugin.Bitshuffle(cname="lz4"))
    np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
def test_lz4_framed_bare_block_is_a_valid_hdf5_chunk(wire, tmp_path, dtype):
    arr = wire.frame_array((64, 50), dtype)
    payload = lz4_hdf5_frame(lz4.block.compress(arr.tobytes(), store_size=False), arr.nbytes)
    check_lz4_hdf5(payload, arr.nbytes)
    back = _roundtrip_h5(tmp_path, payload, arr, hdf5plugin.LZ4())
    np.testing.assert_array_equal(back, arr)


def test_multi_block_lz4_hdf5_checks(wire):
    raw = wire.frame_array((128, 128)).tobytes()
    payload = wire.lz4_hdf5(raw, block=4096)
    check_lz4_hdf5(payload, len(raw))
    for bad in (payload[:-1], payload + b"\0", payload[:11]):
        with pytest.raises(DecodeError):
            check_lz4_hdf5(bad, len(raw))
    with pytest.raises(DecodeError):
        check_lz4_hdf5(payload, len(raw) + 2)
    check_lz4_hdf5(payload[:12] + b"\0" * 9, len(raw), walk=False)  # header-only mode


def test_bslz4_checks(wire):
    arr = wire.frame_array((37, 41))  # leftover bytes at the end (37*41 % 8 != 0)
    payload = wire.bslz4(arr)
    check_bslz4(payload, arr.nbytes, 2)
    bad_cases = [
        payload[:-1],
        payload + b"\0",
        payload[:8],
        struct.pack(">QI", arr.nbytes, 0) + payload[12:],
        struct.pack(">QI", arr.nbytes, 8190) + payload[12:],
        payload[:12] + struct.pack(">I", 0) + payload[16:],
        payload[:12] + struct.pack(">I", 1 << 20) + payload[16:],
    ]
    for bad in bad_cases:
        with pytest.raises(DecodeError) as info:
            check_bslz4(bad, arr.nbytes, 2)
        assert info.value.reason == "corrupt"
    with pytest.raises(DecodeError):
        check_bslz4(payload, arr.nbytes - 2, 2)


def test_lz4_hdf5_frame_rejects_impossible_blocks():
    for block, size in ((b"", 10), (b"x" * 100, 10), (b"x", 0)):
        with pytest.raises(DecodeError):
            lz4_hdf5_frame(block, size)
    with pytest.raises(DecodeError):  # same length as the frame but not an LZ4 block
        lz4_hdf5_frame(b"\xff" * 32, 32)
