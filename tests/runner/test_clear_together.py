"""One dbt invocation per clear: after a fix, the failed model's task and its cleared dependants
are built by ONE dbt invocation (the first task that builds alone takes the waiting tasks
downstream of it along), streamed to their tasks, each ending with its own state, log and XCom.

``dbtflow run`` (the embedded Airflow) runs the bikeshare example with stg_trips broken: its
dependants end ``upstream_failed``. The model is mended and the run cleared as a user clears it in
Airflow's grid, "only failed" with "downstream", which leaves ``dbt_build`` out: ``dbtflow retry``
clears every task that did not succeed, so ``dbt_build`` is marked ``success`` in the metadata
database first, and the retry runs without the head start (which would build the cleared nodes in
an invocation of its own).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from dbtflow.state.store import StateStore

from conftest import STG_TRIPS_AND_DOWNSTREAM, run_cli

BROKEN = "from {{ ref('raw_trips') }}"


def test_a_cleared_failure_and_its_dependants_build_in_one_invocation(
    own_bikeshare: Path, airflow_db: Path, tmp_path: Path
) -> None:
    model = own_bikeshare / "models" / "staging" / "stg_trips.sql"
    model.write_text(model.read_text().replace("rider_type", "no_such_column"))
    summary = tmp_path / "run.json"
    done = run_cli("run", str(own_bikeshare), "--progress", "none", "--summary-json", str(summary))
    assert done.returncode == 1, done.stdout + done.stderr
    outcome = json.loads(summary.read_text())
    dag_id, run_id = outcome["dag_id"], outcome["run_id"]
    first = {t["task_id"]: t for t in outcome["tasks"]}
    dependants = {uid.rsplit(".", 1)[1] for uid in STG_TRIPS_AND_DOWNSTREAM} - {"stg_trips"}
    assert first["stg_trips"]["state"] == "failed"
    assert {first[t]["state"] for t in dependants} == {"upstream_failed"}

    model.write_text(model.read_text().replace("no_such_column", "rider_type"))
    with sqlite3.connect(airflow_db, timeout=60) as con:
        con.execute(
            "update task_instance set state = 'success' where dag_id = ? and run_id = ? and task_id = ?",
            (dag_id, run_id, "dbt_build"),
        )
    cleared_at = time.time()
    again = tmp_path / "retry.json"
    done = run_cli("retry", dag_id, "--progress", "none", "--summary-json", str(again), "--no-head-start")
    assert done.returncode == 0, done.stdout + done.stderr
    tasks = {t["task_id"]: t for t in json.loads(again.read_text())["tasks"]}

    # The failed task and everything downstream of it (the relationships test of fct_trips too).
    cleared = {t for t, task in first.items() if task["state"] != "success"} - {"dbt_build", "dbt_assets"}
    assert {"stg_trips", *dependants} <= cleared
    for task_id in cleared:
        assert (tasks[task_id]["state"], tasks[task_id]["try_number"]) == ("success", 2), tasks[task_id]
    untouched = {t for t in tasks if t not in cleared and t not in ("dbt_build", "dbt_assets")}
    tries = {t: (first[t]["try_number"], tasks[t]["try_number"]) for t in untouched}
    assert untouched and all(before == after for before, after in tries.values()), tries

    # One invocation built every cleared node, the failed model's task's; nothing else ran dbt.
    store = StateStore()
    since = [
        r
        for r in store.results_of_run(dag_id, run_id)
        if r.invocation_id in _invocations_since(store, dag_id, run_id, cleared_at)
    ]
    assert {r.result.unique_id for r in since} >= STG_TRIPS_AND_DOWNSTREAM
    assert {r.result.status for r in since} == {"success", "pass"}
    assert any(r.result.unique_id.startswith("test.bikeshare.relationships_fct_trips") for r in since)
    built = {r.invocation_id for r in since}
    assert len(built) == 1, since
    (builder,) = [i for i in store.invocations_of_run(dag_id, run_id) if i.id in built]
    assert (builder.task_id, builder.try_number) == ("stg_trips", 2)
    assert {i.task_id for i in store.invocations_of_run(dag_id, run_id) if i.started_at >= cleared_at} == {
        "stg_trips"
    }
    # Every result was reported by a task (the builder consumes only its own nodes').
    assert {r.consumed_by for r in since} == {2}

    # Each task has its own XCom summary and log, naming its own node.
    with sqlite3.connect(airflow_db, timeout=60) as con:
        rows = con.execute(
            "select task_id, value from xcom where dag_id = ? and run_id = ? and key = 'return_value'",
            (dag_id, run_id),
        ).fetchall()
    xcoms = {task_id: str(value) for task_id, value in rows}
    logs = Path(airflow_db).parent / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    for task_id in cleared:
        log = (logs / f"task_id={task_id}" / "attempt=2.log").read_text()
        if f"model.bikeshare.{task_id}" in STG_TRIPS_AND_DOWNSTREAM:
            assert f"model.bikeshare.{task_id}" in xcoms[task_id], xcoms[task_id]
            assert f"model main.{task_id}" in log, log
        else:
            assert task_id in xcoms and "PASS" in log, log


def _invocations_since(store: StateStore, dag_id: str, run_id: str, since: float) -> set[str]:
    return {i.id for i in store.invocations_of_run(dag_id, run_id) if i.started_at >= since}
