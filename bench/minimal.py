"""The floor any design must beat: receive, find image id and payload, one direct chunk write.

:func:`run_minimal` decodes each message fully (``cbor2.loads``, or ``json.loads`` of the
stream v1 header part); :func:`run_minimal_scan` locates image id and payload in the CBOR bytes
(:func:`locate`) and writes the payload straight from ZeroMQ's buffer, no copy. One frame per
chunk ``(1, ny, nx)``, the bitshuffle-LZ4 filter declared, ``libver="latest"``. Frames that
arrive uncompressed are compressed here (bitshuffle-LZ4, one thread). No checks, no
bookkeeping, no SWMR: what is left is the work every writer has to do.

:func:`run_minimal_k8` is ``minimal-scan`` with K = 8 frames per chunk ``(8, ny, nx)``, as
stemdaq stores detector bitshuffle-LZ4 frames of whole 8 KiB blocks by default: the blocks of 8
consecutive frames joined under one header, one ``write_direct_chunk`` per 8 frames (the floor
for stemdaq's default; frames must come in order, as the sender sends them).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import zmq
from cases import BENCH_DATASET, Case

BLOCK_BYTES = 8192  # bitshuffle block, as DECTRIS detectors use
_TYPE_IMAGE = b"\x64type\x65image"  # "type": "image"
_TYPE_END = b"\x64type\x63end"  # "type": "end"
_IMAGE_ID = b"\x68image_id"
_TAG40 = b"\xd8\x28\x82\x82"  # tag 40 (multi-dim array), array(2) [shape, data], shape array(2)
_BSLZ4 = b"\xd9\xdc\xb4\x83\x65bslz4"  # tag 56500, array(3) ["bslz4", elem size, bytes]
_HEAD = 512  # the fields before the payload fit in this many bytes


#: frames per chunk of ``minimal-k8``
K8 = 8


def k8_applies(case: Case) -> bool:
    """Whether ``minimal-k8`` can run ``case``: stream v2 bitshuffle-LZ4 of whole blocks."""
    return (
        case.protocol == "stream2"
        and case.codec == "bslz4"
        and case.frame_nbytes % BLOCK_BYTES == 0
    )


def create(path: str, case: Case, n: int, k: int = 1) -> tuple[Any, Any]:
    """The file and its ``(n, ny, nx)`` dataset, ``k`` frames per chunk, bitshuffle-LZ4."""
    import h5py
    import hdf5plugin

    f = h5py.File(path, "w", libver="latest")
    dset = f.create_dataset(
        BENCH_DATASET,
        (n, *case.shape),
        dtype=case.dtype,
        chunks=(k, *case.shape),
        **hdf5plugin.Bitshuffle(cname="lz4"),
    )
    return f, dset


def compressor(case: Case) -> Any:
    """``raw bytes -> bitshuffle-LZ4 chunk`` with the HDF5 filter's 12-byte header."""
    import bitshuffle

    dtype, shape = np.dtype(case.dtype), case.shape
    header = struct.pack(">QI", case.frame_nbytes, BLOCK_BYTES)
    block = BLOCK_BYTES // dtype.itemsize

    def compress(raw: Any) -> bytes:
        arr = np.frombuffer(raw, dtype).reshape(shape)
        return header + bitshuffle.compress_lz4(arr, block).tobytes()

    return compress


def run_minimal(sock: zmq.Socket, case: Case, n: int, path: str) -> int:
    """Full decode per message, one ``write_direct_chunk`` per frame; returns frames written."""
    import cbor2

    f, dset = create(path, case, n)
    write, compress, written = dset.id.write_direct_chunk, compressor(case), 0
    v2 = case.protocol == "stream2"
    while True:
        parts = sock.recv_multipart(copy=False)
        if v2:
            msg = cbor2.loads(parts[0].buffer)
            kind = msg["type"]
            if kind != "image":
                if kind == "end":
                    break
                continue
            typed = msg["data"]["threshold_1"].value[1].value
            chunk = typed.value[2] if isinstance(typed, cbor2.CBORTag) else compress(typed)
            write((msg["image_id"], 0, 0), chunk)
        else:
            head = json.loads(parts[0].bytes)
            htype = head.get("htype")
            if htype != "dimage-1.0":
                if htype == "dseries_end-1.0":
                    break
                continue
            write((head["frame"], 0, 0), parts[2].buffer)  # bs16-lz4<: the filter's framing
        written += 1
    f.close()
    return written


