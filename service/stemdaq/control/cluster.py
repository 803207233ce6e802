"""Where the ranks and the fan are: started here as processes, or elsewhere (Kubernetes).

``stemdaq serve --ranks N`` starts ``N`` ``stemdaq rank`` processes on ``rank_port + i`` and one
``stemdaq fan`` on ``fan_control_port`` (data ports ``fan_port + i``), waits until each answers
``/healthz``, and stops them at shutdown. With ``rank_urls``/``fan_url`` set the service only
talks to them (a StatefulSet of ranks and a fan Deployment do the starting).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import httpx

from stemdaq.errors import ConfigError
from stemdaq.settings import Settings

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


@dataclass
class RankCluster:
    """The control URLs of the ranks and the fan, and how the ranks reach the fan's data ports."""

    rank_urls: list[str]
    fan_url: str
    fan_host: str
    fan_port: int
    block_rows: int
    #: local processes by name ("rank 0", "fan"): their exit codes explain a loss
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def ranks(self) -> int:
        """Number of ranks."""
        return len(self.rank_urls)

    def stream_endpoint(self, index: int) -> str:
        """Where rank ``index`` receives its frames (the fan's data port for it)."""
        return f"tcp://{self.fan_host}:{self.fan_port + index}"

    def exit_note(self, name: str) -> str | None:
        """``exit code N`` / ``killed by SIGKILL`` if local process ``name`` ended, else None."""
        proc = self.processes.get(name)
        code = proc.poll() if proc is not None else None
        if code is None:
            return None
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def close(self, timeout: float = 10) -> None:
        """Stop the local processes (SIGTERM, then SIGKILL after ``timeout`` s)."""
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for name, proc in self.processes.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s (pid %d) did not stop: killed", name, proc.pid)
                proc.kill()
                proc.wait()


def cluster_from_settings(settings: Settings) -> RankCluster:
    """The ranks and fan the settings name; started here if they name none."""
    if settings.rank_urls:
        if len(settings.rank_urls) != settings.ranks or not settings.fan_url:
            raise ConfigError(
                f"rank_urls has {len(settings.rank_urls)} URLs for ranks={settings.ranks}; "
                "with rank_urls, give fan_url as well"
            )
        return RankCluster(
            list(settings.rank_urls),
            settings.fan_url,
            settings.fan_host,
            settings.fan_port,
            settings.rank_block_rows,
        )
    return start_local(settings)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGTERM this child when the service dies (``kill -9`` included), so a rank
    aborts and closes its file instead of living on as an orphan holding its port."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def start_local(settings: Settings, *, ready_timeout: float = 60) -> RankCluster:
    """Start ``settings.ranks`` rank processes and a fan here; return once all answer."""
    cmd = [sys.executable, "-m", "stemdaq.cli"]
    env = {**os.environ, "STEMDAQ_DATA_DIR": str(settings.data_dir)}
    env["STEMDAQ_LOG_LEVEL"] = settings.log_level
    cluster = RankCluster(
        [f"http://127.0.0.1:{settings.rank_port + i}" for i in range(settings.ranks)],
        f"http://127.0.0.1:{settings.fan_control_port}",
        "127.0.0.1",
        settings.fan_port,
        settings.rank_block_rows,
    )
    try:
        cluster.processes["fan"] = subprocess.Popen(
            [
                *cmd,
                "fan",
                "--ranks",
                str(settings.ranks),
                "--fan-port",
                str(settings.fan_port),
                "--fan-control-port",
                str(settings.fan_control_port),
            ],
            env=env,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads yet at start-up
        )
        for i in range(settings.ranks):
            cluster.processes[f"rank {i}"] = subprocess.Popen(
                [*cmd, "rank", "--rank-index", str(i), "--port", str(settings.rank_port + i)],
                env=env,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        _wait_ready(cluster, ready_timeout)
    except BaseException:
        cluster.close()
        raise
    logger.info(
        "started %d local ranks (ports %d..) and a fan (port %d)",
        settings.ranks,
        settings.rank_port,
        settings.fan_control_port,
    )
    return cluster


def _wait_ready(cluster: RankCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    urls = {"fan": cluster.fan_url} | {f"rank {i}": url for i, url in enumerate(cluster.rank_urls)}
    with httpx.Client(timeout=2) as http:
        for name, url in urls.items():
            while True:
                note = cluster.exit_note(name)
                if note is not None:
                    raise ConfigError(f"local {name} did not start ({note}); is its port free?")
                try:
                    if http.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise ConfigError(f"local {name} did not answer at {url} within {timeout} s")
                time.sleep(0.1)
