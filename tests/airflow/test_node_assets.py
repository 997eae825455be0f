"""Streamed node tasks emit their node's asset event when they end in the triggerer.

End to end with a real ``dbtflow run`` (its loop handles trigger events as Airflow's triggerer
does; ``tests/deployment/test_scheduler.py`` checks a real triggerer); the rest pins the Airflow
internals ``dbtflow.airflow.node_assets`` depends on, so that an upgrade that moves them fails here."""

from __future__ import annotations

import inspect
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from airflow.triggers.base import BaseTaskEndEvent, TaskSuccessEvent
from sqlalchemy.orm import Session

from airflow_command import printed_after_command
from dbtflow.airflow import node_assets
from dbtflow.airflow.node_assets import _mark_after_commit
from dbtflow.monitoring.history import History, asset_emissions
from dbtflow.project.results import NodeResult

from conftest import run_cli

#: The example's models, seeds and snapshot that `dbt build` materializes (ephemeral left out).
BUILT = 12


def test_the_marked_event_crosses_the_trigger_runners_boundary() -> None:
    from airflow.jobs.triggerer_job_runner import TriggerEventEntry, TriggerRunnerSupervisor, messages

    carried = {"events": [{"name": "a", "uri": "duckdb:///w/db.main.a", "extra": {"unique_id": "m"}}]}
    event = TaskSuccessEvent(xcoms={"return_value": {"n": 1}, node_assets.MARKER: carried})
    sent = messages.TriggerStateChanges(events=[TriggerEventEntry(1, event, None)])
    received = TriggerRunnerSupervisor.decoder.validate_python(sent.model_dump())
    decoded = received.events[0].event
    assert isinstance(decoded, TaskSuccessEvent)
    assert decoded.xcoms == {"return_value": {"n": 1}, node_assets.MARKER: carried}


def test_the_handler_is_registered_beside_airflows_own() -> None:
    from airflow.assets.manager import AssetManager
    from airflow.models import trigger

    node_assets.install()
    assert node_assets.supported()
    ours = trigger.handle_event_submit.dispatch(TaskSuccessEvent)
    airflows = trigger.handle_event_submit.dispatch(BaseTaskEndEvent)
    assert getattr(ours, "dbtflow_node_assets", False) and airflows is not ours
    # Airflow's handler pushes the event's XComs (ours takes the marker out first).
    assert "task_instance.xcom_push(key=key, value=value)" in inspect.getsource(airflows)
    wanted = {"task_instance", "asset", "source_alias_names", "extra", "session"}
    assert wanted <= set(inspect.signature(AssetManager.register_asset_change).parameters)


def test_the_triggerer_command_registers_it_when_airflow_imports_its_models() -> None:
    printed = printed_after_command(
        "triggerer",
        "import airflow.jobs.triggerer_job_runner",
        "from dbtflow.airflow import node_assets",
        "print(node_assets.supported())",
    )
    assert printed == "True"


