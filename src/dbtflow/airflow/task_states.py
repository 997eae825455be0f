"""The Airflow states of a DAG run's tasks, as a trigger or a running task can read them.

Streamed node tasks start when their DAG run starts and apply their upstream tasks' trigger rule
themselves (see ``dbtflow.streaming.consumer``), so they read the run's task states: in Airflow's
triggerer and on workers through the Task SDK (``RuntimeTaskInstance.get_task_states``, the call
the standard provider's ``WorkflowTrigger`` makes), and in ``dbtflow run``'s in-process triggerer
from the metadata database, through a reader the local runner installs with ``use_reader``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

#: (dag_id, run_id) -> {task_id: state}
Reader = Callable[[str, str], Mapping[str, str | None]]

_reader: Reader | None = None


def use_reader(reader: Reader | None) -> None:
    """Read task states with ``reader`` in this process (``None``: through the Task SDK)."""
    global _reader
    _reader = reader


def read_task_states(dag_id: str, run_id: str) -> dict[str, str | None]:
    """Every task's state in the DAG run (``None`` for a task not scheduled yet)."""
    from airflow.sdk.execution_time import task_runner

    if getattr(task_runner, "SUPERVISOR_COMMS", None) is None and _reader is not None:
        return dict(_reader(dag_id, run_id))
    by_run = task_runner.RuntimeTaskInstance.get_task_states(dag_id=dag_id, run_ids=[run_id])
    return {task_id: _state(state) for task_id, state in (by_run.get(run_id) or {}).items()}


def _state(state: object) -> str | None:
    if state is None:
        return None
    return str(getattr(state, "value", state))


def database_reader(dag_id: str, run_id: str) -> dict[str, str | None]:
    """Task states straight from the metadata database (for a process that has it)."""
    from airflow import settings
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    with settings.get_session()() as session:
        rows = session.execute(
            select(TaskInstance.task_id, TaskInstance.state).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
            )
        ).all()
    return {task_id: _state(state) for task_id, state in rows}
