"""What a node's task should do now, given the shared state: report, wait, run alone, or fail.

Used by the trigger that waits in the triggerer and by the operator when it runs on a worker,
so both follow the same rules:

- A result counts for a task try if no earlier try already reported it. A ``skipped`` result
  never counts: dbt skipped the node because an upstream node failed, and if this task runs at
  all, its upstream tasks have since succeeded.
- If a live invocation is building a node the task still needs, wait.
- If the invocation this task saw building its node stopped (died, or ended without a result),
  fail with a message that says so; a retry then runs the node alone.
- If nobody is building it, run it alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from dbtflow.project.results import NodeResult
from dbtflow.streaming.store import NodeStates, StateStore, StoredResult


class Action(StrEnum):
    REPORT = "report"
    WAIT = "wait"
    RUN_ALONE = "run_alone"
    FAIL = "fail"


@dataclass(frozen=True)
class Decision:
    action: Action
    results: tuple[StoredResult, ...] = ()
    message: str = ""

    @property
    def node_results(self) -> list[NodeResult]:
        return [r.result for r in self.results]

    @property
    def failed(self) -> list[NodeResult]:
        return [r for r in self.node_results if r.failed]


@dataclass
class Watch:
    """What one waiting task has seen so far (the invocations it saw alive)."""

    seen_alive: set[str] = field(default_factory=set)


def decide(
    store: StateStore,
    dag_id: str,
    run_id: str,
    nodes: Sequence[str],
    try_number: int,
    watch: Watch,
    *,
    main_node: str | None = None,
    producer_task_id: str | None = None,
    wait_for_producer: bool = False,
) -> Decision:
    """Decide for a task that reports ``nodes`` (``main_node`` first, then its tests).

    With ``wait_for_producer``, a task whose nodes nobody is building waits until the DAG run's
    producer task has registered its invocation (it may still be starting on a worker) instead
    of building its nodes alone.
    """
    states = store.node_states(dag_id, run_id, nodes, producer_task_id)
    return decide_from(
        states,
        nodes,
        try_number,
        watch,
        main_node=main_node,
        wait_for_producer=wait_for_producer and producer_task_id is not None,
    )


def decide_from(
    states: NodeStates,
    nodes: Sequence[str],
    try_number: int,
    watch: Watch,
    *,
    main_node: str | None = None,
    wait_for_producer: bool = False,
) -> Decision:
    """``decide`` on states already read (they may cover more nodes than ``nodes``)."""
    newest, holders = states.newest, states.holders
    mine = (newest[uid] for uid in nodes if uid in newest)
    fresh = {
        r.result.unique_id: r for r in mine if r.consumed_by in (None, try_number) and not r.result.skipped
    }
    if main_node is not None and main_node in fresh and fresh[main_node].result.failed:
        # The model failed: dbt skips its tests, so there is nothing more to wait for.
        return Decision(Action.REPORT, results=(fresh[main_node],))
    pending = [uid for uid in nodes if uid not in fresh]
    if not pending:
        return Decision(Action.REPORT, results=tuple(fresh[uid] for uid in nodes))
    for uid in pending:
        holder = holders.get(uid)
        if holder is not None and holder.alive:
            watch.seen_alive.add(holder.id)
            return Decision(Action.WAIT)
    for uid in pending:
        holder = holders.get(uid)
        if holder is not None and holder.id in watch.seen_alive:
            if holder.state == "running" or holder.state == "died":
                reason = holder.describe_death()
            else:
                detail = f": {holder.error}" if holder.error else ""
                reason = f"the dbt invocation ended ({holder.state}{detail}) without a result for {uid}"
            return Decision(
                Action.FAIL,
                message=f"{reason}. Retry or clear this task to build {uid} on its own.",
            )
    if wait_for_producer and not states.producer_seen:
        return Decision(Action.WAIT)
    return Decision(Action.RUN_ALONE)
