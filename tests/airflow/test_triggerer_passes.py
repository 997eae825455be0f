"""The triggerer's supervisor reads and cleans its trigger list at most once a second.

Pins the Airflow internal ``dbtflow.airflow.triggerer_passes`` replaces (the body of
``TriggerRunnerSupervisor.run_once``), checks the replacement's order of work pass by pass, and
that a real ``airflow triggerer`` command installs it."""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
from airflow.jobs.triggerer_job_runner import TriggerRunnerSupervisor
from sqlalchemy import event as sa_event
from sqlalchemy import select

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
    # The events-together ``handle_events`` wraps the class's own (tested below); this test records
    # the order of the pass.
    Recording.handle_events = Recording.handle_events.__wrapped__  # type: ignore[attr-defined,method-assign]
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


def test_airflows_event_application_is_still_what_the_patch_replaces() -> None:
    airflows_own = getattr(TriggerRunnerSupervisor.handle_events, "__wrapped__", None)
    airflows_own = airflows_own or TriggerRunnerSupervisor.handle_events
    assert _calls(airflows_own) == ["popleft", "on_trigger_event", "incr", "append"], (
        "TriggerRunnerSupervisor.handle_events changed: re-read it and update or remove the "
        "events-together part of dbtflow.airflow.triggerer_passes"
    )
    assert _calls(TriggerRunnerSupervisor.on_trigger_event) == ["submit_event"]


DAG_SOURCE = """
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG("dbtflow_events_together", schedule=None):
    for n in range(3):
        EmptyOperator(task_id=f"t{n}")
"""


def _deferred_tasks(tmp_path: Path) -> list[Any]:
    """A run of a 3-task DAG in the test metadata database, each task deferred on a trigger of
    its own; the task instances' identities, in task order."""
    from airflow import settings
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.trigger import Trigger
    from airflow.utils.state import TaskInstanceState

    from dbtflow.runner.dag_runs import create_run, plan_run, sync_dag

    (tmp_path / "dag.py").write_text(DAG_SOURCE)
    bag = DagBag(dag_folder=str(tmp_path / "dag.py"), safe_mode=False)
    dag = bag.dags["dbtflow_events_together"]
    sync_dag(bag)
    run, _ = create_run(dag, plan_run(dag))
    session = settings.get_session()()
    tis = sorted(run.get_task_instances(session=session), key=lambda ti: ti.task_id)
    for ti in tis:
        trigger = Trigger(classpath="dbtflow.airflow.triggers.NodeResultTrigger", kwargs={})
        session.add(trigger)
        session.flush()
        ti.trigger_id, ti.state = trigger.id, TaskInstanceState.DEFERRED
        session.merge(ti)
    session.commit()
    # Plain values: Airflow's sessions are scoped, and closing one detaches these rows.
    return [
        SimpleNamespace(
            id=ti.id, dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, trigger_id=ti.trigger_id
        )
        for ti in tis
    ]


def _supervisor(events: list[tuple[int, Any]]) -> Any:
    from airflow.jobs.triggerer_job_runner import TriggerEventEntry

    @attrs.define(slots=True, init=False)
    class Bare(TriggerRunnerSupervisor):  # the state handle_events uses, nothing started
        def __init__(self) -> None:
            self.events = deque(TriggerEventEntry(i, e, seq) for seq, (i, e) in enumerate(events))
            self.persisted_event_seqs = deque()
            self.team_name = None

    return Bare()


def _states_and_xcoms(tis: list[Any]) -> list[tuple[str, Any]]:
    from airflow import settings
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel

    session = settings.get_session()()
    out = []
    for ti in tis:
        state = session.get(TaskInstance, ti.id).state
        value = session.scalar(
            select(XComModel.value).where(
                XComModel.dag_id == ti.dag_id, XComModel.run_id == ti.run_id, XComModel.task_id == ti.task_id
            )
        )
        out.append((str(state), json.loads(value) if isinstance(value, str) else value))
    session.close()
    return out


def _commits_during(action: Any) -> int:
    from airflow import settings

    commits: list[object] = []

    def count(conn: object) -> None:
        commits.append(conn)

    sa_event.listen(settings.engine, "commit", count)
    try:
        action()
    finally:
        sa_event.remove(settings.engine, "commit", count)
    return len(commits)


def _ends(tis: list[Any]) -> list[tuple[int, Any]]:
    from airflow.triggers.base import TaskSuccessEvent

    return [(ti.trigger_id, TaskSuccessEvent(xcoms={"return_value": {"n": n}})) for n, ti in enumerate(tis)]


ENDED = [("success", {"n": 0}), ("success", {"n": 1}), ("success", {"n": 2})]


@pytest.mark.usefixtures("airflow_db")
def test_a_pass_applies_its_events_in_one_transaction(tmp_path: Path) -> None:
    """Three tasks end in one commit, each with its XCom (pushed in that transaction by dbtflow's
    end-event handlers), and their events count as persisted after it."""
    from airflow.jobs import triggerer_job_runner

    from dbtflow.airflow import node_assets

    node_assets.install()  # as in a triggerer: success events go through dbtflow's handler
    triggerer_passes.patch(triggerer_job_runner)
    tis = _deferred_tasks(tmp_path)
    supervisor = _supervisor(_ends(tis))
    assert _commits_during(supervisor.handle_events) == 1
    assert _states_and_xcoms(tis) == ENDED
    assert list(supervisor.persisted_event_seqs) == [0, 1, 2] and not supervisor.events


@pytest.mark.usefixtures("airflow_db")
def test_when_the_shared_transaction_fails_airflow_applies_the_events_one_at_a_time(
    tmp_path: Path,
) -> None:
    from airflow.jobs import triggerer_job_runner
    from airflow.models.trigger import Trigger

    triggerer_passes.patch(triggerer_job_runner)
    tis = _deferred_tasks(tmp_path)

    class Failing:  # Trigger, whose shared-session application fails on the second event
        calls = 0

        @classmethod
        def submit_event(cls, *, trigger_id: int, event: Any, session: Any) -> None:
            cls.calls += 1
            if cls.calls == 2:
                raise RuntimeError("the database went away")
            Trigger.submit_event(trigger_id=trigger_id, event=event, session=session)

    module = SimpleNamespace(**vars(triggerer_job_runner))
    module.Trigger = Failing
    handle_events = triggerer_passes._events_together(
        module, TriggerRunnerSupervisor.handle_events.__wrapped__
    )
    supervisor = _supervisor(_ends(tis))
    commits = _commits_during(lambda: handle_events(supervisor))
    # The first event's application was rolled back; Airflow applied all three, a commit each
    # (and one for each XCom, pushed by Airflow's handler in a session of its own).
    assert commits >= 3 and Failing.calls == 2
    assert _states_and_xcoms(tis) == ENDED
    assert list(supervisor.persisted_event_seqs) == [0, 1, 2] and not supervisor.events
