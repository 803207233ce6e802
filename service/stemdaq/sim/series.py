"""One series of the simulated detector: which frames each trigger sends, and sending them.

The :class:`~stemdaq.sim.detector.SimulatedDetector` owns the state machine; a :class:`Series`
owns the messages of one arm..end and runs on the stream sender's thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from stemdaq.sim.encode import SeriesEncoder
from stemdaq.sim.faults import InjectionLog
from stemdaq.sim.stream import StreamSender


@dataclass
class Series:
    """Messages and progress of one series.

    ``ints``: each trigger gives ``nimages`` frames, ``ntrigger`` triggers; ``inte``: one frame
    per trigger; ``exts``/``exte``: one trigger stands for the whole external trigger train.
    """

    encoder: SeriesEncoder
    triggers_left: int = 0
    next_image: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)
    fault_aborted: bool = False
    end_queued: bool = False

    def __post_init__(self) -> None:
        cfg = self.encoder.info.config
        if not self.triggers_left:
            external = str(cfg["trigger_mode"]).startswith("ex")
            self.triggers_left = 1 if external else int(cfg["ntrigger"])

    @property
    def series_id(self) -> int:
        """The sequence id ``arm`` returned."""
        return self.encoder.info.series_id

    def next_trigger(self) -> tuple[list[int], bool]:
        """Image ids of the next trigger, and whether it is the last; counts it."""
        cfg = self.encoder.info.config
        total = self.encoder.info.n_images
        mode = str(cfg["trigger_mode"])
        per_trigger = (
            total if mode.startswith("ex") else (1 if mode == "inte" else int(cfg["nimages"]))
        )
        ids = list(range(self.next_image, min(total, self.next_image + per_trigger)))
        self.next_image += len(ids)
        self.triggers_left -= 1
        return ids, self.triggers_left == 0

    def send_start(self, sender: StreamSender) -> None:
        """Send the start message(s)."""
        for msg in self.encoder.start():
            sender.send(msg, self.cancelled.is_set)

    def send_frames(
        self,
        sender: StreamSender,
        ids: list[int],
        pace: float,
        enabled: bool,
        log: InjectionLog,
    ) -> bool:
        """Send ``ids`` (paced at ``pace`` s per frame); True when all went out.

        False when cancelled, when the sender stops, or at the ``abort_after`` fault (which sets
        :attr:`fault_aborted`: no end message follows).
        """
        encoder = self.encoder
        t0 = time.perf_counter()
        for n, image_id in enumerate(encoder.order(ids)):
            if self.cancelled.is_set() or sender.stopping:
                return False
            if encoder.aborts_at(image_id):
                log.add("abort_after", self.series_id, image_id)
                self.fault_aborted = True
                self.cancelled.set()
                return False
            if pace > 0:
                delay = t0 + n * pace - time.perf_counter()
                if delay > 0 and not sender.sleep(delay):
                    return False
            for msg in encoder.image(image_id):
                if enabled and not sender.send(msg, self.cancelled.is_set):
                    return False
        return True

    def send_end(self, sender: StreamSender, enabled: bool) -> None:
        """Send the end message, unless the ``abort_after`` fault ended the series."""
        if not self.fault_aborted and enabled:
            for msg in self.encoder.end():
                sender.send(msg)
