"""The one place that makes a ``TaskTry`` from an Airflow task instance.

The state store, the producer and the log forwarder identify a task try without Airflow
(``dbtflow.state.task_try``); every operator takes it from its context here.
"""

from __future__ import annotations

from typing import Any

from dbtflow.state.task_try import TaskTry


def task_try(context: Any) -> TaskTry:
    """The try of the task instance running in ``context`` (an Airflow task context)."""
    ti = context["ti"]
    index = getattr(ti, "map_index", None)
    return TaskTry(
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        task_id=ti.task_id,
        try_number=int(ti.try_number),
        map_index=-1 if index is None else int(index),
    )
