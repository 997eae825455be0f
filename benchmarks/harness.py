"""How the benchmarks measure: wall time, CPU of a process tree, repetitions and medians.

Kept apart from what is measured (``scenarios``, ``scheduler``, ``shapes``) so that every table
times its commands the same way: from outside the process, and with the CPU (user + system) of
the whole process tree, reaped children included, since dbt and Airflow do their work in
subprocesses that have exited by the time a command returns.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
REPO = HERE.parent
EXAMPLE = REPO / "src" / "dbtflow" / "examples" / "bikeshare"
BIN = Path(sys.executable).parent
COSMOS_VENV = WORK / "cosmos-venv"
COSMOS_VERSION = "1.15.*"
THREADS = "2"


@dataclass
class Result:
    """Repeated measurements of one thing (CPU seconds too, when they were measured)."""

    label: str
    seconds: list[float] = field(default_factory=list)
    peak_mb: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    failed: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds and not self.failed else None

    @property
    def median_mb(self) -> float | None:
        return statistics.median(self.peak_mb) if self.peak_mb else None

    @property
    def median_cpu(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu and not self.failed else None

    def cell(self) -> str:
        if self.failed:
            return f"{self.failed}"
        if not self.seconds:
            return "not run"
        spread = f" ({min(self.seconds):.1f}-{max(self.seconds):.1f})" if len(self.seconds) > 1 else ""
        return f"{self.median:.2f} s{spread}, n={len(self.seconds)}"

    def cpu_cell(self) -> str:
        if self.failed or not self.cpu:
            return "-"
        spread = f" ({min(self.cpu):.1f}-{max(self.cpu):.1f})" if len(self.cpu) > 1 else ""
        return f"{self.median_cpu:.1f} s{spread}"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_cpu(
    command: list[str], *, env: dict[str, str], cwd: Path | None = None, timeout: float = 3600
) -> tuple[float, float]:
    """Run a command; return its wall time and the CPU seconds of its process tree.

    The CPU is this process's reaped-children usage before and after: the command and every
    descendant that was waited for (dbt's and Airflow's subprocesses). One command runs at a
    time, so the difference is that command's alone. Raise with its output if it fails.
    """
    cpu_before = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - started
    cpu = _children_cpu() - cpu_before
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-2000:]
        raise RuntimeError(f"{' '.join(command[:4])}... exited {done.returncode}:\n{tail}")
    return elapsed, cpu


def timed(
    command: list[str], *, env: dict[str, str], cwd: Path | None = None, timeout: float = 3600
) -> float:
    """Run a command; return its wall time in seconds (raise with its output if it fails)."""
    return timed_cpu(command, env=env, cwd=cwd, timeout=timeout)[0]


def repeat(label: str, runs: int, once: Callable[[], float]) -> Result:
    result = Result(label)
    for i in range(runs):
        try:
            result.seconds.append(once())
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            result.failed = f"failed: {str(exc).splitlines()[0][:120]}"
            log(f"{label}: {exc}")
            break
        log(f"{label} run {i + 1}/{runs}: {result.seconds[-1]:.2f} s")
    return result


def alternate(
    runs: int,
    first: tuple[str, Callable[[], tuple[float, float]]],
    second: tuple[str, Callable[[], tuple[float, float]]],
) -> tuple[Result, Result, list[float]]:
    """``runs`` pairs of two measurements, the order swapped every pair so that drift of a
    shared machine weighs on both sides alike; return both results and each pair's ratio
    (second / first)."""
    results = (Result(first[0]), Result(second[0]))
    ratios: list[float] = []
    for i in range(runs):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        pair: dict[int, float] = {}
        for side in order:
            label, once = (first, second)[side]
            result = results[side]
            if result.failed:
                continue
            try:
                wall, cpu = once()
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                result.failed = f"failed: {str(exc).splitlines()[0][:120]}"
                log(f"{label}: {exc}")
                continue
            result.seconds.append(wall)
            result.cpu.append(cpu)
            pair[side] = wall
            log(f"{label} run {i + 1}/{runs}: {wall:.2f} s, CPU {cpu:.1f} s")
        if len(pair) == 2 and pair[0] > 0:
            ratios.append(pair[1] / pair[0])
    return results[0], results[1], ratios


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a live process tree so far, reaped children included.

    Each live process counts its own time and its waited-for children's; a process that has
    exited counts through the process that reaped it. A process re-parented outside the tree
    (a daemon) is lost, so this is a lower bound for such trees.
    """
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total
