"""The cloud pattern against a local fake dbt Cloud (HTTPS, verified TLS), through the dbt Cloud
provider's real hook and operator: success, error with the failed nodes, retry from the failure,
and cancellation when the waiting task is killed under a real scheduler."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from dbtflow.monitoring.history import History
from dbtflow.testing.deployment import airflow_deployment
from fake_dbt_cloud import FakeDbtCloud, FakeJob
from lineage_receiver import NAMESPACE, lineage_receiver

from conftest import AIRFLOW_HOME, TLS_CERT, TLS_KEY
from dagtest import dag_file, run_dag

NODES = [
    ("seed.shop.raw_orders", []),
    ("model.shop.stg_orders", ["seed.shop.raw_orders"]),
    ("test.shop.not_null_stg_orders_id", ["model.shop.stg_orders"]),
    ("model.shop.customers", ["seed.shop.raw_orders"]),
    ("model.shop.orders", ["model.shop.stg_orders"]),
    ("test.shop.unique_orders_id", ["model.shop.orders"]),
]

DAG = """
from datetime import timedelta
from dbtflow import dbt_dag
from dbtflow.airflow.cloud import DbtCloudJob
dag = dbt_dag(
    None,
    dag_id={dag_id!r},
    pattern="cloud",
    cloud_job=DbtCloudJob(job_id={job_id}, check_interval=0.2),
    default_args={{"retries": {retries}, "retry_delay": timedelta(seconds=0)}},
)
"""


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDbtCloud]:
    with FakeDbtCloud(TLS_CERT, TLS_KEY) as server:
        for key, value in server.client_env().items():
            monkeypatch.setenv(key, value)
        yield server


def _xcom(dag_id: str, task_id: str = "dbt_cloud_job") -> dict[str, Any]:
    with closing(sqlite3.connect(AIRFLOW_HOME.database)) as con:
        row = con.execute(
            "select value from xcom where dag_id = ? and task_id = ? and key = 'return_value'"
            " order by timestamp desc limit 1",
            (dag_id, task_id),
        ).fetchone()
    assert row is not None
    value = json.loads(row[0])
    return json.loads(value) if isinstance(value, str) else value


def _run(dag_id: str, job_id: int, retries: int = 0) -> tuple[str, dict[str, tuple[str, int]]]:
    with dag_file(dag_id, DAG.format(dag_id=dag_id, job_id=job_id, retries=retries)) as path:
        return run_dag(path, dag_id)


def test_a_successful_job_publishes_every_nodes_result(cloud: FakeDbtCloud, airflow_db: Path) -> None:
    cloud.add_job(FakeJob(id=11, nodes=NODES))
    state, tasks = _run("cloud_ok", 11)
    assert state == "success" and tasks["dbt_cloud_job"][0] == "success"
    (run,) = cloud.runs_of(11)
    assert "cloud_ok" in run.cause
    summary = _xcom("cloud_ok")
    assert summary["job_run_id"] == run.id
    assert summary["failed"] == []
    assert set(summary["nodes"]) == {uid for uid, _ in NODES}
    assert summary["nodes"]["model.shop.orders"]["rows_affected"] == 3
    assert ("POST", "/api/v2/accounts/1/jobs/11/run/") in cloud.requests
    # The job's per-node results went into the run-time history too.
    recorded = {r.unique_id for r in History().runs(dag_id="cloud_ok")}
    assert recorded == {uid for uid, _ in NODES}


def test_a_job_with_its_project_sends_lineage_per_node(
    cloud: FakeDbtCloud,
    bikeshare_dir: Path,
    warehouse: Path,
    airflow_db: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nodes = [
        ("seed.bikeshare.raw_trips", []),
        ("model.bikeshare.stg_trips", ["seed.bikeshare.raw_trips"]),
        ("model.bikeshare.fct_trips", ["model.bikeshare.stg_trips"]),
        ("model.bikeshare.station_daily_usage", ["model.bikeshare.fct_trips"]),
    ]
    cloud.add_job(FakeJob(id=15, nodes=nodes, failing={"model.bikeshare.fct_trips"}))
    source = f"""
        from dbtflow import DbtProject, dbt_dag
        from dbtflow.airflow.cloud import DbtCloudJob
        dag = dbt_dag(
            DbtProject({str(bikeshare_dir)!r}), dag_id="cloud_lineage", pattern="cloud",
            cloud_job=DbtCloudJob(job_id=15, check_interval=0.2),
        )
    """
    with lineage_receiver() as receiver:
        for key, value in receiver.env().items():
            monkeypatch.setenv(key, value)
        with dag_file("cloud_lineage", source) as path:
            state, _ = run_dag(path, "cloud_lineage")
    assert state == "failed"
    # Each node of run_results.json sends its events, with the relations the project names.
    by_node = receiver.node_events("cloud_lineage")
    assert sorted(e["eventType"] for e in by_node["model.bikeshare.stg_trips"]) == ["COMPLETE", "START"]
    assert sorted(e["eventType"] for e in by_node["model.bikeshare.fct_trips"]) == ["FAIL", "START"]
    assert "model.bikeshare.station_daily_usage" not in by_node  # skipped
    stg = by_node["model.bikeshare.stg_trips"][-1]
    assert [o["name"].rsplit(".", 1)[1] for o in stg["outputs"]] == ["stg_trips"]
    assert [i["name"].rsplit(".", 1)[1] for i in stg["inputs"]] == ["raw_trips"]
    parent = stg["run"]["facets"]["parent"]["job"]
    assert (parent["namespace"], parent["name"]) == (NAMESPACE, "cloud_lineage.dbt_cloud_job")


def test_an_errored_job_fails_with_the_failed_models(cloud: FakeDbtCloud, airflow_db: Path) -> None:
    cloud.add_job(FakeJob(id=12, nodes=NODES, failing={"model.shop.stg_orders"}))
    state, tasks = _run("cloud_error", 12)
    assert state == "failed" and tasks["dbt_cloud_job"][0] == "failed"
    summary = _xcom("cloud_error")
    assert summary["failed"] == ["model.shop.stg_orders"]
    statuses = {uid: node["status"] for uid, node in summary["nodes"].items()}
    assert statuses["model.shop.orders"] == "skipped" and statuses["model.shop.customers"] == "success"


def test_a_retry_reruns_the_job_from_its_failure(cloud: FakeDbtCloud, airflow_db: Path) -> None:
    # The stg_orders failure is transient: only the job's first run has it.
    cloud.add_job(FakeJob(id=13, nodes=NODES, failing={"model.shop.stg_orders"}, failing_runs=1))
    state, tasks = _run("cloud_retry", 13, retries=1)
    assert state == "success" and tasks["dbt_cloud_job"] == ("success", 2)
    first, second = cloud.runs_of(13)
    assert not first.rerun and second.rerun
    assert ("POST", "/api/v2/accounts/1/jobs/13/rerun/") in cloud.requests
    # The rerun ran only what failed or was skipped, and the task published its results.
    ran_again = {uid for uid, _ in second.results}
    assert ran_again == {
        "model.shop.stg_orders",
        "test.shop.not_null_stg_orders_id",
        "model.shop.orders",
        "test.shop.unique_orders_id",
    }
    summary = _xcom("cloud_retry")
    assert summary["job_run_id"] == second.id and set(summary["nodes"]) == ran_again
    assert summary["failed"] == []


def test_killing_the_waiting_task_cancels_the_run(cloud: FakeDbtCloud, tmp_path: Path) -> None:
    cloud.add_job(FakeJob(id=14, nodes=NODES, seconds_running=3600))
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "cloud_kill.py").write_text(
        "# airflow dag\n" + DAG.format(dag_id="cloud_kill", job_id=14, retries=0)
    )
    with airflow_deployment(tmp_path / "airflow", dags, cloud.client_env()) as airflow:
        airflow.wait_for_dag("cloud_kill")
        airflow.airflow("dags", "unpause", "cloud_kill")
        airflow.airflow("dags", "trigger", "cloud_kill")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            rows = airflow.query("select state from task_instance where dag_id = 'cloud_kill'")
            if rows and rows[0][0] == "deferred" and cloud.runs_of(14):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"the task never deferred: {rows}")
        (run,) = cloud.runs_of(14)
        assert run.cancelled_at is None
        # Kill the waiting task the way a user does: clear it (the triggerer drops its trigger).
        airflow.airflow("tasks", "clear", "cloud_kill", "--task-regex", "dbt_cloud_job", "--yes")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and run.cancelled_at is None:
            time.sleep(0.5)
        assert run.cancelled_at is not None, "the dbt Cloud run was not cancelled"
        assert ("POST", f"/api/v2/accounts/1/runs/{run.id}/cancel/") in cloud.requests
