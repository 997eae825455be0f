"""Streamed node tasks whose upstream task failed end ``upstream_failed``, as Airflow shows them.

A streamed node task waits in the triggerer from the start of its DAG run (trigger rule
``always``), so Airflow's scheduler never gets to mark it ``upstream_failed``: the task applies
``all_success`` itself and ends through a trigger event. Airflow 3.3 lets a trigger end a task only
``success``, ``failed`` or ``skipped`` (``airflow.triggers.base.DiscrimatedTriggerEvent`` refuses
any other state between the trigger runner and its supervisor), so the task ends with a
``TaskSkippedEvent`` that carries a marker in its XComs, and this module's handler, registered for
``TaskSkippedEvent`` on Airflow's ``handle_event_submit``, sets ``upstream_failed`` for a marked
event and hands every other event to Airflow's own handler.

- **Airflow internal:** ``airflow.models.trigger.handle_event_submit`` (a ``functools.singledispatch``
  function, registered through ``end_event_handlers``) and its ``BaseTaskEndEvent`` handler,
  apache-airflow-core 3.3 (3.3.2 read); the
  supervisor of the trigger runner calls it from ``Trigger.submit_event``. The handler is installed
  in ``airflow triggerer`` processes (through dbtflow's provider information, see
  ``after_import``) and in ``dbtflow run``'s own loop; ``tests/airflow/test_upstream_failed.py``
  fails when the internal changes.
- **Where it is not installed** (a triggerer without dbtflow's provider), the trigger sees that
  and ends the task ``skipped``, as before; the run's state is the same (``dbt_build`` fails).
- **Remove it when** Airflow lets a trigger end a task ``upstream_failed``, or lets a deferred task
  keep its trigger rule's ``upstream_failed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dbtflow.airflow import end_event_handlers
from dbtflow.airflow.after_import import in_triggerer

if TYPE_CHECKING:
    from airflow.triggers.base import TaskSkippedEvent

#: The XCom key that marks a ``TaskSkippedEvent`` as ``upstream_failed``; never pushed.
MARKER = "__dbtflow_end_state__"
UPSTREAM_FAILED = "upstream_failed"
FLAG = "dbtflow_upstream_failed"


def supported() -> bool:
    """Whether this process (or the supervisor it was forked from) applies the marker."""
    from airflow.triggers.base import TaskSkippedEvent

    return end_event_handlers.installed(TaskSkippedEvent, FLAG)


def upstream_failed_event() -> TaskSkippedEvent:
    """The event that ends a task ``upstream_failed`` where supported, ``skipped`` elsewhere."""
    from airflow.triggers.base import TaskSkippedEvent

    if supported():
        return TaskSkippedEvent(xcoms={MARKER: UPSTREAM_FAILED})
    return TaskSkippedEvent()


def install() -> None:
    """Register the handler (now, or when Airflow imports ``airflow.models.trigger``)."""
    end_event_handlers.install("TaskSkippedEvent", FLAG, _handler)


def install_in_triggerer() -> None:
    """``install`` in an ``airflow triggerer`` process only (called from the provider information)."""
    if in_triggerer():
        install()


def _handler(airflows_own: end_event_handlers.Handler) -> end_event_handlers.Handler:
    from airflow.utils.state import TaskInstanceState

    def submit(event: TaskSkippedEvent, *, task_instance: Any, session: Any) -> None:
        if (event.xcoms or {}).get(MARKER) != UPSTREAM_FAILED:
            airflows_own(event, task_instance=task_instance, session=session)
            return
        # What Airflow's own handler does for an end event, with the state the marker names and
        # no XCom (the marker is all there is): no callback, as for a skipped task.
        task_instance.trigger_id = None
        task_instance.set_state(TaskInstanceState.UPSTREAM_FAILED, session=session)
        session.flush()

    return submit
