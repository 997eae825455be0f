"""Publishing a task's dbt results in Airflow: the one place every operator and trigger ends.

``publish`` is for a task running on a worker: it logs the results table, writes the run-time
history (through the callback it is given), and returns the summary as the XCom return value or
raises ``AirflowException`` with why the task failed (pushing the summary first when the try
should still show what it did). ``end_event`` is the same for a trigger that ends its task in
the triggerer, where nothing can be raised: it returns the success or failure event. The verdict
itself (``TaskResults``) is made in ``dbtflow.project.task_results``, without Airflow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.sdk.exceptions import AirflowException
from airflow.triggers.base import TaskFailedEvent, TaskSuccessEvent

from dbtflow.project.task_results import TaskResults

#: Keeps the results a try ran in the run-time history (``dbtflow.monitoring.history``).
HistoryWriter = Callable[[], None]


def publish(
    task: TaskResults,
    log: Any,
    *,
    ti: Any | None = None,
    history: HistoryWriter | None = None,
    cause: BaseException | None = None,
) -> dict[str, Any]:
    """Log, record and return ``task``'s results, or raise why the task failed.

    ``ti`` is the task instance the summary is pushed to when a failed try keeps its summary;
    ``cause`` is chained to the exception.
    """
    log.info("%s:\n%s", task.title, task.table())
    if history is not None:
        history()
    value = task.summary.to_xcom()
    if task.failure is None:
        return value
    if task.summary_on_failure and ti is not None:
        ti.xcom_push(key="return_value", value=value)
    error = AirflowException(task.failure)
    if cause is not None:
        raise error from cause
    raise error


def end_event(task: TaskResults, log: Any, *, table: bool = True) -> TaskSuccessEvent | TaskFailedEvent:
    """The event a trigger ends its task with: success with the summary, or failure (logged).

    ``table`` false leaves the results table out of the log (a streamed node's own log lines
    already show its result, and hundreds of such tasks may end at once).
    """
    if table:
        log.info("%s:\n%s", task.title, task.table())
    if task.failure is not None:
        log.error("%s", task.failure)
        return TaskFailedEvent()
    return TaskSuccessEvent(xcoms={"return_value": task.summary.to_xcom()})
