"""The identity of one try of one Airflow task instance, without Airflow.

The producer registers its dbt invocation under it, the state store keys claims, results and
try artifacts by it, and the log forwarder labels dbt's events with it; the Airflow side makes
it from a task instance (``dbtflow.airflow.task_try``), the local runner from its DAG run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskTry:
    """One try of one task instance (``map_index`` -1: the task is not mapped)."""

    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    map_index: int = -1
