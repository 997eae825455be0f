"""What a streamed node task that must build alone builds in the same dbt invocation.

After a fix, a user clears the failed model's task and its dependants (Airflow's clear with "only
failed" and "downstream", without ``dbt_build``). The first of them whose upstream tasks all
succeeded has to build alone (``Action.RUN_ALONE``). Built one task at a time, the cleared tasks
would go layer by layer, one dbt invocation per node: 37 invocations and 92 s for what a run does in
7 s. So the task builds in ONE invocation its own nodes and every node of the run that waits to be
built downstream of it, and claims them: their tasks see a live holder, wait, and report their
results as they stream in, as in a first run.

A downstream task comes along when:

- its Airflow state says it has not run yet (``WAITING_TASK_STATES``): a task that ended, or runs
  on a worker now, is left alone;
- no live invocation holds one of its nodes;
- every upstream task of it succeeded or comes along too (so dbt, which orders the invocation by
  the project's dependencies, never builds it before something it reads that is yet to be built
  elsewhere). Its own dependants are then considered in turn.

Only its nodes without a reusable result are built (``reusable``): a result a killed invocation
recorded that no task reported yet is reported as is, so a model whose tests are missing gets only
its tests run. A task that builds alone reuses its own nodes' results on the same terms.

Plain data in, plain data out: the Airflow side (``dbtflow.airflow.operators``) reads the DAG, the
task states and the state store.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from dbtflow.project.status import UNCHANGED
from dbtflow.state.results import NodeStates, StoredResult

#: Airflow task states of a task that has not run (or will run again) and does not run now.
WAITING_TASK_STATES = frozenset(
    {None, "none", "scheduled", "queued", "deferred", "up_for_retry", "up_for_reschedule"}
)


@dataclass(frozen=True)
class NodeTask:
    """A task of the DAG as this module needs it."""

    task_id: str
    upstream_task_ids: frozenset[str]
    #: The dbt nodes it reports (``None``: not a dbt node task; it never comes along).
    unique_ids: tuple[str, ...] | None


@dataclass(frozen=True)
class Together:
    """What one invocation of a task that builds alone covers."""

    #: The task's own nodes to build.
    own: list[str]
    #: The waiting downstream tasks' nodes to build with them.
    along: list[str]
    #: The task's own results that it reports as recorded (not built again).
    reused: list[StoredResult]
    #: Downstream tasks whose nodes it builds.
    tasks: list[str]

    @property
    def to_build(self) -> list[str]:
        return [*self.own, *self.along]


def reusable(stored: StoredResult | None) -> bool:
    """A result that no task reported yet and that stands: not failed, not a dbt skip, not a
    state-aware run's ``unchanged`` (a cleared task builds the node it left out)."""
    return (
        stored is not None
        and stored.consumed_by is None
        and not stored.result.failed
        and not stored.result.skipped
        and stored.result.status != UNCHANGED
    )


def build_together(
    builder: NodeTask,
    downstream: Collection[str],
    tasks: Mapping[str, NodeTask],
    task_states: Mapping[str, str | None],
    states: NodeStates,
) -> Together:
    """The nodes ``builder`` builds in its one invocation (``downstream``: its downstream task ids;
    ``tasks``: the DAG's tasks by id; ``states``: the run's node states, for at least those tasks)."""
    own = builder.unique_ids or ()
    reused = [states.newest[uid] for uid in own if reusable(states.newest.get(uid))]
    reused_ids = {r.result.unique_id for r in reused}
    to_build = [uid for uid in own if uid not in reused_ids]
    if any(uid in states.holders and states.holders[uid].alive for uid in own):
        # Another invocation builds some of its own nodes: it waits for them, building nothing after.
        return Together(own=to_build, along=[], reused=reused, tasks=[])
    along: dict[str, None] = {}
    coming = {builder.task_id}
    candidates = [tasks[t] for t in downstream if t in tasks and _may_come(tasks[t], task_states, states)]
    changed = True
    while changed:
        changed = False
        for task in candidates:
            if task.task_id in coming:
                continue
            if all(up in coming or task_states.get(up) == "success" for up in task.upstream_task_ids):
                coming.add(task.task_id)
                along[task.task_id] = None
                changed = True
    built_along: list[str] = []
    for task_id in along:
        waiting = [uid for uid in tasks[task_id].unique_ids or () if not reusable(states.newest.get(uid))]
        built_along.extend(uid for uid in waiting if uid not in to_build and uid not in built_along)
    return Together(own=to_build, along=built_along, reused=reused, tasks=list(along))


def _may_come(task: NodeTask, task_states: Mapping[str, str | None], states: NodeStates) -> bool:
    if not task.unique_ids or task_states.get(task.task_id) not in WAITING_TASK_STATES:
        return False
    holders = states.holders
    return not any(uid in holders and holders[uid].alive for uid in task.unique_ids)
