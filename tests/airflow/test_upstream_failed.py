"""Streamed tasks end ``upstream_failed`` through a handler on Airflow's ``handle_event_submit``.

The end-to-end checks are where a real triggerer or ``dbtflow run`` ends the dependants of a failed
model (``tests/deployment/test_scheduler.py``, ``tests/runner/test_cli.py``); these pin the Airflow
internals the handler depends on, so that an Airflow upgrade that moves them fails here first."""

from __future__ import annotations

import inspect

from airflow.triggers.base import BaseTaskEndEvent, TaskSkippedEvent

from airflow_command import printed_after_command
from dbtflow.airflow import upstream_failed


def test_the_marked_event_crosses_the_trigger_runners_boundary() -> None:
    """The marker rides in a ``TaskSkippedEvent``'s XComs, which the message from the trigger
    runner to its supervisor carries (decoded as Airflow's supervisor decodes it)."""
    from airflow.jobs.triggerer_job_runner import TriggerEventEntry, TriggerRunnerSupervisor, messages
    from airflow.models import trigger  # noqa: F401  (imported by the triggerer before it runs)

    upstream_failed.install()
    event = upstream_failed.upstream_failed_event()
    sent = messages.TriggerStateChanges(events=[TriggerEventEntry(1, event, None)])
    received = TriggerRunnerSupervisor.decoder.validate_python(sent.model_dump())
    decoded = received.events[0].event
    assert isinstance(decoded, TaskSkippedEvent)
    assert decoded.xcoms == {upstream_failed.MARKER: upstream_failed.UPSTREAM_FAILED}


def test_the_handler_is_registered_beside_airflows_own() -> None:
    from airflow.models import trigger

    upstream_failed.install()
    assert upstream_failed.supported()
    ours = trigger.handle_event_submit.dispatch(TaskSkippedEvent)
    assert getattr(ours, "dbtflow_upstream_failed", False)
    # Airflow's own handler for task-ending events is still the one the others get, and it
    # still ends a task by setting the event's state (what ours replaces for the marked event).
    airflows = trigger.handle_event_submit.dispatch(BaseTaskEndEvent)
    assert airflows is not ours
    source = inspect.getsource(airflows)
    assert "task_instance.set_state(event.task_instance_state" in source
    assert "task_instance.trigger_id = None" in source


def test_the_triggerer_command_registers_it_when_airflow_imports_its_models() -> None:
    """In the order a real ``airflow triggerer`` runs: provider information first, models later."""
    printed = printed_after_command(
        "triggerer",
        "import airflow.jobs.triggerer_job_runner",
        "from dbtflow.airflow import upstream_failed",
        "print(upstream_failed.supported())",
    )
    assert printed == "True"
