"""Streamed per_model under a real scheduler: node tasks never take a worker, they end within
about a second of dbt finishing their node, and a failure marks only dependants."""

from __future__ import annotations

import statistics
from datetime import datetime
from pathlib import Path

from dbtflow.streaming.store import StateStore
from dbtflow.testing.deployment import airflow_deployment

from conftest import EXAMPLE, copy_project

DAG = """# airflow DAG with dbtflow
from dbtflow import DbtProject, dbt_dag
dag = dbt_dag(DbtProject({project!r}), dag_id={dag_id!r})
"""


def _seconds(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_streamed_dag_under_a_real_scheduler(tmp_path: Path) -> None:
    good = copy_project(EXAMPLE, tmp_path / "good")
    broken = copy_project(EXAMPLE, tmp_path / "broken")
    (broken / "models" / "staging" / "stg_bikes.sql").write_text("select nope from {{ ref('raw_bikes') }}\n")
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "good.py").write_text(DAG.format(project=str(good), dag_id="sched_good"))
    (dags / "broken.py").write_text(DAG.format(project=str(broken), dag_id="sched_broken"))
    env = {
        "DBTFLOW_HOME": str(tmp_path / "dbtflow"),
        "DBTFLOW_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "BIKESHARE_DUCKDB": str(tmp_path / "warehouse.duckdb"),
    }
    with airflow_deployment(tmp_path / "airflow", dags, env) as airflow:
        airflow.wait_for_dag("sched_good")
        run_id, state, seconds = airflow.trigger_and_wait("sched_good")
        assert state == "success", airflow.query("select task_id, state from task_instance")
        tis = airflow.query(
            "select task_id, state, queued_dttm, end_date, start_date from task_instance"
            " where dag_id = ? and run_id = ?",
            "sched_good",
            run_id,
        )
        by_task = {t[0]: t for t in tis}
        assert all(t[1] == "success" for t in tis), tis
        # The producer ran on a worker; every node task started and ended in the triggerer.
        assert by_task["dbt_build"][2] is not None
        node_tasks = [t for t in tis if t[0] != "dbt_build"]
        assert node_tasks and all(t[2] is None for t in node_tasks), node_tasks

        # A node task that was already waiting when dbt finished its node ended within about a
        # second. (Tasks further down only start waiting once Airflow has marked their upstream
        # tasks successful: the scheduler and the triggerer each take up to a second per layer.)
        store = StateStore(env["DBTFLOW_STATE_URL"])
        with store.engine.connect() as conn:
            when = dict(
                conn.exec_driver_sql(
                    "select unique_id, recorded_at from dbtflow_results where run_id = ?", (run_id,)
                ).fetchall()
            )
        lags = {}
        for task_id, _, _, end, start in node_tasks:
            uid = next((u for u in when if u.split(".")[-1] == task_id), None)
            if uid is not None and _seconds(start) < when[uid]:
                lags[task_id] = round(_seconds(end) - when[uid], 2)
        assert len(lags) >= 3, lags
        assert statistics.median(lags.values()) < 1.5, lags
        assert max(lags.values()) < 3.0, lags
        print(f"\ntrigger to end of run: {seconds:.1f}s; waiting tasks ended after dbt's result: {lags}")

        airflow.wait_for_dag("sched_broken")
        run_id, state, _ = airflow.trigger_and_wait("sched_broken")
        assert state == "failed"
        states = dict(
            airflow.query(
                "select task_id, state from task_instance where dag_id = ? and run_id = ?",
                "sched_broken",
                run_id,
            )
        )
        assert states["stg_bikes"] == "failed"
        assert states["bike_utilization"] == "upstream_failed"
        assert states["fct_trips"] == "success" and states["station_daily_usage"] == "success"
