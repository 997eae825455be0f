"""The shared state store on its own: try artifacts, liveness of invocations, and retention.

A real SQLite store in a temporary folder (the PostgreSQL store is exercised end to end by the
Celery test)."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from dbtflow import DbtflowError
from dbtflow.project.results import NodeResult
from dbtflow.state import invocations, retention, schema
from dbtflow.state.invocations import InvocationState
from dbtflow.state.store import StateStore
from dbtflow.state.task_try import TaskTry

DAY = 86400.0


def _store(tmp_path: Path) -> StateStore:
    return StateStore(f"sqlite:///{tmp_path / 'state.db'}")


def test_a_try_finds_the_newest_document_of_an_earlier_try_of_its_own_task(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first = TaskTry("dag", "run-1", "dbt_build", try_number=1, map_index=-1)
    store.save_try_artifact(first, {"results": ["from try 1"]})
    store.save_try_artifact(dataclasses.replace(first, try_number=2), {"results": ["from try 2"]})
    store.save_try_artifact(dataclasses.replace(first, run_id="run-2", try_number=3), {"results": ["other"]})
    store.save_try_artifact(dataclasses.replace(first, map_index=0, try_number=3), {"results": ["mapped"]})
    third = dataclasses.replace(first, try_number=3)
    assert store.try_artifact_before(third) == (2, {"results": ["from try 2"]})
    assert store.try_artifact_before(dataclasses.replace(first, try_number=2)) == (
        1,
        {"results": ["from try 1"]},
    )
    assert store.try_artifact_before(first) is None
    # A cleared task runs a try number again: its new document replaces the old one.
    store.save_try_artifact(dataclasses.replace(first, try_number=2), {"results": ["again"]})
    assert store.try_artifact_before(third) == (2, {"results": ["again"]})


def test_a_silent_process_on_this_machine_is_alive_until_it_is_gone(tmp_path: Path) -> None:
    store = _store(tmp_path)
    invocation_id, _ = store.start_invocation(TaskTry("dag", "run", "dbt_build", 1), [])
    info = store.invocation(invocation_id)
    assert info is not None and info.alive
    silent = dataclasses.replace(info, heartbeat_at=time.time() - 2 * invocations.STALE_AFTER_S)
    # Starved of CPU, not dead: its nodes must not be taken over and built a second time.
    assert silent.alive
    assert not dataclasses.replace(
        silent, heartbeat_at=time.time() - 2 * invocations.LOCAL_STALE_AFTER_S
    ).alive
    # The same silence from another machine means it is gone.
    assert not dataclasses.replace(silent, host=socket.gethostname() + "-elsewhere").alive
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    gone = dataclasses.replace(info, pid=int(exited.stdout))
    assert not gone.alive and "is gone" in gone.describe_death()


def _age(store: StateStore, days: float) -> None:
    """Make everything in the store ``days`` older."""
    shift = days * DAY
    with store.engine.begin() as conn:
        for table, columns in (
            (schema.invocations, ("started_at", "heartbeat_at", "finished_at")),
            (schema.results, ("recorded_at",)),
            (schema.try_artifacts, ("saved_at",)),
        ):
            values = {c: table.c[c] - shift for c in columns}
            conn.execute(table.update().values(**values))


def _a_run(store: StateStore, run_id: str) -> str:
    invocation_id, claimed = store.start_invocation(
        TaskTry("dag", run_id, "dbt_build", 1), ["model.p.a", "model.p.b"]
    )
    assert claimed == ["model.p.a", "model.p.b"]
    store.record_result(invocation_id, "dag", run_id, NodeResult("model.p.a", "success"), ["built a"])
    store.start_writing("dag", run_id, invocation_id)
    store.save_try_artifact(TaskTry("dag", run_id, "dbt_build", try_number=1, map_index=-1), {"results": []})
    return invocation_id


def _rows(store: StateStore) -> dict[str, set[str]]:
    with store.engine.connect() as conn:
        return {
            "invocations": {r.run_id for r in conn.execute(sa.select(schema.invocations))},
            "results": {r.run_id for r in conn.execute(sa.select(schema.results))},
            "claims": {r.run_id for r in conn.execute(sa.select(schema.claims))},
            "writers": {r.run_id for r in conn.execute(sa.select(schema.writers))},
            "try_artifacts": {r.run_id for r in conn.execute(sa.select(schema.try_artifacts))},
            "run_locks": {r.run_id for r in conn.execute(sa.select(schema.run_locks))} - {"*"},
        }


def test_the_store_forgets_runs_older_than_the_retention_once_a_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(retention.RETENTION_ENV, "30")
    store = _store(tmp_path)
    _a_run(store, "old")  # its invocation never finished: a process that died 40 days ago
    store.finish_invocation(_a_run(store, "old-finished"), InvocationState.SUCCESS)
    _age(store, 40)
    _a_run(store, "recent")
    _age(store, 10)
    # The next invocation to start prunes: everything of the runs older than 30 days goes.
    with store.engine.begin() as conn:
        conn.execute(schema.maintenance.delete())
    store.start_invocation(TaskTry("dag", "new", "dbt_build", 1), [])
    every_table = {"recent"}
    assert _rows(store) == {
        "invocations": {"recent", "new"},
        "results": every_table,
        "claims": every_table,
        "writers": every_table,
        "try_artifacts": every_table,
        "run_locks": {"recent", "new"},
    }
    # Once a day: within the day, nothing more is deleted even when it is due.
    _age(store, 25)
    assert store.prune_if_due() == {}
    assert "recent" in _rows(store)["results"]
    with store.engine.begin() as conn:
        conn.execute(schema.maintenance.update().values(done_at=time.time() - 2 * DAY))
    assert store.prune_if_due()["results"] == 1
    assert _rows(store)["results"] == set()


def test_retention_can_be_switched_off_and_a_bad_value_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    _a_run(store, "old")
    _age(store, 400)
    monkeypatch.setenv(retention.RETENTION_ENV, "0")
    assert store.prune_if_due() == {}
    assert _rows(store)["results"] == {"old"}
    monkeypatch.setenv(retention.RETENTION_ENV, "a month")
    with pytest.raises(DbtflowError, match="DBTFLOW_STATE_RETENTION_DAYS='a month' is not a number"):
        store.prune_if_due()


def test_a_node_finished_during_a_reading_shows_its_claim_or_its_result(tmp_path: Path) -> None:
    """The result (and the claim's release) committed between the statements of one reading of
    the run's state: the reading still shows the node as claimed or as done, never as neither
    (which sent its task to a worker to report a result already recorded)."""
    store = _store(tmp_path)
    invocation_id, _ = store.start_invocation(TaskTry("dag", "run", "dbt_build", 1), ["model.p.a"])
    finished: list[str] = []

    def finish_after_the_first_statement(*args: object) -> None:
        if not finished:
            finished.append("model.p.a")
            writer = StateStore(str(store.engine.url))  # dbt's process: another connection
            writer.record_result(invocation_id, "dag", "run", NodeResult("model.p.a", "success"))

    sa.event.listen(store.engine, "after_cursor_execute", finish_after_the_first_statement)
    try:
        states = store.node_states("dag", "run", ["model.p.a"])
    finally:
        sa.event.remove(store.engine, "after_cursor_execute", finish_after_the_first_statement)
    assert finished
    assert "model.p.a" in states.newest or "model.p.a" in states.holders, states
