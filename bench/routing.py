"""CPU per frame of the pieces of routing, on real ZeroMQ sockets (tcp, 127.0.0.1).

A sender process pushes ``--frames`` stream v2 images of 192x192 u16 bslz4 (from the
simulator's encoder); this process receives them in one thread and does, per message:

==========  ==============================================================================
recv        ``recv(copy=False)`` and nothing else (what any rank pays anyway)
parse       recv + the fan's header read (``routing.headers.v2_image_id``) + owner
fan         recv + parse + ``send(copy=False)`` to the owner's PUSH socket (a PULL in a second
            process drains them): the fan's work per frame
==========  ==============================================================================

The thread's CPU (``time.thread_time``) over the run divided by the frames is printed. The
two designs then cost, per frame: fan = ``fan`` (on its own core) + ``recv`` in the owner;
forwarding by the ranks = ``parse`` on every frame + (N-1)/N x (``fan`` - ``parse`` + ``recv``),
on the ranks' data threads.

Usage: ``python bench/routing.py --frames 20000``
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import zmq


def _sender(endpoint: str, n: int) -> None:
    from stemdaq.sim.replay import encode_series

    msgs = encode_series(min(n, 512), frame_shape=(192, 192), dtype="uint16")
    images = [m[0] for m in msgs[1:-1]]
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, 10000)
    s.connect(endpoint)
    for i in range(n):
        s.send(images[i % len(images)], copy=False)
    s.close(linger=-1)
    ctx.term()


def _sink(endpoint: str, n: int) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.connect(endpoint)
    for _ in range(n):
        s.recv(copy=False)
    s.close(0)
    ctx.term()


def run(mode: str, n: int) -> float:
    """CPU microseconds per frame of ``mode`` (see the module docstring)."""
    from stemdaq.routing.headers import v2_image_id

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 10000)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    out_port = push.bind_to_random_port("tcp://127.0.0.1")
    sink = mp.Process(target=_sink, args=(f"tcp://127.0.0.1:{out_port}", n))
    if mode == "fan":
        sink.start()
    sender = mp.Process(target=_sender, args=(f"tcp://127.0.0.1:{port}", n))
    sender.start()
    pull.poll(30000)
    t0 = time.process_time()
    for _ in range(n):
        part = pull.recv(copy=False)
        if mode == "recv":
            continue
        image_id = v2_image_id(part.buffer)
        owner = (image_id // 64) % 2
        if mode == "fan" and owner >= 0:
            push.send(part, copy=False)
    cpu = time.process_time() - t0
    sender.join()
    if mode == "fan":
        sink.join()
    pull.close(0)
    push.close(0)
    ctx.term()
    return 1e6 * cpu / n


def main() -> None:
    """Print us/frame of each piece and of the two designs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20000)
    args = parser.parse_args()
    us = {mode: run(mode, args.frames) for mode in ("recv", "parse", "fan")}
    for mode, value in us.items():
        print(f"{mode:6s} {value:6.2f} us/frame")
    for n in (2, 4):
        forward = us["parse"] - us["recv"] + (n - 1) / n * (us["fan"] - us["parse"] + us["recv"])
        print(
            f"N={n}: fan {us['fan']:.2f} us/frame on its own core; forwarding by the ranks "
            f"{forward:.2f} us/frame extra on the ranks' data threads"
        )


if __name__ == "__main__":
    main()
