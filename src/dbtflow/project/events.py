"""dbt's structured events turned into plain records: one ``DbtEvent`` per event, and a
``NodeResult`` as soon as dbt finishes (or skips) a node.

dbt calls callbacks synchronously on its worker threads; the functions here only read the
protobuf message and never block.
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass, replace
from typing import Any

from dbtflow.project.results import NodeResult
from dbtflow.project.status import (
    BATCH_RESULT_EVENT,
    BATCH_SUCCESS,
    NODE_END_EVENTS,
    NODE_SKIPPED_EVENT,
    NodeStatus,
)

#: ``LogBatchResult``'s description: ``batch 2024-05-02 of main.trips_microbatch``.
_BATCH_DESCRIPTION = re.compile(r"^batch (\S+) of ")

_LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40}


@dataclass(frozen=True, slots=True)
class DbtEvent:
    """One dbt event as a structured record."""

    ts: str
    level: str
    name: str
    code: str
    msg: str
    unique_id: str | None = None
    node_status: str | None = None
    duration_s: float | None = None

    @property
    def levelno(self) -> int:
        return _LEVELS.get(self.level, 20)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _node_info(data: Any) -> Any | None:
    try:
        info = data.node_info
    except AttributeError:
        return None
    return info if info.unique_id else None


def event_record(event: Any) -> DbtEvent:
    """Convert a dbt ``EventMsg`` into a ``DbtEvent``."""
    info = event.info
    node = _node_info(event.data)
    duration = getattr(event.data, "execution_time", None)
    return DbtEvent(
        ts=info.ts.ToDatetime().isoformat() + "Z",
        level=info.level,
        name=info.name,
        code=info.code,
        msg=info.msg,
        unique_id=node.unique_id if node is not None else None,
        node_status=node.node_status if node is not None else None,
        duration_s=float(duration) if duration else None,
    )


def node_result(event: Any) -> NodeResult | None:
    """The result carried by a ``NodeFinished`` or ``SkippingDetails`` event, else ``None``."""
    name = event.info.name
    if name not in NODE_END_EVENTS:
        return None
    node = _node_info(event.data)
    if node is None:
        return None
    if name == NODE_SKIPPED_EVENT:
        return NodeResult(
            unique_id=node.unique_id,
            status=NodeStatus.SKIPPED.value,
            message="skipped: an upstream node failed",
        )
    run = event.data.run_result
    started = completed = None
    for timing in run.timing_info:
        if timing.name == "execute":
            started = timing.started_at.ToDatetime().isoformat() + "Z"
            completed = timing.completed_at.ToDatetime().isoformat() + "Z"
    rows = None
    if run.HasField("adapter_response"):
        value = run.adapter_response.fields.get("rows_affected")
        if value is not None and value.number_value >= 0:
            rows = int(value.number_value)
    return NodeResult(
        unique_id=node.unique_id,
        status=run.status,
        message=run.message or None,
        started_at=started,
        completed_at=completed,
        execution_time=float(run.execution_time),
        rows_affected=rows,
        failures=int(run.num_failures) if run.num_failures else None,
    )


class BatchResults:
    """The batches of each microbatch model as dbt ends them, attached to the model's result.

    dbt runs each batch as a node of its own: a batch ends with a ``LogBatchResult`` event, then a
    ``NodeFinished`` event under the model's unique id, and the model itself ends with one more
    ``NodeFinished``, which carries no batches. So the batches are collected from their events,
    each batch's own ``NodeFinished`` is dropped (it would report the model done after its first
    batch), and the model's last one gets them all.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches: dict[str, dict[str, str]] = {}
        self._batch_ends: dict[str, int] = {}

    def see(self, event: Any) -> None:
        if event.info.name != BATCH_RESULT_EVENT:
            return
        node = _node_info(event.data)
        match = _BATCH_DESCRIPTION.match(event.data.description)
        if node is None or match is None:
            return
        status = event.data.status if event.data.status in ("error", "skipped") else BATCH_SUCCESS
        with self._lock:
            self._batches.setdefault(node.unique_id, {})[match.group(1)] = status
            self._batch_ends[node.unique_id] = self._batch_ends.get(node.unique_id, 0) + 1

    def result(self, result: NodeResult) -> NodeResult | None:
        """The node's result with its batches, or ``None`` for the end of one of its batches."""
        with self._lock:
            if self._batch_ends.get(result.unique_id, 0) > 0:
                self._batch_ends[result.unique_id] -= 1
                return None
            batches = self._batches.pop(result.unique_id, None)
        return result if batches is None else replace(result, batches=batches)
