"""The processes of ``dbtflow run``: who they are, and making them end together.

``dbtflow run`` forks the processes that run dbt and Airflow's tasks. If the runner is killed
(SIGKILL, the OOM killer, a CI time-out), they must not go on building models for a run that
nobody drives any more, nor keep the DuckDB file locked: each asks the kernel to kill it when
its parent dies (``die_with_parent``). A process is identified by its pid and start time
(``ProcessId``), so a pid reused by another program after a reboot or a long time is not taken
for the process that was recorded.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
from dataclasses import dataclass
from typing import Any

import psutil

#: prctl(2)'s option that sets the signal a process gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ProcessId:
    """A process as recorded: pid, start time (seconds since the epoch) and host."""

    pid: int
    started: float
    host: str

    @classmethod
    def current(cls) -> ProcessId:
        return cls(pid=os.getpid(), started=start_time(os.getpid()) or 0.0, host=socket.gethostname())

    @property
    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    @property
    def alive(self) -> bool:
        """Whether the process still runs; a process on another host is assumed to."""
        if not self.on_this_host:
            return True
        started = start_time(self.pid)
        return started is not None and abs(started - self.started) < 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "started": self.started, "host": self.host}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessId:
        return cls(pid=int(data["pid"]), started=float(data["started"]), host=str(data["host"]))


def start_time(pid: int) -> float | None:
    """The start time of a running (not zombie) process, or None when there is none."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(process.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def die_with_parent(parent_pid: int) -> None:
    """In a forked child: have the kernel SIGKILL this process when its parent dies (Linux; a
    no-op elsewhere), and exit at once if the parent is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def kill_children() -> None:
    """SIGKILL every process this one started (and theirs): the last resort of a second Ctrl-C."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()


def exit_on_second_interrupt() -> None:
    """Ctrl-C raises ``KeyboardInterrupt`` once, as by default (the run is stopped and marked
    failed); a second Ctrl-C while that happens exits at once with status 130, killing this
    process's children. The run is then failed by the next dbtflow command (``dbtflow.runner.owners``)."""

    def second(signum: int, frame: Any) -> None:
        kill_children()
        os.write(
            2,
            b"\ndbtflow: interrupted twice: stopped at once; the next dbtflow command marks the run "
            b"failed, and `dbtflow retry DAG_ID` resumes it.\n",
        )
        os._exit(130)

    def first(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, second)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, first)
