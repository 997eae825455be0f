"""The Airflow side of ``dbtflow.streaming.together``: a streamed node task that must build alone
reads its DAG's downstream tasks, the run's task states and the state store, and gets the nodes
its one dbt invocation builds (its own, and those of the waiting tasks downstream of it).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from dbtflow.airflow.task_states import read_task_states
from dbtflow.state.store import StateStore
from dbtflow.state.task_try import TaskTry
from dbtflow.streaming.together import NodeTask, Together, build_together


def node_task(operator: Any) -> NodeTask:
    """A task as ``build_together`` sees it: only streamed dbt node tasks report results it builds."""
    unique_ids = getattr(operator, "unique_ids", None) if getattr(operator, "streamed", False) else None
    return NodeTask(
        task_id=operator.task_id,
        upstream_task_ids=frozenset(operator.upstream_task_ids),
        unique_ids=tuple(unique_ids) if unique_ids else None,
    )


def plan_together(operator: Any, task: TaskTry, store: StateStore, log: Any) -> Together:
    """What ``operator`` (a streamed ``DbtNodeOperator`` about to build alone) builds in its
    invocation. Without its DAG or the run's task states it builds its own nodes only."""
    builder = NodeTask(operator.task_id, frozenset(operator.upstream_task_ids), tuple(operator.unique_ids))
    downstream: set[str] = set()
    task_states: dict[str, str | None] = {}
    tasks: dict[str, NodeTask] = {}
    try:
        downstream = set(operator.get_flat_relative_ids(upstream=False))
        if downstream:
            task_states = read_task_states(task.dag_id, task.run_id)
            dag = operator.get_dag()
            tasks = {task_id: node_task(dag.get_task(task_id)) for task_id in downstream}
    except Exception as exc:  # building its own nodes alone is always right, only slower
        log.warning(
            "Could not read the tasks downstream of %s (%s); building its nodes alone.", task.task_id, exc
        )
        downstream = set()
    states = store.node_states(task.dag_id, task.run_id, None if downstream else builder.unique_ids)
    together = build_together(builder, downstream, tasks, task_states, states)
    if together.reused:
        log.info(
            "Reporting the recorded result of %s (no task reported it yet; not built again).",
            ", ".join(r.result.unique_id for r in together.reused),
        )
    if together.tasks:
        log.info(
            "Building %d waiting node(s) of %d downstream task(s) in the same dbt invocation; "
            "their tasks report them: %s",
            len(together.along),
            len(together.tasks),
            ", ".join(together.tasks),
        )
    return together


def consume_own(
    store: StateStore, task: TaskTry, invocation_id: str, own: Collection[str], together: Together
) -> None:
    """Mark as reported by ``task``'s try its own nodes' results (built by ``invocation_id`` or
    reused), never those built along: their tasks, on tries of their own, report them."""
    recorded = store.results_of_run(task.dag_id, task.run_id)
    built = [r.id for r in recorded if r.invocation_id == invocation_id and r.result.unique_id in own]
    store.consume([*built, *(r.id for r in together.reused)], task.try_number)
