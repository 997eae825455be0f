"""Whether a streamed run's ``dbt build`` succeeded, as ``dbt build`` itself would say.

The producer task ends the way ``dbt build`` exits: it fails when a node it built failed (the
node's own task shows why; its dependants end skipped, so without this a run whose failed node
is not a leaf would end green), and when dbt reported a result that no task of the DAG owns (a
failing ``on-run-start``/``on-run-end`` hook, or a node that somehow has no task), naming it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from dbtflow.project.results import NodeResult
from dbtflow.project.results_table import failure_summary
from dbtflow.state.results import StoredResult

#: Resource types whose every result needs a task; others (a project hook, an exposure's no-op)
#: count only when they failed.
TASK_RESOURCE_TYPES = frozenset({"model", "seed", "snapshot", "test", "unit_test"})


@dataclass(frozen=True)
class Verdict:
    """The producer's nodes' newest results, and what makes the producer fail."""

    results: list[NodeResult]
    failed: list[NodeResult]
    #: Results of the producer's own invocations for nodes outside its nodes.
    unowned: list[NodeResult]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unowned

    def message(self) -> str:
        parts = []
        if self.failed:
            parts.append(
                f"dbt reported {len(self.failed)} failure(s); their tasks show them:\n"
                f"{failure_summary(self.failed)}"
            )
        if self.unowned:
            names = ", ".join(f"{r.unique_id} ({r.status})" for r in self.unowned)
            parts.append(f"dbt reported results that no task of this DAG owns: {names}")
            bad = [r for r in self.unowned if r.failed]
            if bad:
                parts.append(failure_summary(bad))
        return "\n".join(parts)


def verdict(
    run_results: Sequence[StoredResult],
    nodes: Sequence[str],
    invocations: Collection[str],
    owned_elsewhere: Collection[str] = (),
) -> Verdict:
    """Judge the producer from the run's stored results (oldest first) and its invocation ids.

    ``owned_elsewhere``: nodes the producer's dbt build may run that other tasks of the DAG own
    (the ``at_end`` test task runs its tests again)."""
    newest = {stored.result.unique_id: stored.result for stored in run_results}
    results = [newest[uid] for uid in nodes if uid in newest]
    owned = set(nodes) | set(owned_elsewhere)
    unowned: dict[str, NodeResult] = {}
    for stored in run_results:
        result = stored.result
        needs_task = result.failed or result.unique_id.split(".", 1)[0] in TASK_RESOURCE_TYPES
        if stored.invocation_id in invocations and result.unique_id not in owned and needs_task:
            unowned[result.unique_id] = result
    return Verdict(results, [r for r in results if r.failed], list(unowned.values()))
