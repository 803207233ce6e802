"""The fault matrix's machinery: real processes, real sockets on 127.0.0.1, real files.

Each test in this folder reads as one case of docs/RELIABILITY.md; what it needs to start a
simulated detector (``stemdaq sim``), a service (``stemdaq serve``), a small disk (tmpfs), to run
the CLI and to check a file lives here:

- ``make_sim(...)`` -> :class:`Sim`: the simulator as a process; SIMPLON over httpx; ``kill()``
  is SIGKILL; ``expected(image_id, n_images)`` recomputes a frame bit for bit.
- ``make_serve(data_dir)`` -> :class:`Serve`: ``stemdaq serve`` on a free port; ``kill()``,
  ``restart()``, JSON helpers, ``wait_final(acq_id)``.
- ``small_disk`` -> :class:`SmallDisk`: a 24 MiB tmpfs (root), else a file-size limit for the
  child (``preexec``), else the test is skipped with the reason.
- ``run_cli(...)`` / ``start_cli(...)``: ``python -m stemdaq.cli ...`` with a bounded wait.
- ``check_file(path, sim, n_images)`` -> :class:`FileReport`: opens the file (SWMR for a
  ``.partial``), reads the written mask and checks every claimed frame against the simulator.
- ``parse_summary(stdout)``: the counters, state, warnings and error of ``acquire``'s table.
- ``assert_counters_add_up(...)``: written + dropped + missing == expected.

Every wait is bounded; every process started here is ended (by its pid) at teardown.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the filters for reading)
import httpx
import numpy as np
import pytest
from polling import free_port, wait_for
from stemdaq.sim.frames import FrameGenerator, default_scan_shape

STEMDAQ = [sys.executable, "-m", "stemdaq.cli"]
# wide, colourless output: rich then prints each table row on one line
ENV = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb", "OMP_NUM_THREADS": "1"}
SIMPLON = "/detector/api/1.8.0"
API = "/api/v1"
EVENT = "/entry/measurement/event1"
DATA = f"{EVENT}/image1/image_4d/intensity"
MASK = f"{EVENT}/image1/frames/written"
ACQ = f"{EVENT}/acquisition"
COUNTER_KEYS = ("frames_expected", "frames_written", "frames_missing", "frames_dropped")


# ------------------------------------------------------------------------------------------------
# processes
# ------------------------------------------------------------------------------------------------


def end_process(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` s; always reaps ``proc`` (by its pid only)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def kill9(proc: subprocess.Popen[Any]) -> None:
    """``kill -9`` the process and reap it."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def run_cli(
    *args: str, timeout: float = 60, preexec: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m stemdaq.cli ARGS``; fails the test (never hangs) after ``timeout`` s."""
    try:
        return subprocess.run(
            [*STEMDAQ, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=ENV,
            preexec_fn=preexec,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"stemdaq {' '.join(args)} did not return within {timeout:g} s: {exc}")


@dataclass
class Cli:
    """A ``stemdaq`` process started in the background; output goes to files."""

    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    def wait(self, timeout: float) -> subprocess.CompletedProcess[str]:
        """Wait (bounded) and return its exit status and output."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.proc.args} did not end within {timeout:g} s")
        return subprocess.CompletedProcess(
            self.proc.args, self.proc.returncode, self.stdout, self.stderr
        )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@pytest.fixture
def start_cli(tmp_path: Path) -> Iterator[Callable[..., Cli]]:
    """Start ``stemdaq ARGS`` in the background (``preexec=`` for the child); ended at teardown."""
    started: list[Cli] = []

    def _start(*args: str, preexec: Callable[[], None] | None = None) -> Cli:
        n = len(started)
        out, err = tmp_path / f"cli{n}.out", tmp_path / f"cli{n}.err"
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(
                [*STEMDAQ, *args], stdout=o, stderr=e, env=ENV, preexec_fn=preexec
            )
        cli = Cli(proc, out, err)
        started.append(cli)
        return cli

    yield _start
    for cli in started:
        end_process(cli.proc)


# ------------------------------------------------------------------------------------------------
# the simulated detector
# ------------------------------------------------------------------------------------------------


