"""dbtflow's handlers of the events that end a task in the triggerer, in one place.

Airflow 3.3 applies a trigger's end event (``TaskSuccessEvent``, ``TaskSkippedEvent``, ...) with
``airflow.models.trigger.handle_event_submit``, a ``functools.singledispatch`` function whose
``BaseTaskEndEvent`` handler sets the task's state, pushes its XComs and sends its callback, in the
triggerer's supervisor (or ``dbtflow run``'s loop), inside the transaction that ends the task.
dbtflow registers its own handler for one event type to do more there: ``upstream_failed`` ends a
marked ``TaskSkippedEvent`` as ``upstream_failed``; ``node_assets`` registers a
``TaskSuccessEvent``'s carried asset events. Each handler wraps Airflow's own and carries a flag,
so that a trigger can ask whether its process (or the supervisor it was forked from) has it.
Every handler registered here also pushes the event's XComs in the session that ends the task:
Airflow's own pushes each with ``TaskInstance.xcom_push`` in a session of its own (a connection,
a query for the run's id and a commit per XCom: 14 of the triggerer's 255 GIL samples at 100
node tasks, py-spy, 2026-12-03), outside the transaction that ends the task.
- **Airflow internal:** ``airflow.models.trigger.handle_event_submit`` and its ``BaseTaskEndEvent``
  handler, apache-airflow-core 3.3 (3.3.2 read); ``tests/airflow/test_upstream_failed.py`` and
  ``tests/airflow/test_node_assets.py`` fail when it changes.
- **Remove it when** its last user goes (see each module's own condition).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from dbtflow.airflow.after_import import after_import

TRIGGER_MODULE = "airflow.models.trigger"

#: Airflow's handler of an end event: ``(event, *, task_instance, session) -> None``.
Handler = Callable[..., None]


def installed(event_type: type, flag: str) -> bool:
    """Whether this process applies ``event_type`` with the handler that carries ``flag``."""
    dispatch = getattr(sys.modules.get(TRIGGER_MODULE), "handle_event_submit", None)
    registry = getattr(dispatch, "registry", {})
    return bool(getattr(registry.get(event_type), flag, False))


def install(event_type_name: str, flag: str, wrap: Callable[[Handler], Handler]) -> None:
    """Register ``wrap(airflows_own)`` for ``airflow.triggers.base.<event_type_name>`` (now, or
    when Airflow imports ``airflow.models.trigger``), once per process."""
    after_import(TRIGGER_MODULE, _registrar(event_type_name, flag, wrap))


@functools.cache
def _registrar(
    event_type_name: str, flag: str, wrap: Callable[[Handler], Handler]
) -> Callable[[ModuleType], None]:
    def register(module: ModuleType) -> None:
        from airflow.triggers import base

        event_type = getattr(base, event_type_name)
        dispatch = module.handle_event_submit
        if getattr(dispatch.registry.get(event_type), flag, False):
            return
        handler: Any = wrap(_xcoms_in_session(dispatch.dispatch(base.BaseTaskEndEvent)))
        setattr(handler, flag, True)
        dispatch.register(event_type, handler)

    return register


def _xcoms_in_session(airflows_own: Handler) -> Handler:
    """Airflow's handler, with the event's XComs pushed in its ``session``, after it, as it pushes
    them (not for a try that goes up for retry)."""

    def submit(event: Any, *, task_instance: Any, session: Any) -> None:
        from airflow.models.xcom import XComModel
        from airflow.utils.state import TaskInstanceState

        xcoms, event.xcoms = event.xcoms, None
        try:
            airflows_own(event, task_instance=task_instance, session=session)
        finally:
            event.xcoms = xcoms
        if not xcoms or task_instance.state == TaskInstanceState.UP_FOR_RETRY:
            return
        for key, value in xcoms.items():
            XComModel.set(
                key=key,
                value=value,
                task_id=task_instance.task_id,
                dag_id=task_instance.dag_id,
                run_id=task_instance.run_id,
                map_index=task_instance.map_index,
                session=session,
            )
        session.flush()

    return submit
