"""The triggerer's supervisor reads and cleans its trigger list at most once a second.

Pins the Airflow internal ``dbtflow.airflow.triggerer_passes`` replaces (the body of
``TriggerRunnerSupervisor.run_once``), checks the replacement's order of work pass by pass, and
that a real ``airflow triggerer`` command installs it."""

from __future__ import annotations

import ast
import inspect
import textwrap
import time
from types import SimpleNamespace

import attrs
from airflow.jobs.triggerer_job_runner import TriggerRunnerSupervisor

from airflow_command import printed_after_command
from dbtflow.airflow import triggerer_passes

AIRFLOWS_PASS = [
    "load_triggers",
    "_service_subprocess",
    "handle_events",
    "handle_failed_triggers",
    "clean_unused",
    "heartbeat",
    "emit_metrics",
]


def _calls(function: object) -> list[str]:
    source = inspect.getsource(getattr(function, "__wrapped__", function))
    tree = ast.parse(textwrap.dedent(source))
    return [
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    ]


def test_airflows_pass_is_still_what_the_patch_replaces() -> None:
    assert _calls(TriggerRunnerSupervisor.run_once) == AIRFLOWS_PASS, (
        "TriggerRunnerSupervisor.run_once changed: re-read it and update or remove "
        "dbtflow.airflow.triggerer_passes"
    )


def test_each_pass_applies_events_and_the_list_is_read_after_a_clean_once_a_second() -> None:
    """Events and failures are applied on every pass; the trigger list is cleaned, then read,
    only on the first pass of each second (the clean after every event handled so far)."""
    calls: list[str] = []

    # Slotted, as Airflow's supervisor is (an attrs class): the patch may set no attribute on it.
    @attrs.define(slots=True, init=False)
    class Recording(TriggerRunnerSupervisor):  # the methods that touch the database or the runner
        def __init__(self) -> None:
            pass

        def load_triggers(self) -> None:
            calls.append("load_triggers")

        def clean_unused(self) -> None:
            calls.append("clean_unused")

        def _service_subprocess(self, max_wait_time: float, *args: object, **kwargs: object) -> None:
            calls.append("_service_subprocess")

        def handle_events(self) -> None:
            calls.append("handle_events")

        def handle_failed_triggers(self) -> None:
            calls.append("handle_failed_triggers")

        def heartbeat(self) -> None:
            calls.append("heartbeat")

        def emit_metrics(self) -> None:
            calls.append("emit_metrics")

    triggerer_passes.patch(SimpleNamespace(TriggerRunnerSupervisor=Recording))
    supervisor = Recording()
    assert not hasattr(supervisor, "__dict__")
    every_pass = [
        "_service_subprocess",
        "handle_events",
        "handle_failed_triggers",
        "heartbeat",
        "emit_metrics",
    ]

    supervisor.run_once()
    assert calls == ["clean_unused", "load_triggers", *every_pass]
    calls.clear()
    supervisor.run_once()
    supervisor.run_once()
    assert calls == every_pass * 2
    calls.clear()
    time.sleep(triggerer_passes.LIST_EVERY_S)
    supervisor.run_once()
    assert calls == ["clean_unused", "load_triggers", *every_pass]


def test_the_triggerer_command_installs_it() -> None:
    printed = printed_after_command(
        "triggerer",
        "from airflow.jobs.triggerer_job_runner import TriggerRunnerSupervisor as S",
        "print(getattr(S.run_once, 'dbtflow_passes', False))",
    )
    assert printed == "True"
