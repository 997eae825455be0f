"""Scenarios and helpers of tests/deployment/test_scheduler.py, which runs them all on one real
scheduler deployment (one start-up): asset events and the runs they start through the REST API,
`dbtflow retry --api-url`, Airflow's backfill, and a DAG run's Airflow Deadline Alert (checked by
the scheduler: it shares the deployment instead of starting one of its own)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from dbtflow.testing.deployment import Deployment

from conftest import run_cli
from webhook import Webhook

#: A DAG whose run has a 3 s Airflow Deadline Alert and whose slow model has a 1 s expected
#: duration, both reported to a webhook (tests/monitoring/test_deadlines.py has the model deadline
#: under dag.test()).
DEADLINE_DAG = """# airflow dag
from datetime import timedelta
from dbtflow import DbtProject, dbt_dag
from dbtflow.airflow.deadlines import run_deadline
from dbtflow.airflow.notify import WebhookNotifier
from dbtflow.monitoring.deadlines import ModelDeadlines

dag = dbt_dag(
    DbtProject({project!r}, vars={{"slow_n": 25000}}),
    dag_id="deadlines",
    pattern="single",
    model_deadlines=ModelDeadlines(expected={{"slow_model": 1.0}}, learn=False,
                                   notifiers=(WebhookNotifier({url!r}),)),
    deadline=run_deadline(timedelta(seconds=3), {url!r}),
)
"""


def own_warehouse(project: Path, database: Path) -> None:
    """The project writes a DuckDB file of its own (its runs may overlap other projects')."""
    path, setting = project / "profiles.yml", "{{ env_var('BIKESHARE_DUCKDB', 'bikeshare.duckdb') }}"
    path.write_text(path.read_text().replace(setting, str(database)))


def deadline_alert(airflow: Deployment, hook: Webhook) -> None:
    """A DAG run past its deadline alert is reported while it runs (and the late model too)."""
    airflow.wait_for_dag("deadlines", timeout=600)
    run_id, state, _ = airflow.trigger_and_wait("deadlines", timeout=300)
    (end_date,) = airflow.query(
        "select end_date from dag_run where dag_id = 'deadlines' and run_id = ?", run_id
    )[0]
    ended = datetime.fromisoformat(str(end_date)).replace(tzinfo=UTC).timestamp()
    assert state == "success"
    missed = [m for m in hook.messages if m["state"] == "deadline_missed"]
    assert len(missed) == 1 and missed[0]["dag_id"] == "deadlines"
    arrived = hook.arrivals[hook.messages.index(missed[0])]
    assert arrived < ended
    late = [m for m in hook.messages if m["state"] == "late"]
    assert [m["unique_id"] for m in late] == ["model.bikeshare.slow_model"]


def backfill(airflow: Deployment, warehouse: Path) -> None:
    """Airflow's backfill of three days: three runs, each building its day of the microbatch model."""
    airflow.unpause("sched_backfill")
    days = ["2024-05-01", "2024-05-02", "2024-05-03"]
    body = {"dag_id": "sched_backfill", "from_date": f"{days[0]}T00:00:00Z", "max_active_runs": 1}
    body["to_date"] = f"{days[-1]}T00:00:00Z"

    def made() -> Any:
        found = airflow._json("GET", "/api/v2/backfills", params={"dag_id": "sched_backfill"})
        return found["backfills"] or None

    airflow.write("POST", "/api/v2/backfills", json=body, made=made)
    backfilled = airflow._json("GET", "/api/v2/dags/sched_backfill/dagRuns")["dag_runs"]
    assert sorted((r["run_type"], r["data_interval_start"][:10]) for r in backfilled) == [
        ("backfill", day) for day in days
    ], backfilled
    for run in backfilled:
        assert airflow.wait_for_run("sched_backfill", run["dag_run_id"]) == "success", run
    with duckdb.connect(str(warehouse), read_only=True) as con:
        per_day = con.execute(
            "select strftime(started_at, '%Y-%m-%d'), count(*) from trips_microbatch group by 1 order by 1"
        ).fetchall()
    assert per_day == [("2024-05-01", 28), ("2024-05-02", 40), ("2024-05-03", 38)], per_day


def events_json(airflow: Deployment, path: str, timeout: float = 300, **params: Any) -> list[dict[str, Any]]:
    """The asset events at ``path``. Airflow 3.3.2's api-server answers 500 while an event's
    created DAG run has not started (its start_date is None, which the response model refuses):
    ask again until the runs have started."""
    deadline = time.monotonic() + timeout
    while True:
        response = airflow.api.get(path, params={"limit": 100, **params})
        if response.status_code != 500 or time.monotonic() > deadline:
            assert response.is_success, f"GET {path}: {response.status_code} {response.text}"
            return list(response.json()["asset_events"])
        time.sleep(1)


def asset_events(airflow: Deployment, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    return events_json(airflow, "/api/v2/assets/events", source_dag_id=dag_id, source_run_id=run_id)


def run_started_by(
    airflow: Deployment, dag_id: str, source_dag_id: str, source_run_id: str, timeout: float = 300
) -> dict[str, Any]:
    """The run of ``dag_id`` that an asset event of the source run started (waits for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in airflow._json("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]:
            path = f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}/upstreamAssetEvents"
            sources = {(e["source_dag_id"], e["source_run_id"]) for e in events_json(airflow, path)}
            if (source_dag_id, source_run_id) in sources:
                return dict(run)
        time.sleep(2)
    raise AssertionError(f"no run of {dag_id} was started by {source_dag_id} {source_run_id}")


def retry_via_api(api_url: str, dag_id: str, tmp_path: Path) -> dict:  # type: ignore[type-arg]
    summary = tmp_path / f"{dag_id}-retry.json"
    done = run_cli(
        "retry", dag_id, "--api-url", api_url, "--progress", "plain", "--summary-json", str(summary),
        "--timeout", "300",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(summary.read_text()))
