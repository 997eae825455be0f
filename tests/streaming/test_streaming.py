"""Streamed per_model runs: retries and clears rebuild only what failed, a dead dbt process
does not hang the run, and no node is built twice at once. Asserted from dbt's own results
(recorded per invocation in the shared state), not only from task states."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from dbtflow import DbtProject
from dbtflow.project.events import DbtEvent
from dbtflow.project.manifest import load_graph, load_manifest
from dbtflow.project.results import NodeResult
from dbtflow.state.invocations import InvocationState
from dbtflow.state.store import StateStore
from dbtflow.state.task_try import TaskTry
from dbtflow.streaming import producer
from dbtflow.streaming.producer import claim_nodes, run_claimed_invocation

from conftest import (
    AIRFLOW_HOME,
    FAIL_ONCE_SQL,
    SLOW_WHILE_FLAGGED_SQL,
    STG_TRIPS_AND_DOWNSTREAM,
    built_since,
    history_of_run,
    run_cli,
)


def _built_by_invocation(dag_id: str, run_id: str) -> dict[str, dict[str, str]]:
    """For each invocation of the run (by owner task and try, ``task#try``): unique id -> dbt status."""
    store = StateStore()
    owners = {inv.id: f"{inv.task_id}#{inv.try_number}" for inv in store.invocations_of_run(dag_id, run_id)}
    built: dict[str, dict[str, str]] = defaultdict(dict)
    for stored in store.results_of_run(dag_id, run_id):
        built[owners[stored.invocation_id]][stored.result.unique_id] = stored.result.status
    return built


def _summary(path: Path) -> tuple[str, str, dict[str, tuple[str, int]]]:
    data = json.loads(path.read_text())
    return data["run_id"], data["state"], {t["task_id"]: (t["state"], t["try_number"]) for t in data["tasks"]}


@pytest.mark.parametrize("head_start", [True, False], ids=["one-invocation", "each-task-alone"])
def test_retry_rebuilds_only_failed_nodes_and_their_downstream(
    own_bikeshare: Path, airflow_db: Path, tmp_path: Path, head_start: bool
) -> None:
    model = own_bikeshare / "models" / "staging" / "stg_trips.sql"
    good = model.read_text()
    model.write_text("select no_such_column from {{ ref('raw_trips') }}\n")
    summary = tmp_path / "run.json"
    flags = [] if head_start else ["--no-head-start"]
    first = run_cli("run", str(own_bikeshare), "--progress", "none", "--summary-json", str(summary), *flags)
    assert first.returncode == 1, first.stdout + first.stderr
    run_id, _, tasks = _summary(summary)
    assert tasks["stg_trips"][0] == "failed" and tasks["fct_trips"][0] == "upstream_failed"

    model.write_text(good)
    history_before = history_of_run("dbtflow_bikeshare", run_id)
    second = run_cli(
        "retry", "dbtflow_bikeshare", "--progress", "none", "--summary-json", str(summary), *flags
    )
    assert second.returncode == 0, second.stdout + second.stderr
    retried_run, state, tasks = _summary(summary)
    assert retried_run == run_id and state == "success"
    assert tasks["stg_trips"] == ("success", 2)
    assert tasks["stg_stations"] == ("success", 1), "a successful task must not run again"

    built = _built_by_invocation("dbtflow_bikeshare", run_id)
    rebuilt = {uid for owner, results in built.items() if owner != "dbt_build#1" for uid in results}
    rebuilt_models = {u for u in rebuilt if not u.startswith("test.")}
    assert rebuilt_models == STG_TRIPS_AND_DOWNSTREAM
    # The run-time history agrees: only the failed model and its downstream ran again.
    again = built_since(history_before, history_of_run("dbtflow_bikeshare", run_id))
    assert {u for u in again if u.startswith("model.")} == STG_TRIPS_AND_DOWNSTREAM, again
    assert set(again.values()) <= {"success", "pass"}, again
    # Either way the clear is one dbt invocation: the runner's head start, or the producer's
    # second try (it failed, as `dbt build` did, so the retry cleared it with the failed node).
    if head_start:
        assert set(built) == {"dbt_build#1", "dbtflow_retry#1"}
    else:
        assert set(built) == {"dbt_build#1", "dbt_build#2"}


#: ``dbtflow run`` with Airflow's creation of the DAG run held back ``argv[1]`` seconds: how a
#: loaded machine orders it, the head-start dbt ending before the run exists.
SLOW_RUN_CREATION = (
    "import sys, time; import dbtflow.runner.run as run; create = run.create_run; "
    "delay = float(sys.argv.pop(1)); "
    "run.create_run = lambda *a, **k: (time.sleep(delay), create(*a, **k))[1]; "
    "from dbtflow.cli import main; raise SystemExit(main(sys.argv[1:]))"
)


def test_a_head_start_that_ended_before_the_run_existed_is_reported_not_rebuilt(
    own_bikeshare: Path, airflow_db: Path, tmp_path: Path
) -> None:
    """The producer task ends with the head start's results when that dbt ended before Airflow
    created the run: it does not build again, and the dependants of a failed model end
    upstream_failed (they were built again without it, and failed, 2026-12-04)."""
    model = own_bikeshare / "models" / "staging" / "stg_trips.sql"
    model.write_text("select no_such_column from {{ ref('raw_trips') }}\n")
    summary = tmp_path / "run.json"
    command = [sys.executable, "-c", SLOW_RUN_CREATION, "8", "run", str(own_bikeshare)]
    done = subprocess.run(
        [*command, "--progress", "none", "--summary-json", str(summary)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    run_id, _, tasks = _summary(summary)
    invocations = StateStore().invocations_of_run("dbtflow_bikeshare", run_id)
    assert len(invocations) == 1, invocations  # the head start's; nothing built again
    built = _built_by_invocation("dbtflow_bikeshare", run_id)
    assert built["dbt_build#1"]["model.bikeshare.stg_trips"] == "error"
    assert tasks["stg_trips"] == ("failed", 1) and tasks["dbt_build"] == ("failed", 1)
    for uid in STG_TRIPS_AND_DOWNSTREAM - {"model.bikeshare.stg_trips"}:
        assert tasks[uid.rsplit(".", 1)[1]][0] == "upstream_failed", tasks


def test_task_retry_builds_the_failed_node_alone(
    own_bikeshare: Path, airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLAG_DIR", str(tmp_path))
    (own_bikeshare / "models" / "marts" / "fail_once.sql").write_text(FAIL_ONCE_SQL)
    summary = tmp_path / "run.json"
    done = run_cli(
        "run", str(own_bikeshare), "--progress", "none", "--summary-json", str(summary),
        "--retries", "1", "--retry-delay", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    run_id, state, tasks = _summary(summary)
    assert state == "success"
    assert tasks["fail_once"] == ("success", 2)
    assert tasks["fct_trips"] == ("success", 1)
    built = _built_by_invocation("dbtflow_bikeshare", run_id)
    fail_once = "model.bikeshare.fail_once"
    assert built["dbt_build#1"][fail_once] == "error"
    # The retry built it once more: its own task alone, or the producer's retry (which failed as
    # `dbt build` did), whichever claimed it first; never both.
    again = [owner for owner, results in built.items() if owner != "dbt_build#1" and fail_once in results]
    assert len(again) == 1 and built[again[0]][fail_once] == "success", built
    assert len(list(tmp_path.glob("attempt_*.csv"))) == 2


def test_killed_dbt_process_fails_waiting_tasks_and_retries_complete_the_run(
    own_bikeshare: Path, airflow_db: Path, tmp_path: Path
) -> None:
    (own_bikeshare / "models" / "marts" / "slow_model.sql").write_text(SLOW_WHILE_FLAGGED_SQL)
    (own_bikeshare / "models" / "marts" / "after_slow.sql").write_text(
        "select n from {{ ref('slow_model') }}\n"
    )
    summary = tmp_path / "run.json"
    slow_flag = tmp_path / "slow.flag"
    slow_flag.touch()
    env = {**os.environ, "SLOW_FLAG": str(slow_flag)}
    command = [
        sys.executable, "-m", "dbtflow.cli", "run", str(own_bikeshare), "--progress", "none",
        "--summary-json", str(summary), "--retries", "1", "--retry-delay", "0",
        "--vars", json.dumps({"slow_n": 30000}),
    ]  # fmt: skip
    started = time.monotonic()
    runner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    store = StateStore()
    engine_pid = None
    deadline = time.monotonic() + 120
    while engine_pid is None and time.monotonic() < deadline:
        time.sleep(0.2)
        with store.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "select i.pid from dbtflow_invocations i join dbtflow_results r on r.invocation_id = i.id"
                " where i.task_id = 'dbt_build' and i.state = 'running'"
                " and r.unique_id = 'model.bikeshare.fct_trips'"
            ).fetchall()
        engine_pid = rows[0][0] if rows else None
    assert engine_pid is not None, "the streamed invocation never got going"
    time.sleep(1.0)  # the slow model is running now
    os.kill(engine_pid, signal.SIGKILL)
    slow_flag.unlink()  # its rebuild is quick
    output, _ = runner.communicate(timeout=300)
    elapsed = time.monotonic() - started
    assert runner.returncode == 0, output
    assert elapsed < 150, f"the run took {elapsed:.0f}s after the kill"
    run_id, state, tasks = _summary(summary)
    assert state == "success"
    assert tasks["slow_model"] == ("success", 2)
    assert tasks["after_slow"][0] == "success"
    log = next(
        AIRFLOW_HOME.log_folder.glob(
            f"dag_id=dbtflow_bikeshare/run_id={run_id}/task_id=slow_model/attempt=1.log"
        )
    )
    assert "the process running dbt" in log.read_text() and "Retry or clear this task" in log.read_text()
    # After the kill, slow_model was built exactly once more, successfully: by its own task's retry
    # or by the retried build task, whichever claimed it first, never by both.
    store = StateStore()
    invocations = store.invocations_of_run("dbtflow_bikeshare", run_id)
    killed = {inv.id for inv in invocations if inv.pid == engine_pid}
    rebuilt = [
        stored.result.status
        for stored in store.results_of_run("dbtflow_bikeshare", run_id)
        if stored.result.unique_id == "model.bikeshare.slow_model" and stored.invocation_id not in killed
    ]
    assert rebuilt == ["success"]


def test_a_node_is_never_built_by_two_invocations_at_once(bikeshare_dir: Path, warehouse: Path) -> None:
    project = DbtProject(bikeshare_dir)
    graph = load_graph(project)
    store = StateStore()
    node = "seed.bikeshare.raw_stations"
    holder = claim_nodes(store, TaskTry("claims", "run-1", "dbt_build", 1), [node])
    assert holder.claimed == [node]
    other = run_claimed_invocation(
        project,
        graph,
        lambda: load_manifest(project),
        store,
        TaskTry("claims", "run-1", "raw_stations", 1),
        [node],
    )
    assert other.claimed == [] and other.held_elsewhere == [node] and other.run is None
    store.finish_invocation(holder.invocation_id, InvocationState.SUCCESS)
    events: list[DbtEvent] = []
    passed_on: list[NodeResult] = []
    again = run_claimed_invocation(
        project,
        graph,
        lambda: load_manifest(project),
        store,
        TaskTry("claims", "run-1", "raw_stations", 2),
        [node],
        on_event=events.append,
        on_results=passed_on.extend,
    )
    assert again.claimed == [node] and again.run is not None
    result = next(r for r in again.run.results if r.unique_id == node)
    assert result.status == "success" and result.rows_affected == 5
    # What else sees dbt's events and results is the caller's (the history, the log forwarder).
    assert [r.unique_id for r in passed_on] == [node]
    assert any(e.unique_id == node for e in events)


def test_the_streaming_core_imports_neither_airflow_nor_monitoring() -> None:
    package = Path(producer.__file__).parent
    imported = {
        (path.name, name)
        for path in package.glob("*.py")
        for statement in ast.walk(ast.parse(path.read_text()))
        if isinstance(statement, ast.Import | ast.ImportFrom)
        for name in (
            [statement.module or ""]
            if isinstance(statement, ast.ImportFrom)
            else [a.name for a in statement.names]
        )
    }
    assert ("producer.py", "dbtflow.state.store") in imported  # the scan sees the imports
    upward = sorted((f, n) for f, n in imported if n.split(".")[:2] == ["dbtflow", "monitoring"])
    airflow = sorted((f, n) for f, n in imported if n.split(".")[0] == "airflow")
    assert upward == [] and airflow == []