def run_minimal_scan(sock: zmq.Socket, case: Case, n: int, path: str) -> int:
    """Stream v2 without a CBOR decode: :func:`locate`, then write from ZeroMQ's buffer."""
    f, dset = create(path, case, n)
    write, compress, written = dset.id.write_direct_chunk, compressor(case), 0
    while True:
        buf = sock.recv(copy=False).buffer
        found = locate(buf)
        if found is None:
            if _TYPE_END in bytes(buf[:_HEAD]):
                break
            continue
        image_id, payload, compressed = found
        write((image_id, 0, 0), payload if compressed else compress(payload))
        written += 1
    f.close()
    return written


def run_minimal_k8(sock: zmq.Socket, case: Case, n: int, path: str) -> int:
    """``minimal-scan`` with 8 frames per chunk: the blocks of 8 frames joined, one write."""
    import bitshuffle

    f, dset = create(path, case, n, K8)
    write, written = dset.id.write_direct_chunk, 0
    header = struct.pack(">QI", K8 * case.frame_nbytes, BLOCK_BYTES)
    zeros = np.zeros(case.shape, dtype=case.dtype)  # pads the last chunk when n % 8
    zero = bitshuffle.compress_lz4(zeros, BLOCK_BYTES // zeros.itemsize).tobytes()
    bodies: list[Any] = [header]
    first = 0
    while True:
        buf = sock.recv(copy=False).buffer
        found = locate(buf)
        if found is None:
            if _TYPE_END in bytes(buf[:_HEAD]):
                break
            continue
        image_id, payload, _ = found
        if image_id != first + len(bodies) - 1:
            raise ValueError(f"image {image_id} out of order: minimal-k8 needs them in order")
        bodies.append(payload[12:])  # the frame's blocks; the chunk has one header
        written += 1
        if len(bodies) > K8:
            write((first, 0, 0), b"".join(bodies))
            bodies, first = [header], first + K8
    if len(bodies) > 1:
        write((first, 0, 0), b"".join(bodies + [zero] * (K8 + 1 - len(bodies))))
    f.close()
    return written


def _item(b: bytes, p: int) -> tuple[int, int, int]:
    """``(major type, argument, offset after the head)`` of the CBOR item head at ``p``."""
    ib = b[p]
    info = ib & 31
    if info < 24:
        return ib >> 5, info, p + 1
    size = 1 << (info - 24)  # 24..27: 1, 2, 4, 8 bytes follow
    return ib >> 5, int.from_bytes(b[p + 1 : p + 1 + size], "big"), p + 1 + size


def locate(buf: memoryview) -> tuple[int, memoryview, bool] | None:
    """``(image_id, payload view, compressed)`` of a stream v2 image message; None otherwise.

    Reads only the first bytes: the map's keys come in the order the sender (like DECTRIS'
    encoder) writes them, ``type``, ..., ``image_id``, ..., ``data``, and the payload is the
    last item, after tag 40's shape and the typed-array tag. Not a general CBOR decoder.
    """
    head = bytes(buf[:_HEAD])
    if _TYPE_IMAGE not in head:
        return None
    p = head.index(_IMAGE_ID) + len(_IMAGE_ID)
    _, image_id, p = _item(head, p)
    p = head.index(_TAG40, p) + len(_TAG40)
    _, _ny, p = _item(head, p)
    _, _nx, p = _item(head, p)
    _, _typed_array_tag, p = _item(head, p)
    compressed = head.startswith(_BSLZ4, p)
    if compressed:
        _, _elem_size, p = _item(head, p + len(_BSLZ4))
    major, size, p = _item(head, p)
    if major != 2:  # a byte string
        raise ValueError(f"unexpected CBOR major type {major} where the payload should be")
    return image_id, buf[p : p + size], compressed
