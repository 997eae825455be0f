"""What a task tells the tasks after it about its dbt results: a typed ``TaskSummary``.

Every dbtflow task that runs dbt (a streamed node, the producer, a single or grouped build, a
dbt Cloud job) returns the same compact summary through XCom, and notifications read it back. It
used to be a dict that gained keys on the way (``ran``, ``job_run_id``) and was read by key
name; here it is one frozen type that converts itself to and from the XCom value. The JSON shape
is exactly the one dbtflow always stored (``counts``, ``nodes``, ``failed``, and ``ran`` or
``job_run_id`` only when set), so XComs written by earlier versions read back, and readers of
the XCom outside dbtflow see no change. A microbatch model's line also has ``batches``: each
batch's status (``{"2024-05-02": "success"}``), only for such models.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dbtflow.project.results import NodeResult
from dbtflow.project.status import FAILED_STATUSES

#: The node kinds a notification lists as built or failed (tests and sources are not).
_BUILDABLE_PREFIXES = ("model.", "seed.", "snapshot.")


@dataclass(frozen=True)
class NodeSummary:
    """One node's line of a task summary."""

    status: str
    execution_time: float = 0.0
    rows_affected: int | None = None
    #: dbt's message; kept for failed nodes only (the XCom stays small).
    message: str | None = None
    #: A microbatch model's batches: batch -> status (``NodeResult.batches``).
    batches: Mapping[str, str] | None = None

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES

    def to_xcom(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "execution_time": self.execution_time,
            "rows_affected": self.rows_affected,
            **({"message": self.message} if self.failed else {}),
            **({"batches": dict(self.batches)} if self.batches else {}),
        }

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> NodeSummary:
        return cls(
            status=str(data.get("status")),
            execution_time=data.get("execution_time") or 0.0,
            rows_affected=data.get("rows_affected"),
            message=data.get("message"),
            batches=data.get("batches"),
        )


@dataclass(frozen=True)
class TaskSummary:
    """Counts by status and one line per node, for one task try."""

    counts: Mapping[str, int] = field(default_factory=dict)
    nodes: Mapping[str, NodeSummary] = field(default_factory=dict)
    #: The failed nodes, sorted.
    failed: tuple[str, ...] = ()
    #: What this try's dbt invocation ran (a build task: everything, or what ``dbt retry`` picked).
    ran: tuple[str, ...] | None = None
    #: The dbt Cloud run the task waited for.
    job_run_id: int | None = None

    @classmethod
    def of(
        cls, results: Iterable[NodeResult], *, ran: Iterable[str] | None = None, job_run_id: int | None = None
    ) -> TaskSummary:
        """The summary of ``results`` (one per node)."""
        items = list(results)
        counts: dict[str, int] = {}
        for r in items:
            counts[r.status] = counts.get(r.status, 0) + 1
        return cls(
            counts=counts,
            nodes={
                r.unique_id: NodeSummary(
                    status=r.status,
                    execution_time=round(r.execution_time, 3),
                    rows_affected=r.rows_affected,
                    message=r.message if r.failed else None,
                    batches=r.batches,
                )
                for r in items
            },
            failed=tuple(sorted(r.unique_id for r in items if r.failed)),
            ran=None if ran is None else tuple(sorted(ran)),
            job_run_id=job_run_id,
        )

    def to_xcom(self) -> dict[str, Any]:
        """The XCom value (JSON): the shape dbtflow has always stored."""
        value: dict[str, Any] = {
            "counts": dict(self.counts),
            "nodes": {uid: node.to_xcom() for uid, node in self.nodes.items()},
            "failed": list(self.failed),
        }
        if self.ran is not None:
            value["ran"] = list(self.ran)
        if self.job_run_id is not None:
            value["job_run_id"] = self.job_run_id
        return value

    @classmethod
    def from_xcom(cls, value: Mapping[str, Any]) -> TaskSummary:
        """The summary a task returned, as stored (missing keys read as empty)."""
        ran = value.get("ran")
        return cls(
            counts=dict(value.get("counts") or {}),
            nodes={uid: NodeSummary.from_xcom(node) for uid, node in (value.get("nodes") or {}).items()},
            failed=tuple(value.get("failed") or ()),
            ran=None if ran is None else tuple(ran),
            job_run_id=value.get("job_run_id"),
        )

    def models(self, statuses: Iterable[str]) -> list[str]:
        """The models, seeds and snapshots with one of ``statuses``."""
        wanted = frozenset(statuses)
        return [
            uid
            for uid, node in self.nodes.items()
            if uid.startswith(_BUILDABLE_PREFIXES) and node.status in wanted
        ]
