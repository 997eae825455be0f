"""What a node's task should do now, given the shared state: report, wait, run alone, skip or fail.

Used by the trigger that waits in the triggerer and by the operator when it runs on a worker,
so both follow the same rules.

Streamed node tasks start when the DAG run starts (trigger rule ``always``), not when their
upstream tasks have ended: otherwise the results of a finished ``dbt build`` would reach the
tasks one DAG layer at a time, a scheduler and triggerer round trip each. Since Airflow no
longer holds a task back until its upstream tasks succeeded, these rules apply Airflow's
``all_success`` themselves, from the Airflow states of the task's upstream tasks:

- A node that a state-aware run left out (result ``unchanged``) ends its task skipped, saying why.
- A result counts for a task try if no earlier try already reported it. A ``skipped`` result
  never counts by itself: dbt skipped the node because something upstream failed.
- A failure among the task's nodes ends the task at once when nothing else of it will run: its
  model failed, or a unit test failed and dbt skipped the model.
- If a live invocation is building a node the task still needs, wait.
- If the invocation this task saw building its node stopped (died, or ended without a result),
  fail with a message that says so; a retry then runs the node alone. A death is believed only
  when a second reading of the state, made after the process was seen gone, still shows it
  running: an invocation writes its final state before its process exits.
- If the run's producer task has not ended and has no live invocation yet (it is still starting,
  or waiting for its retry), wait: it will build the node.
- Otherwise the upstream tasks decide, as ``all_success`` would: wait while one has not ended;
  skip when one did not succeed (its dependants are not built, as ``dbt build`` skips them);
  run alone when all succeeded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from dbtflow.project.results import NodeResult
from dbtflow.project.status import UNCHANGED
from dbtflow.state.invocations import InvocationState
from dbtflow.state.results import NodeStates, StoredResult
from dbtflow.state.store import StateStore

#: Airflow task instance states after which a task does not run again unless it is cleared.
TERMINAL_TASK_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
FAILED_TASK_STATES = frozenset({"failed", "upstream_failed"})
#: How often a task waiting on its upstream tasks' Airflow states has them read again.
UPSTREAM_TASK_STATES_EVERY_S = 2.0
#: How often a task waiting for the producer to start dbt has the task states read again: at
#: 1000 tasks each reading through Airflow's execution API loads every task instance of the run
#: (12 % of the triggerer's CPU while a 1000-model run's producer started, py-spy, 2026-12-03).
PRODUCER_TASK_STATES_EVERY_S = 10.0


class Action(StrEnum):
    REPORT = "report"
    WAIT = "wait"
    RUN_ALONE = "run_alone"
    SKIP = "skip"
    FAIL = "fail"


@dataclass(frozen=True)
class Decision:
    action: Action
    results: tuple[StoredResult, ...] = ()
    message: str = ""
    #: The invocation this decision found dead (still ``running`` in the store): the caller
    #: records it ``died``, so that every later reader sees it so at once.
    dead: str | None = None
    #: A ``WAIT`` that the Airflow task states would decide: the caller's next reading should
    #: include them (a feed reads them only when asked, since each reading is a round trip).
    needs_task_states: bool = False
    #: A ``WAIT`` on the Airflow task states (an upstream task or the producer has not ended):
    #: the caller's feed keeps reading them, at least this often (seconds), while it waits.
    task_states_every_s: float | None = None
    #: A ``SKIP`` because an upstream task failed (Airflow's ``upstream_failed``), not because
    #: upstream tasks were only skipped (Airflow's skip propagation).
    upstream_failed: bool = False

    @property
    def node_results(self) -> list[NodeResult]:
        return [r.result for r in self.results]

    @property
    def failed(self) -> list[NodeResult]:
        return [r for r in self.node_results if r.failed]


@dataclass
class Watch:
    """What one waiting task has seen so far."""

    #: Invocations it saw alive.
    seen_alive: set[str] = field(default_factory=set)
    #: Invocations it saw dead once (confirmed on the next reading).
    seen_dead: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Upstream:
    """What a streamed task knows of the Airflow side of its DAG run."""

    #: Airflow task ids of the task's upstream tasks.
    task_ids: tuple[str, ...] = ()
    #: The run's task states (task id -> state, ``None`` before it was scheduled); ``None`` when
    #: they could not be read, in which case only the dbt side decides.
    task_states: Mapping[str, str | None] | None = None
    #: The producer task's id, when the run has one.
    producer_task_id: str | None = None
    #: ``task_states`` is ``None`` because this reading did not include them, not because they
    #: cannot be read: wait for a reading that does rather than decide without them.
    task_states_unread: bool = False


def decide(
    store: StateStore,
    dag_id: str,
    run_id: str,
    nodes: Sequence[str],
    try_number: int,
    watch: Watch,
    *,
    main_node: str | None = None,
    upstream: Upstream = Upstream(),
) -> Decision:
    """Decide for a task that reports ``nodes`` (``main_node`` first, then its tests)."""
    states = store.node_states(dag_id, run_id, nodes, upstream.producer_task_id)
    return decide_from(states, nodes, try_number, watch, main_node=main_node, upstream=upstream)


def _usable(stored: StoredResult, try_number: int) -> bool:
    return stored.consumed_by in (None, try_number)


def _left_out_unchanged(
    mine: Mapping[str, StoredResult], nodes: Sequence[str], main_node: str | None
) -> Decision | None:
    """A ``SKIP`` when a state-aware run left the task's node out (``dbtflow.project.state_aware``):
    its model unchanged, or (a task of tests) every node it tests unchanged."""
    key = main_node if main_node is not None else (nodes[0] if nodes else None)
    if key is None or key not in mine or mine[key].result.status != UNCHANGED:
        return None
    if main_node is None and any(uid not in mine or mine[uid].result.status != UNCHANGED for uid in nodes):
        return None
    return Decision(Action.SKIP, results=(mine[key],), message=f"Not built: {mine[key].result.message}.")


def decide_from(
    states: NodeStates,
    nodes: Sequence[str],
    try_number: int,
    watch: Watch,
    *,
    main_node: str | None = None,
    upstream: Upstream = Upstream(),
) -> Decision:
    """``decide`` on states already read (they may cover more nodes than ``nodes``)."""
    newest, holders = states.newest, states.holders
    mine = {uid: newest[uid] for uid in nodes if uid in newest and _usable(newest[uid], try_number)}
    left_out = _left_out_unchanged(mine, nodes, main_node)
    if left_out is not None:
        return left_out
    fresh = {uid: r for uid, r in mine.items() if not r.result.skipped}
    if main_node is not None and main_node in fresh and fresh[main_node].result.failed:
        # The model failed: dbt skips its tests, so there is nothing more to wait for.
        return Decision(Action.REPORT, results=(fresh[main_node],))
    if any(r.result.failed for r in fresh.values()) and all(uid in mine for uid in nodes):
        # A unit test failed and dbt skipped the model (or a test failed, the rest are in).
        return Decision(Action.REPORT, results=tuple(mine[uid] for uid in nodes))
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
        if holder is None or holder.id not in watch.seen_alive:
            continue
        if holder.state == InvocationState.RUNNING and holder.id not in watch.seen_dead:
            # Seen dead for the first time: believe it on the next reading, which is made after
            # the process was seen gone and so shows its final state if it wrote one.
            watch.seen_dead.add(holder.id)
            return Decision(Action.WAIT)
        if holder.state in (InvocationState.RUNNING, InvocationState.DIED):
            reason = holder.describe_death()
        else:
            detail = f": {holder.error}" if holder.error else ""
            reason = f"the dbt invocation ended ({holder.state}{detail}) without a result for {uid}"
        return Decision(
            Action.FAIL,
            message=f"{reason}. Retry or clear this task to build {uid} on its own.",
            dead=holder.id if holder.state == InvocationState.RUNNING else None,
        )
    task_states = upstream.task_states
    if task_states is None:
        if upstream.task_states_unread:
            return Decision(Action.WAIT, needs_task_states=True)
        return Decision(Action.RUN_ALONE)
    producer = upstream.producer_task_id
    producer_pending = producer is not None and task_states.get(producer) not in TERMINAL_TASK_STATES
    if producer_pending and not states.producer_alive:
        # Its invocation, once alive, shows in the state (read twice a second); the task states
        # only tell of a producer that ended without one, which may be noticed less promptly.
        return Decision(Action.WAIT, task_states_every_s=PRODUCER_TASK_STATES_EVERY_S)
    ends = {task_id: task_states.get(task_id) for task_id in upstream.task_ids}
    if any(state not in TERMINAL_TASK_STATES for state in ends.values()):
        return Decision(Action.WAIT, task_states_every_s=UPSTREAM_TASK_STATES_EVERY_S)
    not_ok = sorted(task_id for task_id, state in ends.items() if state != "success")
    if not_ok:
        told = ", ".join(f"{task_id} ({ends[task_id]})" for task_id in not_ok)
        return Decision(
            Action.SKIP,
            results=tuple(mine[uid] for uid in nodes if uid in mine),
            message=f"Not built: upstream task(s) did not succeed: {told}.",
            upstream_failed=any(ends[task_id] in FAILED_TASK_STATES for task_id in not_ok),
        )
    return Decision(Action.RUN_ALONE)
