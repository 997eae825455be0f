"""A task's dbt results as it publishes them: the table for its log, its summary, why it fails.

Every dbtflow task that runs or waits for dbt ends the same way: it logs a table of its nodes'
results, returns a ``TaskSummary`` through XCom, and fails with the nodes that failed. What
differs between them is only the judgement (which nodes must have a result, what a failure
says, whether a failed try still publishes its summary), and that is decided here, in plain
data without Airflow. ``dbtflow.airflow.publish`` turns a ``TaskResults`` into the log lines,
the XCom, the history record and the exception or trigger event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dbtflow.project.results import NodeResult
from dbtflow.project.results_table import failure_summary, results_table
from dbtflow.project.task_summary import TaskSummary


@dataclass(frozen=True)
class TaskResults:
    """One task try's results and the verdict on them."""

    results: tuple[NodeResult, ...]
    summary: TaskSummary
    #: Why the task fails; ``None`` when it succeeds.
    failure: str | None = None
    #: Whether a failed try still returns its summary (what it did, for notifications).
    summary_on_failure: bool = False
    #: The heading of the results table in the task log.
    title: str = "dbt results"

    @classmethod
    def of(
        cls,
        results: Iterable[NodeResult],
        *,
        failure: str | None = None,
        summary_on_failure: bool = False,
        ran: Iterable[str] | None = None,
        job_run_id: int | None = None,
        title: str = "dbt results",
    ) -> TaskResults:
        items = tuple(results)
        return cls(
            results=items,
            summary=TaskSummary.of(items, ran=ran, job_run_id=job_run_id),
            failure=failure,
            summary_on_failure=summary_on_failure,
            title=title,
        )

    @property
    def ok(self) -> bool:
        return self.failure is None

    def table(self) -> str:
        """The results table for the task log."""
        return results_table(self.results)


def failed_nodes(results: Sequence[NodeResult], heading: str | None = None) -> str | None:
    """What fails a task whose nodes failed: how many and why (``None`` when none did).

    ``heading`` replaces the count line (``dbt reported 2 failure(s):``).
    """
    failed = [r for r in results if r.failed]
    if not failed:
        return None
    return f"{heading or f'dbt reported {len(failed)} failure(s):'}\n{failure_summary(failed)}"


def missing_nodes(expected: Iterable[str], results: Sequence[NodeResult]) -> str | None:
    """What fails a task when dbt returned no result for some of its nodes (it did not run them)."""
    missing = sorted(set(expected) - {r.unique_id for r in results})
    if not missing:
        return None
    return f"dbt returned no result for {', '.join(missing)}: it did not run them."
