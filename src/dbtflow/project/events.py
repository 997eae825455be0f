"""dbt's structured events turned into plain records: one ``DbtEvent`` per event, and a
``NodeResult`` as soon as dbt finishes (or skips) a node.

dbt calls callbacks synchronously on its worker threads; the functions here only read the
protobuf message and never block.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dbtflow.project.results import NodeResult
from dbtflow.project.status import NODE_END_EVENTS, NODE_SKIPPED_EVENT, NodeStatus

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