@dataclass
class Sim:
    """One ``stemdaq sim`` process and what a test needs of it."""

    proc: subprocess.Popen[str]
    rest: str
    stream: str
    frame_shape: tuple[int, int]
    dtype: str
    seed: int
    log: Path
    _generators: dict[int, FrameGenerator] = field(default_factory=dict)

    # SIMPLON over plain HTTP, as any client would
    def _http(self, method: str, path: str, value: Any = None) -> Any:
        body = None if value is None else {"value": value}
        r = httpx.request(method, f"{self.rest}{SIMPLON}{path}", json=body, timeout=10)
        r.raise_for_status()
        return r.json() if r.content else None

    def state(self) -> str:
        """SIMPLON ``status/state``: idle, ready, acquire, error."""
        return str(self._http("GET", "/status/state")["value"])

    def command(self, name: str) -> int:
        """``PUT command/{name}``; returns the sequence id it answers."""
        return int(self._http("PUT", f"/command/{name}")["sequence id"])

    def times_armed(self) -> int:
        """How many series this detector was armed for (a disarm when idle changes nothing)."""
        if self.state() != "idle":
            pytest.fail(f"times_armed() needs an idle detector, it is {self.state()}")
        return self.command("disarm")

    def start_series(self, n_images: int) -> int:
        """What a vendor's scan program does in passive mode: configure, arm, trigger."""
        for key, value in (("trigger_mode", "ints"), ("ntrigger", 1), ("nimages", n_images)):
            self._http("PUT", f"/config/{key}", value)
        seq = self.command("arm")
        self.command("trigger")
        return seq

    def wait_state(self, states: Sequence[str], timeout: float) -> str:
        """Wait until the detector's state is one of ``states``."""
        return wait_for(
            lambda: (s := self.state()) in states and s, timeout, f"sim state in {states}"
        )

    def kill(self) -> None:
        """SIGKILL: the sender dies mid-series, no end message."""
        kill9(self.proc)

    def expected(self, image_id: int, n_images: int) -> np.ndarray:
        """The frame ``image_id`` of a series of ``n_images`` (same seed, shape, dtype)."""
        gen = self._generators.get(n_images)
        if gen is None:
            gen = FrameGenerator(
                self.frame_shape, self.dtype, default_scan_shape(n_images), self.seed
            )
            self._generators[n_images] = gen
        return gen.frame(image_id)


def start_sim(
    log: Path,
    frame_shape: tuple[int, int] = (64, 64),
    dtype: str = "uint16",
    seed: int = 0,
    compression: str = "bslz4",
    frame_time: float | None = None,
    faults: str | None = None,
) -> Sim:
    """Start ``stemdaq sim --rest-port 0 --stream-port 0 ...`` (stderr to ``log``); the caller
    ends ``sim.proc`` (:func:`end_process`)."""
    args = [
        *STEMDAQ,
        "sim",
        "--rest-port",
        "0",
        "--stream-port",
        "0",
        "--frame-shape",
        f"{frame_shape[0]}x{frame_shape[1]}",
        "--dtype",
        dtype,
        "--seed",
        str(seed),
        "--compression",
        compression,
    ]
    if frame_time:
        args += ["--frame-time", str(frame_time)]
    if faults:
        args += ["--faults", faults]
    with log.open("w") as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, env=ENV)
    sim = Sim(proc, "", "", frame_shape, dtype, seed, log)
    line = _readline(proc, 20)
    m = re.search(r"rest_port=(\d+) stream_port=(\d+)", line)
    if not m:
        end_process(proc)
        pytest.fail(f"sim did not report its ports: {line!r}\n{log.read_text()}")
    sim.rest, sim.stream = f"http://127.0.0.1:{m[1]}", f"tcp://127.0.0.1:{m[2]}"
    return sim


