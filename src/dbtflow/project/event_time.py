"""The time window a dbt invocation builds microbatch models for: ``--event-time-start/-end``.

dbt's microbatch models build time in batches; without flags dbt picks the batches itself (from
the model's ``begin`` on an empty table, else its ``lookback`` before now). An Airflow DAG run
already says which time it covers, its data interval, so the invocations of a scheduled run pass
that interval to dbt and every microbatch model builds the batches of that interval, no more.
The window is a value of its own so that every path that runs dbt (the streamed producer, a node
built alone, a single or grouped task, the forked dbt of ``dbtflow run``) passes the same flags,
made here. Both bounds are UTC, the start inclusive and the end exclusive, as dbt reads them.
Other models ignore the flags (dbt filters inputs by ``event_time`` for microbatch models only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dbtflow.project.results import NodeResult
from dbtflow.project.status import BATCH_SUCCESS

#: The dbt commands that take the flags (``dbt retry`` reuses those of the invocation it retries).
EVENT_TIME_COMMANDS = frozenset({"build", "run"})
_FORMAT = "%Y-%m-%dT%H:%M:%S"


@dataclass(frozen=True)
class EventTimeWindow:
    """``[start, end)`` in UTC: the time a DAG run covers, as dbt's microbatch flags."""

    start: datetime
    end: datetime

    @classmethod
    def of_interval(cls, start: datetime | None, end: datetime | None) -> EventTimeWindow | None:
        """The window of a data interval, or ``None`` when the run has none: a bound is missing,
        or the interval is empty (a manual run of an unscheduled DAG, or a trigger timetable,
        whose runs cover an instant). Naive times are taken as UTC."""
        if start is None or end is None:
            return None
        start, end = _utc(start), _utc(end)
        if start >= end:
            return None
        return cls(start=start, end=end)

    @classmethod
    def of_run(cls, dag_run: Any) -> EventTimeWindow | None:
        """The window of an Airflow DAG run (its ``data_interval_start`` and ``_end``)."""
        return cls.of_interval(dag_run.data_interval_start, dag_run.data_interval_end)

    def flags(self) -> list[str]:
        return [
            "--event-time-start",
            self.start.strftime(_FORMAT),
            "--event-time-end",
            self.end.strftime(_FORMAT),
        ]

    def describe(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"

    def to_json(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}

    @classmethod
    def from_json(cls, value: Any) -> EventTimeWindow | None:
        if not value:
            return None
        return cls.of_interval(datetime.fromisoformat(value["start"]), datetime.fromisoformat(value["end"]))


def event_time_flags(command: str, window: EventTimeWindow | None) -> list[str]:
    """The flags ``dbt <command>`` gets for ``window`` (none for other commands, or no window)."""
    if window is None or command not in EVENT_TIME_COMMANDS:
        return []
    return window.flags()


def failed_batches(window: EventTimeWindow, earlier: Sequence[NodeResult]) -> EventTimeWindow | None:
    """The part of ``window`` a retry builds: from the first failed batch to the end of the last
    one, when ``earlier`` (the newest results, in this run, of the nodes a retry builds) has one
    microbatch model, with some batches built and some failed; else ``None`` (build ``window``).

    ``dbt retry`` does this for single and grouped tasks; a per_model task builds its model alone
    with ``dbt build``, so its retry narrows the window to what failed instead. A batch between
    two failed ones is built again (each batch replaces its rows: nothing is doubled).
    """
    microbatch = [r for r in earlier if r.batches]
    if len(microbatch) != 1:
        return None
    batches = microbatch[0].batches or {}
    failed = [batch for batch, status in batches.items() if status != BATCH_SUCCESS]
    if not failed or len(failed) == len(batches):
        return None
    bounds = [batch_bounds(batch) for batch in failed]
    start = max(window.start, min(b[0] for b in bounds))
    end = min(window.end, max(b[1] for b in bounds))
    return EventTimeWindow.of_interval(start, end)


def batch_bounds(batch: str) -> tuple[datetime, datetime]:
    """A batch's ``[start, end)`` from its name (``2024``, ``2024-05``, ``2024-05-02``,
    ``2024-05-02T01``: dbt names a batch by its start, to the precision of the batch size)."""
    if len(batch) == 4:
        start = datetime(int(batch), 1, 1, tzinfo=UTC)
        return start, start.replace(year=start.year + 1)
    if len(batch) == 7:
        start = datetime.strptime(batch, "%Y-%m").replace(tzinfo=UTC)
        following = start.replace(day=28) + timedelta(days=4)
        return start, following.replace(day=1)
    if len(batch) == 10:
        start = datetime.strptime(batch, "%Y-%m-%d").replace(tzinfo=UTC)
        return start, start + timedelta(days=1)
    start = datetime.strptime(batch, "%Y-%m-%dT%H").replace(tzinfo=UTC)
    return start, start + timedelta(hours=1)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
