"""The Airflow states of a DAG run's tasks, as a trigger or a running task can read them.

Streamed node tasks start when their DAG run starts and apply their upstream tasks' trigger rule
themselves (see ``dbtflow.streaming.consumer``), so they read the run's task states: in Airflow's
triggerer and on workers through the Task SDK (``RuntimeTaskInstance.get_task_states``, the call
the standard provider's ``WorkflowTrigger`` makes), and in ``dbtflow run``'s in-process triggerer
from the metadata database, through a reader the local runner installs with ``use_reader``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

#: (dag_id, run_id, task_ids or None for every task) -> {task_id: state}
Reader = Callable[[str, str, Sequence[str] | None], Mapping[str, str | None]]

_reader: Reader | None = None


def use_reader(reader: Reader | None) -> None:
    """Read task states with ``reader`` in this process (``None``: through the Task SDK)."""
    global _reader
    _reader = reader


def read_task_states(
    dag_id: str, run_id: str, task_ids: Sequence[str] | None = None
) -> dict[str, str | None]:
    """The states of the DAG run's tasks ``task_ids`` (``None``: every task), ``None`` for a task
    not scheduled yet; a task that does not exist is left out."""
    from airflow.sdk.execution_time import task_runner

    if task_ids is not None and not task_ids:
        return {}  # (Airflow reads an empty filter as none)
    if getattr(task_runner, "SUPERVISOR_COMMS", None) is None and _reader is not None:
        return dict(_reader(dag_id, run_id, task_ids))
    by_run = task_runner.RuntimeTaskInstance.get_task_states(
        dag_id=dag_id, run_ids=[run_id], task_ids=None if task_ids is None else list(task_ids)
    )
    return {task_id: _state(state) for task_id, state in (by_run.get(run_id) or {}).items()}


def _state(state: object) -> str | None:
    if state is None:
        return None
    return str(getattr(state, "value", state))


def database_reader(dag_id: str, run_id: str, task_ids: Sequence[str] | None = None) -> dict[str, str | None]:
    """Task states straight from the metadata database (for a process that has it)."""
    from airflow import settings
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    query = select(TaskInstance.task_id, TaskInstance.state).where(
        TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
    )
    if task_ids is not None:
        query = query.where(TaskInstance.task_id.in_(list(task_ids)))
    with settings.get_session()() as session:
        rows = session.execute(query).all()
    return {task_id: _state(state) for task_id, state in rows}
