"""The event-time window of the DAG run a task runs in: its data interval, for microbatch models.

Every operator that runs dbt asks here (``DbtOperatorBase._run_claimed`` for the streamed
producer and a node built alone, ``DbtBatchOperator`` for single and grouped tasks), so every
pattern maps a run to dbt's ``--event-time-start`` / ``--event-time-end`` the same way. A run
without a data interval, or with an empty one (a manual run with no logical date, a trigger
timetable), passes no window and dbt picks the batches itself, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dbtflow.project.config import DbtProject
from dbtflow.project.event_time import EventTimeWindow, failed_batches
from dbtflow.project.manifest import load_graph
from dbtflow.project.results import NodeResult
from dbtflow.state.store import StateStore
from dbtflow.state.task_try import TaskTry


def event_time_window(
    context: Any, log: Any = None, *, earlier: Sequence[NodeResult] = ()
) -> EventTimeWindow | None:
    """The window of the task's DAG run (``None`` without a non-empty data interval); the task log
    says which it is. ``earlier``: the newest results in this run of the nodes a per_model task
    builds alone; when its microbatch model built some batches and failed others, the window is
    that of the failed ones (``dbtflow.project.event_time.failed_batches``)."""
    if not context:
        return None
    window = EventTimeWindow.of_interval(context.get("data_interval_start"), context.get("data_interval_end"))
    if window is None:
        return None
    retry = failed_batches(window, earlier)
    if log is not None:
        log.info(
            "Microbatch models build the run's data interval %s (UTC, end exclusive).", window.describe()
        )
        if retry is not None:
            log.info("Only the batches that failed in this run are built again: %s.", retry.describe())
    return retry or window


def left_to_own_tasks(
    project: DbtProject, store: StateStore, task: TaskTry, nodes: Sequence[str]
) -> set[str]:
    """The nodes a streamed run's producer retry leaves to their own tasks: each microbatch model
    that built some batches and failed others in this run (its task builds only the failed ones),
    and every node downstream of it (built after it, by their tasks)."""
    partly = [
        r.unique_id
        for r in store.newest_results(task.dag_id, task.run_id, nodes)
        if r.batches and len(set(r.batches.values())) > 1
    ]
    if not partly:
        return set()
    return set(partly) | load_graph(project).descendants(partly)