@pytest.mark.usefixtures("warehouse")
def test_each_node_task_emits_its_nodes_event(bikeshare_dir: Path, airflow_db: Path) -> None:
    dag_id = "node_assets_run"
    done = run_cli("run", str(bikeshare_dir), "--progress", "none", "--assets", "--dag-id", dag_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cannot create asset event" not in done.stdout + done.stderr
    with sqlite3.connect(airflow_db) as con:
        run_id = con.execute(
            "select run_id from dag_run where dag_id = ? order by id desc limit 1", (dag_id,)
        ).fetchone()[0]
        events = con.execute(
            "select source_task_id, extra from asset_event where source_dag_id = ? and source_run_id = ?",
            (dag_id, run_id),
        ).fetchall()
        states = dict(
            con.execute(
                "select task_id, state from task_instance where dag_id = ? and run_id = ?", (dag_id, run_id)
            ).fetchall()
        )
    assert len(events) == BUILT, events
    for source, extra in events:
        facts = json.loads(extra)
        # The task that reported the node emitted it, with the build's facts.
        assert facts["unique_id"].rsplit(".", 1)[1] == source == facts["task_id"], facts
        assert facts["status"] == "success" and facts["execution_time_s"] >= 0, facts
        assert (facts["dag_id"], facts["run_id"]) == (dag_id, run_id) and facts["invocation_id"], facts
    # per_model needs no task after dbt to emit: each node task emitted its own node's event.
    assert "dbt_assets" not in states, states
    with History().engine.connect() as conn:
        marked = conn.execute(
            asset_emissions.select().where(
                asset_emissions.c.dag_id == dag_id, asset_emissions.c.run_id == run_id
            )
        ).fetchall()
    assert sorted(row.task_id for row in marked) == sorted(source for source, _ in events)


FALLBACK = """
import asyncio, sys
from airflow.triggers.base import TaskSuccessEvent
from dbtflow.airflow import node_assets
from dbtflow.airflow.triggers import NodeResultTrigger
from dbtflow.project.results import NodeResult
from dbtflow.state.results import StoredResult
from dbtflow.state.store import StateStore

if sys.argv[1] == "installed":
    node_assets.install()
store = StateStore(sys.argv[2])
trigger = NodeResultTrigger(
    nodes=["model.p.m"], asset_alias="dbtflow:d:nodes", dag_id="d", run_id="r", try_number=1
)
# A model built, whose relation no invocation recorded (the state database is new).
built = StoredResult(1, "inv", NodeResult("model.p.m", "success"), [], None)
event = asyncio.run(trigger._with_assets(TaskSuccessEvent(), store, [built], 1))
print(type(event).__name__, event.payload if type(event).__name__ == "TriggerEvent" else "")
"""


@pytest.mark.parametrize("handler", ["missing", "installed"])
def test_a_node_event_that_cannot_be_carried_resumes_the_task_on_a_worker(
    handler: str, tmp_path: Path
) -> None:
    """Without dbtflow's handler in the triggerer (or without the node's recorded relation), the
    trigger does not end the task without its event: it resumes it on a worker, which emits it
    as its outlet event (``DbtNodeOperator._report_own``)."""
    state = f"sqlite:///{tmp_path / 'state.db'}"
    done = subprocess.run(
        [sys.executable, "-c", FALLBACK, handler, state], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "TriggerEvent {'action': 'report'}", done.stdout


def test_builds_are_marked_emitted_once_their_transaction_commits_and_not_on_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node tasks ended in one transaction (a triggerer pass) are marked emitted after it
    commits, in one write; a transaction rolled back marks nothing (its events are applied again)."""
    monkeypatch.setenv("DBTFLOW_HISTORY_URL", f"sqlite:///{tmp_path / 'history.db'}")
    history = History()
    for task in ("a", "b", "c"):
        history.record("d", "r", "dbt_build", 1, [NodeResult(f"model.p.{task}", "success")])
    writes: list[str] = []
    sa.event.listen(history.engine, "before_cursor_execute", lambda *a: writes.append(a[2].split()[0]))

    def marked() -> list[str]:
        with history.engine.connect() as conn:
            return sorted(conn.execute(sa.select(asset_emissions.c.task_id)).scalars())

    airflow_side = sa.create_engine(f"sqlite:///{tmp_path / 'airflow.db'}")
    with Session(airflow_side) as session:
        session.execute(sa.text("select 1"))
        _mark_after_commit(session, SimpleNamespace(dag_id="d", run_id="r", task_id="a"), ["model.p.a"])
        session.rollback()
        assert marked() == []
        writes.clear()
        session.execute(sa.text("select 1"))
        for task in ("b", "c"):
            _mark_after_commit(
                session, SimpleNamespace(dag_id="d", run_id="r", task_id=task), [f"model.p.{task}"]
            )
        assert marked() == [], "marked before the commit"
        writes.clear()
        session.commit()
        assert writes.count("INSERT") == 1, writes
        assert marked() == ["b", "c"]
        session.execute(sa.text("select 1"))
        session.commit()  # nothing pending: nothing more
        assert marked() == ["b", "c"]