@pytest.fixture
def make_sim(tmp_path: Path) -> Iterator[Callable[..., Sim]]:
    """Start simulators (keywords of :func:`start_sim`: ``frame_shape=(64, 64)``,
    ``dtype="uint16"``, ``seed=0``, ``compression="bslz4"``, ``frame_time=None`` (seconds per
    frame: paces the scan), ``faults=None``); ended at teardown."""
    started: list[Sim] = []

    def _make(**kwargs: Any) -> Sim:
        sim = start_sim(tmp_path / f"sim{len(started)}.log", **kwargs)
        started.append(sim)
        return sim

    yield _make
    for sim in started:
        end_process(sim.proc)


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """One line of ``proc``'s stdout, or "" after ``timeout`` s (never blocks longer)."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return proc.stdout.readline()


# ------------------------------------------------------------------------------------------------
# the service
# ------------------------------------------------------------------------------------------------


@dataclass
class Serve:
    """One ``stemdaq serve`` on a fixed port and data directory; can be killed and restarted."""

    data_dir: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    history: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> Serve:
        """Start and wait (bounded) until ``GET /api/v1/status`` answers."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *STEMDAQ,
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                stdout=log,
                stderr=log,
                env=ENV,
            )
        self.history.append(self.proc)

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                return httpx.get(f"{self.url}{API}/status", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout, "stemdaq serve to answer", period=0.1)
        return self

    def kill(self) -> None:
        """``kill -9`` the service."""
        assert self.proc is not None
        kill9(self.proc)

    def restart(self) -> Serve:
        """Start again on the same port and data directory."""
        return self.start()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Any request to ``/api/v1{path}``."""
        return httpx.request(method, f"{self.url}{API}{path}", timeout=30, **kwargs)

    def get(self, path: str) -> Any:
        r = self.request("GET", path)
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text}"
        return r.json()

    def arm(self, **overrides: Any) -> dict[str, Any]:
        """``POST /api/v1/acquisitions`` with ``overrides``; must answer 201."""
        r = self.request("POST", "/acquisitions", json=overrides)
        assert r.status_code == 201, f"arm: {r.status_code} {r.text}"
        return r.json()

    def wait_final(self, acq_id: str, timeout: float) -> dict[str, Any]:
        """Poll ``GET /acquisitions/{id}`` until its state is final."""
        final = {"completed", "completed_with_gaps", "aborted", "failed"}
        return wait_for(
            lambda: (i := self.get(f"/acquisitions/{acq_id}"))["state"] in final and i,
            timeout,
            f"acquisition {acq_id} to end",
            period=0.1,
        )


@pytest.fixture
def make_serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    """``make_serve(data_dir)`` starts ``stemdaq serve``; every process of it ends at teardown."""
    started: list[Serve] = []

    def _make(data_dir: Path | None = None) -> Serve:
        data = data_dir or tmp_path / "data"
        data.mkdir(parents=True, exist_ok=True)
        serve = Serve(data, free_port(), tmp_path / f"serve{len(started)}.log")
        started.append(serve)
        return serve.start()

    yield _make
    for serve in started:
        for proc in serve.history:
            end_process(proc, grace=10)


# ------------------------------------------------------------------------------------------------
# a small disk
# ------------------------------------------------------------------------------------------------

DISK_MB = 24


@dataclass
class SmallDisk:
    """A folder on a 24 MiB file system (``kind == "tmpfs"``), or, without root, a folder
    whose children get a 24 MiB file-size limit (``kind == "rlimit"``: pass ``preexec``)."""

    path: Path
    kind: str
    preexec: Callable[[], None] | None = None

    def free_mb(self) -> float:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize / 2**20

    def require_tmpfs(self) -> None:
        """Free-space cases need a real small file system; a file-size limit is not one."""
        if self.kind != "tmpfs":
            pytest.skip("needs a small tmpfs (root and mount); only RLIMIT_FSIZE is available")


def _limit_file_size() -> None:  # runs in the child, between fork and exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (DISK_MB << 20, DISK_MB << 20))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A 24 MiB tmpfs mounted in ``tmp_path/disk`` and unmounted at teardown (when root)."""
    path = tmp_path / "disk"
    path.mkdir()
    mounted = False
    if os.geteuid() == 0:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        mounted = r.returncode == 0
    try:
        yield SmallDisk(path, "tmpfs") if mounted else SmallDisk(path, "rlimit", _limit_file_size)
    finally:
        if mounted:
            r = subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
            if r.returncode != 0:  # a process of the test still holds a file there
                subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


# ------------------------------------------------------------------------------------------------
# files and what the CLI says
# ------------------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def partial_of(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


@dataclass
class FileReport:
    """What :func:`check_file` found in a file."""

    path: Path
    written: np.ndarray  # the written mask, (n_m, n_k)
    state: str | None
    warnings: list[str]
    error: str | None
    counters: dict[str, int]
    dropped: dict[str, int]

    @property
    def n_written(self) -> int:
        return int(self.written.astype(bool).sum())


