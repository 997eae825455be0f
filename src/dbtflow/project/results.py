"""What dbt reported for one node: status, timing, rows affected and message.

Results come from two places that carry the same facts: dbt's ``NodeFinished`` / ``SkippingDetails``
events while a run is going on, and ``run_results.json`` afterwards (also the shape dbt Cloud
serves). Both end up as ``NodeResult``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from dbtflow.project.status import BATCH_ERROR, BATCH_SUCCESS, FAILED_STATUSES, SKIPPED_STATUSES


@dataclass(frozen=True)
class NodeResult:
    """The outcome of one node in one dbt invocation."""

    unique_id: str
    status: str
    message: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    execution_time: float = 0.0
    rows_affected: int | None = None
    failures: int | None = None
    #: A microbatch model's batches, each batch's start as dbt names it (``2024-05-02``) -> its
    #: status (``success``, ``error``, ``skipped``); ``None`` for other nodes.
    batches: Mapping[str, str] | None = None

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES

    @property
    def skipped(self) -> bool:
        return self.status in SKIPPED_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeResult:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})  # type: ignore[arg-type]


def _rows_affected(adapter_response: Mapping[str, Any] | None) -> int | None:
    if not adapter_response:
        return None
    value = adapter_response.get("rows_affected")
    if value is None or value == -1:
        return None
    return int(value)


def _execute_timing(timing: Iterable[Mapping[str, Any]]) -> tuple[str | None, str | None]:
    for item in timing:
        if item.get("name") == "execute":
            return item.get("started_at") or item.get("startedAt"), item.get("completed_at") or item.get(
                "completedAt"
            )
    return None, None


def result_from_run_results_entry(entry: Mapping[str, Any]) -> NodeResult:
    """One element of ``run_results.json``'s ``results`` list."""
    started, completed = _execute_timing(entry.get("timing") or ())
    return NodeResult(
        unique_id=entry["unique_id"],
        status=str(entry.get("status")),
        message=entry.get("message"),
        started_at=started,
        completed_at=completed,
        execution_time=float(entry.get("execution_time") or 0.0),
        rows_affected=_rows_affected(entry.get("adapter_response")),
        failures=entry.get("failures"),
        batches=batches_of(entry.get("batch_results")),
    )


def batches_of(batch_results: Mapping[str, Any] | None) -> dict[str, str] | None:
    """A ``run_results.json`` entry's ``batch_results`` (``successful`` and ``failed`` lists of
    ``[start, end]``) as ``{batch: status}``, in time order."""
    if not batch_results:
        return None
    found = {
        start: status
        for key, status in (("successful", BATCH_SUCCESS), ("failed", BATCH_ERROR))
        for start, _end in batch_results.get(key) or ()
    }
    if not found:
        return None
    ends = {start: end for key in ("successful", "failed") for start, end in batch_results.get(key) or ()}
    return {batch_label(start, ends[start]): found[start] for start in sorted(found)}


def batch_label(start: str, end: str) -> str:
    """A batch's name, as dbt names it (by its start, to the precision of its size: ``2024``,
    ``2024-05``, ``2024-05-02``, ``2024-05-02T01``), from its ``[start, end)``."""
    begins, ends = datetime.fromisoformat(start), datetime.fromisoformat(end)
    days = (ends - begins).days
    if (begins.hour, begins.minute, begins.second) != (0, 0, 0) or ends - begins <= timedelta(hours=1):
        return begins.strftime("%Y-%m-%dT%H")
    if days > 31:
        return begins.strftime("%Y")
    if days >= 28 and begins.day == 1:
        return begins.strftime("%Y-%m")
    return begins.strftime("%Y-%m-%d")


def results_from_run_results(document: Mapping[str, Any]) -> list[NodeResult]:
    """All results of a ``run_results.json`` document."""
    return [result_from_run_results_entry(e) for e in document.get("results", ())]
