"""Production conditions: Airflow's CeleryExecutor with a Redis broker, a PostgreSQL metadata
database, two Celery workers in separate processes and working folders (nothing shared through the
local disk but the dbt project), a PostgreSQL warehouse whose credentials come from an Airflow
connection, and dbtflow's shared state and run-time history in PostgreSQL.

One deployment, four stories, each checked from dbt's results, the history and the warehouse:
a worker is SIGKILLed while dbt builds a slow model (the run recovers through Airflow's retries,
no table is half-built, no node is built twice at once); a broken model is fixed and
``dbtflow retry DAG --api-url`` re-runs only it and its downstream; two runs of one DAG started
together never write the same models at once; and the single pattern's retry, on the other
worker than its failed try, still runs ``dbt retry`` (the try's results are in the state database).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

from dbtflow.monitoring.history import History
from dbtflow.state.store import StateStore
from dbtflow.testing.deployment import PARSE_ONCE, Celery, airflow_deployment
from postgres import create_role_and_database, ensure_local_server, psql

from conftest import (
    EXAMPLE,
    STG_TRIPS_AND_DOWNSTREAM,
    built_since,
    copy_project,
    overlapping_builds,
    pid_building,
    run_cli,
)

DAG = """# airflow DAG with dbtflow
from datetime import timedelta
from dbtflow import DbtProject, dbt_dag
dag = dbt_dag(
    DbtProject({project!r}, profile="warehouse"),
    dag_id={dag_id!r},
    default_args={{"retries": {retries}, "retry_delay": timedelta(seconds=2)}},
    {extra}
)
"""
# A table that takes several seconds to build: a window to kill its worker in.
SLOW_MODEL = "select count(*) as trips from {{ ref('fct_trips') }}, pg_sleep({{ var('sleep_s', 8) }})\n"
SLOW = "model.bikeshare.slow_summary"
STATE_DB = "dbtflow_e2e_state"
REDIS = ("127.0.0.1", 6379)


def _ensure_redis() -> None:
    with socket.socket() as sock:
        sock.settimeout(1)
        if sock.connect_ex(REDIS) == 0:
            return
    subprocess.run(
        ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379", "--save", "",
         "--appendonly", "no"],
        check=True,
    )  # fmt: skip
    time.sleep(1)
    with socket.socket() as sock:
        assert sock.connect_ex(REDIS) == 0, "Redis at 127.0.0.1:6379 did not start"


def _fresh_database(name: str) -> str:
    psql(f"drop database if exists {name} with (force)")
    psql(f"create database {name}")
    return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"


def _warehouse(sql: str) -> list[tuple]:  # type: ignore[type-arg]
    import psycopg2

    con = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="dbtflow_e2e_wh")
    with con, con.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def test_celery_workers_recover_from_faults_retry_and_never_write_together(tmp_path: Path) -> None:
    ensure_local_server()
    _ensure_redis()
    create_role_and_database("dbtflow_e2e_wh", "e2e-wh-pw")
    metadata_url = _fresh_database("dbtflow_e2e_airflow")
    state_url = _fresh_database(STATE_DB)
    import redis

    redis.Redis(host=REDIS[0], port=REDIS[1], db=9).flushdb()

    project = copy_project(EXAMPLE, tmp_path / "bikeshare")
    (project / "models" / "marts" / "slow_summary.sql").write_text(SLOW_MODEL)
    dags = tmp_path / "dags"
    dags.mkdir()
    for name, dag_id, extra, retries in (
        ("flow", "celery_flow", "", 2),
        ("twice", "celery_twice", "max_active_runs=2,", 2),
        ("single", "celery_single", "pattern='single',", 0),
    ):
        source = DAG.format(project=str(project), dag_id=dag_id, extra=extra, retries=retries)
        (dags / f"{name}.py").write_text(source)
    env = {
        **PARSE_ONCE,
        "DBTFLOW_HOME": str(tmp_path / "scheduler-home"),
        "DBTFLOW_STATE_URL": state_url,
        "DBTFLOW_HISTORY_URL": state_url,
        "AIRFLOW_CONN_WAREHOUSE": "postgres://dbtflow_e2e_wh:e2e-wh-pw@127.0.0.1:5432/dbtflow_e2e_wh?schema=analytics",
        # A killed worker's task is noticed after 20 s without a heartbeat (default: 5 minutes).
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    }
    celery = Celery(metadata_url=metadata_url, broker_url=f"redis://{REDIS[0]}:{REDIS[1]}/9")
    store, history = StateStore(state_url), History(state_url)
    with airflow_deployment(tmp_path / "airflow", dags, env, celery=celery) as airflow:
        for dag_id in ("celery_flow", "celery_twice", "celery_single"):
            airflow.wait_for_dag(dag_id)

        # 1. SIGKILL the worker whose task runs dbt, while dbt builds the slow table.
        run_id = airflow.trigger("celery_flow")
        pid = pid_building(store, "celery_flow", run_id, SLOW)
        killed = airflow.kill_component_of(pid)
        assert killed.startswith("worker"), killed
        assert airflow.wait_for_run("celery_flow", run_id, timeout=420) == "success", airflow.tasks(
            "celery_flow", run_id
        )
        tasks = airflow.tasks("celery_flow", run_id)
        assert all(state == "success" for state, _ in tasks.values()), tasks
        records = [r for r in history.runs("celery_flow") if r.run_id == run_id]
        assert not overlapping_builds(records), overlapping_builds(records)
        slow = [r for r in records if r.unique_id == SLOW]
        assert [r.status for r in slow] == ["success"], slow  # the killed build recorded nothing
        # Every table is whole: same counts as a reference build, and no dbt temporary relation left.
        counts = {
            t: _warehouse(f"select count(*) from analytics.{t}")[0][0]
            for t in ("fct_trips", "slow_summary", "stg_trips")
        }
        assert counts["slow_summary"] == 1 and counts["fct_trips"] == counts["stg_trips"] > 0, counts
        trips = _warehouse("select trips from analytics.slow_summary")[0][0]
        assert trips == counts["fct_trips"], "the slow table must hold the whole fct_trips"
        leftovers = _warehouse(
            "select relname from pg_class where relname like '%__dbt_tmp%' or relname like '%__dbt_backup%'"
        )
        assert not leftovers, leftovers
        used = {i.pid for i in store.invocations_of_run("celery_flow", run_id)}
        assert pid in used and len(used) >= 2, "another worker must have finished the run"
        airflow.start(killed)  # the machine comes back

        # 2. A broken model, fixed, then `dbtflow retry DAG --api-url`: only it and its downstream.
        model = project / "models" / "staging" / "stg_trips.sql"
        good = model.read_text()
        model.write_text("select no_such_column from {{ ref('raw_trips') }}\n")
        broken_run = airflow.trigger("celery_flow")
        assert airflow.wait_for_run("celery_flow", broken_run, timeout=420) == "failed"
        before = [r for r in history.runs("celery_flow") if r.run_id == broken_run]
        model.write_text(good)
        summary = tmp_path / "retry.json"
        done = run_cli(
            "retry", "celery_flow", "--api-url", airflow.api_url, "--progress", "plain",
            "--summary-json", str(summary), "--timeout", "420",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        outcome = json.loads(summary.read_text())
        assert outcome["run_id"] == broken_run and outcome["state"] == "success"
        tries = {t["task_id"]: t["try_number"] for t in outcome["tasks"]}
        assert tries["stg_stations"] == 1 and tries["stg_trips"] >= 2, tries
        after = [r for r in history.runs("celery_flow") if r.run_id == broken_run]
        again = built_since(before, after)
        assert {u for u in again if u.startswith("model.")} == STG_TRIPS_AND_DOWNSTREAM | {SLOW}, again

        # 3. Two runs of one DAG at once (max_active_runs=2 lets Airflow start both): their dbt
        #    invocations take turns, so no model is written by both at the same time.
        first, second = airflow.trigger("celery_twice"), airflow.trigger("celery_twice")
        assert airflow.wait_for_run("celery_twice", first, timeout=420) == "success"
        assert airflow.wait_for_run("celery_twice", second, timeout=420) == "success"
        records = history.runs("celery_twice")
        assert {r.run_id for r in records} == {first, second}
        assert not overlapping_builds(records), overlapping_builds(records)
        invs = [i for r in (first, second) for i in store.invocations_of_run("celery_twice", r)]
        earliest_end = min(i.finished_at or 0 for i in invs)
        assert all(i.started_at < earliest_end for i in invs), "both runs' dbt must have started together"

        # 4. The single pattern: a broken model fails the one task; the worker that ran it dies;
        #    the retry runs on the other worker and still re-runs only what failed or was skipped.
        model.write_text("select no_such_column from {{ ref('raw_trips') }}\n")
        single_run = airflow.trigger("celery_single")
        assert airflow.wait_for_run("celery_single", single_run, timeout=420) == "failed"
        before = [r for r in history.runs("celery_single") if r.run_id == single_run]
        assert {r.unique_id for r in before if r.status == "success"} >= {"model.bikeshare.stg_stations"}
        model.write_text(good)
        first_worker = airflow.worker_that_ran("celery_single", single_run, "dbt_build", 1)
        airflow.kill(first_worker)
        done = run_cli(
            "retry", "celery_single", "--api-url", airflow.api_url, "--progress", "none",
            "--summary-json", str(summary), "--timeout", "420",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert airflow.worker_that_ran("celery_single", single_run, "dbt_build", 2) != first_worker
        after = [r for r in history.runs("celery_single") if r.run_id == single_run]
        again = built_since(before, after)
        assert {u for u in again if u.startswith("model.")} == STG_TRIPS_AND_DOWNSTREAM | {SLOW}, again
