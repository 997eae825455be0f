"""A killed invocation does not stay ``running`` for good: the next invocation of its DAG run records
it ``died``, with the time it was noticed and why, and takes over its claims; live invocations and
other runs' are left alone. A real SQLite store; a dead invocation carries the pid of a process
that has exited."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from dbtflow.project.results import NodeResult
from dbtflow.state.invocations import InvocationState
from dbtflow.state.store import StateStore
from dbtflow.state.task_try import TaskTry

NODES = ["model.p.a", "test.p.not_null_a", "model.p.b"]


def _exited_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    return int(done.stdout)


def _state(store: StateStore, invocation_id: str) -> InvocationState:
    info = store.invocation(invocation_id)
    assert info is not None
    return info.state


def test_the_next_invocation_of_the_run_records_a_killed_one_died(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    gone = _exited_pid()
    live, _ = store.start_invocation(TaskTry("dag", "run", "other", 1), [])
    killed, claimed = store.start_invocation(TaskTry("dag", "run", "dbt_build", 1), NODES, pid=gone)
    assert claimed == NODES
    # It finished the model, not its test, before it was killed.
    store.record_result(killed, "dag", "run", NodeResult("model.p.a", "success"))
    other_run, _ = store.start_invocation(TaskTry("dag", "run-2", "dbt_build", 1), NODES, pid=gone)
    assert _state(store, killed) == InvocationState.RUNNING

    noticed = time.time()
    newer, claimed = store.start_invocation(TaskTry("dag", "run", "a", 2), ["test.p.not_null_a"])
    assert claimed == ["test.p.not_null_a"]
    died = store.invocation(killed)
    assert died is not None and died.state == InvocationState.DIED
    assert died.finished_at is not None and died.finished_at >= noticed
    assert f"pid {gone}" in (died.error or "") and "is gone" in (died.error or "")
    # Another run's invocation is its own run's to notice; a live one is not dead.
    assert [_state(store, i) for i in (other_run, live, newer)] == [InvocationState.RUNNING] * 3
