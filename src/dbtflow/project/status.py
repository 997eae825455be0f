"""The words dbt uses for a node's outcome, and the names of the events that end a node.

dbt writes a node's status as a plain string (in ``run_results.json``, in its ``NodeFinished``
events and in dbt Cloud's artifacts), and which of those strings fail a task, count as a
success or get retried is dbtflow's decision in many places: the results table, the state
database, notifications, the run-time trends. They all read the sets here, so a status dbt adds
is classified once (Astronomer Cosmos keeps its statuses the same way, in one enum with its
success and skipped sets).
"""

from __future__ import annotations

from enum import StrEnum


class NodeStatus(StrEnum):
    """A status dbt reports for a node (``RunStatus``, ``TestStatus``, ``FreshnessStatus``)."""

    SUCCESS = "success"
    ERROR = "error"
    FAIL = "fail"
    WARN = "warn"
    PASS = "pass"
    SKIPPED = "skipped"
    RUNTIME_ERROR = "runtime error"
    PARTIAL_SUCCESS = "partial success"
    NO_OP = "no-op"


def _values(*statuses: NodeStatus) -> frozenset[str]:
    """The statuses as the plain strings dbt writes (what results and the database hold)."""
    return frozenset(s.value for s in statuses)


#: Statuses that fail a task. ``warn`` does not. ``partial success`` is a microbatch model with a
#: failed batch: dbt fails the invocation, and the task fails so that its retry builds that batch.
FAILED_STATUSES = _values(
    NodeStatus.ERROR, NodeStatus.FAIL, NodeStatus.RUNTIME_ERROR, NodeStatus.PARTIAL_SUCCESS
)
#: A node dbt did not run because something upstream of it failed.
SKIPPED_STATUSES = _values(NodeStatus.SKIPPED)
#: A run that did what it should (a model built, a test passed or only warned): the runs whose
#: durations make a node's trend and its learned deadline.
SUCCEEDED_STATUSES = _values(NodeStatus.SUCCESS, NodeStatus.PASS, NodeStatus.WARN)
#: What ``dbt retry`` runs again (``dbt.task.retry.RETRYABLE_STATUSES``, as the artifact spells them).
RETRYABLE_STATUSES = _values(
    NodeStatus.ERROR,
    NodeStatus.FAIL,
    NodeStatus.SKIPPED,
    NodeStatus.RUNTIME_ERROR,
    NodeStatus.PARTIAL_SUCCESS,
)

#: A source whose ``dbt source freshness`` result lets the models reading it run.
FRESH = _values(NodeStatus.PASS)
FRESH_WITH_WARNINGS = _values(NodeStatus.PASS, NodeStatus.WARN)

#: dbtflow's own word, not dbt's: a node a state-aware run left out (unchanged since its last
#: build, sources not newer); its task ends ``skipped`` with the reason.
UNCHANGED = "unchanged"

#: The dbt events that end a node: dbt finished it, or skipped it.
NODE_FINISHED_EVENT = "NodeFinished"
NODE_SKIPPED_EVENT = "SkippingDetails"
NODE_END_EVENTS = frozenset({NODE_FINISHED_EVENT, NODE_SKIPPED_EVENT})
#: The dbt event that ends one batch of a microbatch model.
BATCH_RESULT_EVENT = "LogBatchResult"
#: A batch's status, in dbtflow's summary (dbt's ``LogBatchResult`` statuses; ``run_results.json``
#: has only successful and failed batches).
BATCH_SUCCESS, BATCH_ERROR = "success", "error"
