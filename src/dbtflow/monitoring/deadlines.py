"""Per-model deadlines: notice, while dbt is still running a node, that it outlives its expected
duration.

``DurationWatch`` sits on a dbt invocation's event stream: a node starts with ``LogStartLine`` (or
``NodeStart``) and ends with its result. A background thread checks the running nodes twice a
second and calls ``on_late`` once for each node that runs longer than expected. Expected durations
are given explicitly, or learned from the run-time history (``factor`` times the slowest of the
node's recent successful runs, at least ``floor_s``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dbtflow.monitoring.history import NodeRun
from dbtflow.project.events import DbtEvent
from dbtflow.project.status import NODE_END_EVENTS, SUCCEEDED_STATUSES

_STARTS = frozenset({"LogStartLine", "NodeStart"})

LateCallback = Callable[[str, float, float], None]


@dataclass(frozen=True)
class ModelDeadlines:
    """Expected durations of nodes: ``expected`` (unique id or node name -> seconds), else learned
    from history when ``learn`` is set; ``notifiers`` are told when a node outlives its own."""

    expected: Mapping[str, float] | None = None
    learn: bool = True
    factor: float = 2.0
    floor_s: float = 60.0
    last: int = 20
    notifiers: tuple[object, ...] = ()


def learned_expectations(
    history: list[NodeRun], *, factor: float, floor_s: float, last: int
) -> dict[str, float]:
    """``factor`` times each node's slowest recent successful run, at least ``floor_s``."""
    by_node: dict[str, list[float]] = {}
    for run in history:
        if run.status in SUCCEEDED_STATUSES:
            by_node.setdefault(run.unique_id, []).append(run.execution_s)
    return {uid: max(floor_s, factor * max(times[-last:])) for uid, times in by_node.items()}


class DurationWatch:
    """A dbt event callback that reports nodes running past their expected duration."""

    def __init__(
        self,
        expected: Mapping[str, float],
        on_late: LateCallback,
        also: Callable[[DbtEvent], None] | None = None,
        poll_s: float = 0.5,
    ) -> None:
        self.expected = dict(expected)
        self.on_late = on_late
        self.also = also
        self.poll_s = poll_s
        self.running: dict[str, float] = {}
        self.reported: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="dbtflow-deadlines", daemon=True)
        if self.expected:
            self._thread.start()

    def _limit(self, unique_id: str) -> float | None:
        return self.expected.get(unique_id) or self.expected.get(unique_id.split(".")[-1])

    def __call__(self, event: DbtEvent) -> None:
        if self.also is not None:
            self.also(event)
        if event.unique_id is None:
            return
        with self._lock:
            if event.name in _STARTS:
                self.running.setdefault(event.unique_id, time.monotonic())
            elif event.name in NODE_END_EVENTS:
                self.running.pop(event.unique_id, None)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            now = time.monotonic()
            with self._lock:
                late = [
                    (uid, now - started, limit)
                    for uid, started in self.running.items()
                    if uid not in self.reported
                    and (limit := self._limit(uid)) is not None
                    and now - started > limit
                ]
                self.reported.update(uid for uid, _, _ in late)
            for uid, running_s, limit in late:
                self.on_late(uid, running_s, limit)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