def check_file(path: Path | str, sim: Sim, n_images: int) -> FileReport:
    """Open ``path`` (SWMR for a ``.partial``) and check every frame its mask claims, bit for bit.

    Position ``(m, k)`` holds image ``m * n_k + k`` of a series of ``n_images`` (no serpentine).
    """
    path = Path(path)
    assert path.exists(), f"the reported file {path} does not exist"
    swmr = path.name.endswith(".partial")
    try:
        f = h5py.File(path, "r", swmr=swmr, locking=False)
    except OSError as exc:
        pytest.fail(f"{path} does not open (swmr={swmr}): {exc}")
    with f:
        assert MASK in f, f"{path}: no written mask at {MASK}"
        written = f[MASK][()]
        data = f[DATA]
        n_m, n_k = written.shape
        assert data.shape[:2] == (n_m, n_k)
        for m, k in zip(*np.nonzero(written), strict=True):
            image_id = int(m) * n_k + int(k)
            got = data[m, k]
            want = sim.expected(image_id, n_images)
            assert got.dtype == want.dtype, f"{path}: dtype {got.dtype} != {want.dtype}"
            if not np.array_equal(got, want):
                pytest.fail(f"{path}: frame {image_id} at ({m}, {k}) differs from what was sent")
        state = _text(f[f"{ACQ}/state"][()]) if f"{ACQ}/state" in f else None
        warnings = (
            [_text(w) for w in np.atleast_1d(f[f"{ACQ}/warnings"][()])]
            if f"{ACQ}/warnings" in f
            else []
        )
        error = _text(f[f"{ACQ}/error"][()]) if f"{ACQ}/error" in f else None
        counters = {key: int(f[f"{ACQ}/{key}"][()]) for key in COUNTER_KEYS if f"{ACQ}/{key}" in f}
        dropped: dict[str, int] = {}
        if f"{ACQ}/dropped" in f:
            for reason, ds in f[f"{ACQ}/dropped"].items():
                dropped[reason] = int(ds[()])
    return FileReport(path, written, state, warnings, error, counters, dropped)


_SUMMARY_KEYS = {
    "frames expected": "frames_expected",
    "frames written": "frames_written",
    "frames dropped": "frames_dropped",
    "never received": "frames_missing",
    "frames missing (gaps)": "frames_missing",  # the older table
    "gaps": "gaps",
}


def parse_summary(stdout: str) -> dict[str, Any]:
    """``acquire``'s end-of-acquisition summary -> {state, file, counters..., warnings, error}.

    Reads ``key  value`` lines (and the older boxed table, whose cells are split by ``│``).
    """
    out: dict[str, Any] = {"warnings": [], "dropped": {}}
    title = re.search(r"acquisition (\S+): (\w+)", stdout)
    if title:
        out["id"], out["state"] = title[1], title[2]
    for line in stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if len(cells) != 2:
            m = re.match(r"^\s*(\S.*?)\s{2,}(\S.*?)\s*$", line)
            if not m:
                continue
            cells = [m[1], m[2]]
        key, value = cells
        if key == "warning":
            out["warnings"].append(value)
        elif key.startswith("dropped:"):
            out["dropped"][key.split(":", 1)[1].strip()] = int(value)
        elif key in ("file", "error"):
            out[key] = value
        elif key in _SUMMARY_KEYS:
            out[_SUMMARY_KEYS[key]] = int(value.split()[0])
    return out


def assert_counters_add_up(c: dict[str, Any], where: str) -> None:
    """frames_written + sum(dropped by reason) + frames_missing == frames_expected."""
    dropped = c.get("dropped") or {}
    total = c["frames_written"] + sum(dropped.values()) + c["frames_missing"]
    assert total == c["frames_expected"], (
        f"{where}: written {c['frames_written']} + dropped {dropped} + missing "
        f"{c['frames_missing']} != expected {c['frames_expected']}"
    )


def api_counters(info: dict[str, Any]) -> dict[str, Any]:
    """The counters of a REST ``AcquisitionInfo`` in :func:`assert_counters_add_up`'s form."""
    c = info["counters"]
    return {
        "frames_expected": c["frames_expected"],
        "frames_written": c["frames_written"],
        "frames_missing": c["frames_missing"],
        "dropped": {k: v for k, v in c["dropped"].items() if v},
    }


def file_counters(report: FileReport) -> dict[str, Any]:
    """The counters stored in the file, in :func:`assert_counters_add_up`'s form."""
    return {**report.counters, "dropped": {k: v for k, v in report.dropped.items() if v}}


def clip(text: str, n: int = 1500) -> str:
    """The head and tail of a long output, for assertion messages."""
    return (
        text
        if len(text) <= 2 * n
        else f"{text[:n]}\n[... {len(text) - 2 * n} chars ...]\n{text[-n:]}"
    )


def no_traceback(text: str) -> None:
    assert "Traceback (most recent call last)" not in text, clip(text)


def active_args(sim: Sim, out: Path, scan: str, *extra: str) -> list[str]:
    """``acquire`` in active mode against ``sim`` (control its SIMPLON, read its stream)."""
    return [
        "acquire",
        "--detector",
        sim.rest,
        "--stream",
        sim.stream,
        "--scan",
        scan,
        "--timeout",
        "20",
        "--out",
        str(out),
        *extra,
    ]


def n_of(scan: str) -> int:
    a, b = (int(v) for v in scan.split("x"))
    return a * b
