"""Microbatch models on Airflow's data intervals: each DAG run builds the batches of its interval.

``dag.test()`` with a logical date, on a daily data-interval timetable: a run writes its own day's
rows of the example's ``trips_microbatch`` and no other day's; a batch that fails is retried alone
(per_model and single; grouped tasks run dbt as single ones do, per_task ones as a per_model node
built alone); ``dbtflow backfill`` makes one run per day, each building its day once.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dbtflow import DbtProject
from dbtflow.project.manifest import load_graph

from conftest import AIRFLOW_HOME, run_cli
from dagtest import dag_file, load_dag

MICROBATCH = "model.bikeshare.trips_microbatch"
#: Trips per day in the example's raw_trips seed.
DAY_ROWS = {"2024-05-01": 28, "2024-05-02": 40, "2024-05-03": 38, "2024-05-04": 14}


def rows_by_day(database: Path) -> dict[str, int]:
    with duckdb.connect(str(database), read_only=True) as con:
        rows = con.execute(
            "select strftime(started_at, '%Y-%m-%d'), count(*) from trips_microbatch group by 1 order by 1"
        ).fetchall()
    return {day: count for day, count in rows}


def xcom(dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    with closing(sqlite3.connect(AIRFLOW_HOME.database)) as con:
        row = con.execute(
            "select value from xcom where dag_id = ? and run_id = ? and task_id = ? and key = 'return_value'",
            (dag_id, run_id, task_id),
        ).fetchone()
    assert row is not None, f"no XCom from {task_id}"
    value = json.loads(row[0])
    return json.loads(value) if isinstance(value, str) else value


def daily_dag(project: Path, dag_id: str) -> str:
    return f"""
        from airflow.timetables.interval import CronDataIntervalTimetable
        from dbtflow import DbtProject, dbt_dag
        dag = dbt_dag(
            DbtProject({str(project)!r}), dag_id={dag_id!r}, select="+trips_microbatch",
            schedule=CronDataIntervalTimetable("@daily", timezone="UTC"), assets=False,
        )
    """


def test_a_scheduled_run_builds_the_batches_of_its_data_interval(
    bikeshare_dir: Path, warehouse: Path, airflow_db: Path
) -> None:
    load_graph(DbtProject(bikeshare_dir))  # parsed before Airflow's DAG import timeout counts
    with dag_file("microbatch_daily", daily_dag(bikeshare_dir, "microbatch_daily")) as path:
        dag = load_dag(path, "microbatch_daily")
        run = dag.test(logical_date=datetime(2024, 5, 3, tzinfo=UTC))
        assert str(run.state) == "success", run.get_task_instances()
        assert rows_by_day(warehouse) == {"2024-05-02": DAY_ROWS["2024-05-02"]}
        # The same interval again (dag.test clears the run): its rows are replaced, not doubled.
        run = dag.test(logical_date=datetime(2024, 5, 3, tzinfo=UTC))
    assert str(run.state) == "success", run.get_task_instances()
    # The interval before the logical date (CronDataIntervalTimetable), start included, end excluded.
    assert (run.data_interval_start.isoformat(), run.data_interval_end.isoformat()) == (
        "2024-05-02T00:00:00+00:00",
        "2024-05-03T00:00:00+00:00",
    )
    assert rows_by_day(warehouse) == {"2024-05-02": DAY_ROWS["2024-05-02"]}
    summary = xcom("microbatch_daily", run.run_id, "trips_microbatch")
    assert summary["nodes"][MICROBATCH]["batches"] == {"2024-05-02": "success"}, summary


#: trips_microbatch whose 2024-05-02 batch fails in the first invocation that builds it. Its
#: pre-hook (run once per invocation, before its first batch) leaves a file named after the
#: invocation and its first batch: which batches each invocation started from.
BATCH_ID = "{{ model.batch.id if model.batch else 0 }}"
FIRST_BATCH_FILE = "{{ env_var('FLAG_DIR') }}/first_" + BATCH_ID + "_{{ invocation_id }}.csv"
FAILING_BATCH_SQL = (
    """
{{ config(
    materialized='incremental', incremental_strategy='microbatch', event_time='started_at',
    batch_size='day', begin='2024-05-01', pre_hook="copy (select 1 as x) to '"""
    + FIRST_BATCH_FILE
    + """'",
) }}
select trip_id, bike_id, start_station_id, started_at, rider_type,
    case when '"""
    + BATCH_ID
    + """' = '20240502'
              and (select count(*) from glob('{{ env_var("FLAG_DIR") }}/first_*.csv')) < 2
         then error('batch 2024-05-02 fails in the first invocation') else 1 end as ok
from {{ ref('stg_trips') }}
"""
)


@pytest.mark.parametrize("pattern", ["per_model", "single"])
def test_a_failed_batch_is_retried_alone(
    own_bikeshare: Path, airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pattern: str
) -> None:
    (own_bikeshare / "models" / "marts" / "trips_microbatch.sql").write_text(FAILING_BATCH_SQL)
    monkeypatch.setenv("FLAG_DIR", str(tmp_path))
    load_graph(DbtProject(own_bikeshare))
    dag_id = f"microbatch_retry_{pattern}"
    # Runs cover three days (every third day at midnight): three daily batches in one run.
    source = f"""
        from datetime import timedelta
        from airflow.timetables.interval import CronDataIntervalTimetable
        from dbtflow import DbtProject, dbt_dag
        dag = dbt_dag(
            DbtProject({str(own_bikeshare)!r}), dag_id={dag_id!r}, select="+trips_microbatch",
            pattern={pattern!r}, assets=False,
            schedule=CronDataIntervalTimetable("0 0 */3 * *", timezone="UTC"),
            default_args={{"retries": 1, "retry_delay": timedelta(0)}},
        )
    """
    with dag_file(dag_id, source) as path:
        run = load_dag(path, dag_id).test(logical_date=datetime(2024, 5, 4, tzinfo=UTC))
    assert (run.data_interval_start.day, run.data_interval_end.day) == (1, 4)
    tries = {ti.task_id: (str(ti.state), ti.try_number) for ti in run.get_task_instances()}
    task_id = "trips_microbatch" if pattern == "per_model" else "dbt_build"
    assert str(run.state) == "success" and tries[task_id] == ("success", 2), tries
    database = Path(os.environ["BIKESHARE_DUCKDB"])
    assert rows_by_day(database) == {day: DAY_ROWS[day] for day in ("2024-05-01", "2024-05-02", "2024-05-03")}
    # The first invocation started from 2024-05-01 (and built its three batches); the retry built
    # 2024-05-02 alone: one more invocation, starting from that batch.
    firsts = sorted(p.name.split("_")[1] for p in tmp_path.glob("first_*.csv"))
    assert firsts == ["20240501", "20240502"], firsts
    summary = xcom(dag_id, run.run_id, task_id)["nodes"][MICROBATCH]
    if pattern == "per_model":
        assert summary["batches"] == {"2024-05-02": "success"}  # what the retry built
    else:  # dbt retry's document: every batch, as it stands now
        assert summary["batches"] == dict.fromkeys(("2024-05-01", "2024-05-02", "2024-05-03"), "success")


def _backfill(*args: str) -> dict[str, Any]:
    done = run_cli("backfill", *args, "--progress", "none", "--summary-json", str(SUMMARY))
    assert done.returncode == 0, done.stdout + done.stderr
    summary: dict[str, Any] = json.loads(SUMMARY.read_text())
    return summary


SUMMARY = AIRFLOW_HOME.home / "backfill_summary.json"


def test_a_backfill_runs_each_interval_once(own_bikeshare: Path, airflow_db: Path) -> None:
    database = Path(os.environ["BIKESHARE_DUCKDB"])
    days = ("2024-05-01", "2024-05-02", "2024-05-03")
    first = _backfill(
        str(own_bikeshare), "--select", "+trips_microbatch", "--from", days[0], "--to", days[-1]
    )
    dag_id = first["dag_id"]
    assert [run["state"] for run in first["runs"]] == ["success"] * 3, first
    assert rows_by_day(database) == {day: DAY_ROWS[day] for day in days}
    with closing(sqlite3.connect(AIRFLOW_HOME.database)) as con:
        # Other tests' `dbtflow run` of the example share its DAG id (and this worker's Airflow).
        runs = con.execute(
            "select run_id, run_type, data_interval_start from dag_run where dag_id = ? "
            "and run_type = 'backfill' order by logical_date",
            (dag_id,),
        ).fetchall()
    assert [(kind, start[:10]) for _, kind, start in runs] == [("backfill", day) for day in days], runs
    for (run_id, _, start), run in zip(runs, first["runs"], strict=True):
        assert run["run_id"] == run_id
        assert xcom(dag_id, run_id, "trips_microbatch")["nodes"][MICROBATCH]["batches"] == {
            start[:10]: "success"
        }
