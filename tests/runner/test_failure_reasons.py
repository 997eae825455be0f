"""A failed run ends with each failed task's reason: dbt's message of its failed nodes (a failing
test's name and failure count), the log of the try that failed, and the command that retries it;
``--summary-json`` carries the same text as each task's ``error``."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from dbtflow.project.results import NodeResult
from dbtflow.runner.display import TaskRow
from dbtflow.runner.failures import last_log_error, node_lines, reasons
from dbtflow.runner.remote import AirflowApi, ApiCredentials, _rows, remote_reasons
from dbtflow.testing.deployment import free_port

from conftest import run_cli

_SINGULAR_TEST = "select bike_id from {{ ref('stg_bikes') }} where bike_id is not null limit 3\n"


def _break(project: Path) -> None:
    """dim_stations selects a column that does not exist; a singular test on stg_bikes returns rows."""
    model = project / "models" / "marts" / "dim_stations.sql"
    model.write_text(model.read_text().replace("s.opened_on", "s.no_such_column"))
    (project / "tests" / "assert_three_bikes_fail.sql").write_text(_SINGULAR_TEST)


def _section(stdout: str, task_id: str) -> str:
    """What the failure report prints under one task (up to the next task or the retry line)."""
    report = stdout.split("Failed tasks:", 1)[1]
    match = re.search(rf"^  {re.escape(task_id)}\n(.*?)(?=^  \S|^Retry )", report, re.M | re.S)
    assert match, report
    return match.group(1)


def _log_of(section: str) -> Path:
    (line,) = [line for line in section.splitlines() if line.strip().startswith("log: ")]
    return Path(line.strip().removeprefix("log: "))


def test_run_and_retry_end_with_each_failed_tasks_reason(
    own_bikeshare: Path, airflow_db: Path, tmp_path: Path
) -> None:
    _break(own_bikeshare)
    summary = tmp_path / "run.json"
    done = run_cli("run", str(own_bikeshare), "--progress", "plain", "--summary-json", str(summary))
    assert done.returncode == 1, done.stdout + done.stderr
    outcome = json.loads(summary.read_text())
    tasks = {t["task_id"]: t for t in outcome["tasks"]}
    assert tasks["dim_stations"]["state"] == "failed" and tasks["stg_bikes"]["state"] == "failed"

    model = _section(done.stdout, "dim_stations")
    assert "model.bikeshare.dim_stations: error:" in model and "Binder Error" in model, model
    assert "no_such_column" in model
    test = _section(done.stdout, "stg_bikes")
    assert "test.bikeshare.assert_three_bikes_fail: fail (3 failing rows)" in test, test
    assert "Got 3 results, configured to fail if != 0" in test
    for task_id, section in (("dim_stations", model), ("stg_bikes", test)):
        log = _log_of(section)
        assert log.is_file() and f"task_id={task_id}" in str(log) and log.name == "attempt=1.log"
        assert outcome["run_id"] in str(log)
    # dbt_build fails as `dbt build` does; the nodes' own tasks already show their messages.
    build = _section(done.stdout, "dbt_build")
    assert "dbt reported 2 failure(s)" in build and "Binder Error" not in build, build
    assert f"dbtflow retry {outcome['dag_id']}" in done.stdout

    assert "Binder Error" in tasks["dim_stations"]["error"]
    assert "Got 3 results" in tasks["stg_bikes"]["error"]
    assert tasks["dbt_build"]["error"].startswith("dbt reported 2 failure(s)")
    assert tasks["fct_trips"]["error"] is None and tasks["station_daily_usage"]["state"] == "upstream_failed"
    assert all(t["error"] is None for t in tasks.values() if t["state"] != "failed")

    _check_the_api_serves_the_same_reasons(outcome["dag_id"], outcome["run_id"])

    # Mend the model only: the retry rebuilds it, and still reports the failing test.
    model_file = own_bikeshare / "models" / "marts" / "dim_stations.sql"
    model_file.write_text(model_file.read_text().replace("s.no_such_column", "s.opened_on"))
    again = tmp_path / "retry.json"
    done = run_cli(
        "retry", outcome["dag_id"], "--progress", "plain", "--summary-json", str(again), "--no-head-start"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    tasks = {t["task_id"]: t for t in json.loads(again.read_text())["tasks"]}
    assert tasks["dim_stations"]["state"] == "success" and tasks["dim_stations"]["error"] is None
    assert tasks["stg_bikes"]["state"] == "failed" and tasks["stg_bikes"]["try_number"] == 2
    assert "Got 3 results" in tasks["stg_bikes"]["error"]
    assert "Binder Error" not in done.stdout
    log = _log_of(_section(done.stdout, "stg_bikes"))
    assert log.is_file() and log.name == "attempt=2.log"
    assert f"dbtflow retry {outcome['dag_id']}" in done.stdout


def _check_the_api_serves_the_same_reasons(dag_id: str, run_id: str) -> None:
    """`dbtflow retry --api-url` reads the reasons from the failed tries' logs through a real
    api-server (of this home's Airflow: its database and log folder)."""
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "dbtflow.cli", "airflow", "api-server", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{url}/auth/token", timeout=5).raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and server.poll() is None, "the api-server did not start"
                time.sleep(1)
        api = AirflowApi(url, ApiCredentials())
        rows = _rows(api.task_instances(dag_id, run_id))
        found = remote_reasons(api, dag_id, run_id, rows)
        api.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert set(found) == {"dim_stations", "stg_bikes", "dbt_build"}
    assert "Binder Error" in found["dim_stations"].error and "no_such_column" in found["dim_stations"].error
    assert "test.bikeshare.assert_three_bikes_fail: fail: Got 3 results" in found["stg_bikes"].error
    # dbt_build's log lists both failures; the nodes' own tasks show them.
    assert found["dbt_build"].error == "dbt reported 2 failure(s); their tasks show them:"
    assert (
        found["stg_bikes"].log
        == f"{url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/stg_bikes/logs/1"
    )


def test_single_pattern_reason_comes_from_the_failed_tasks_log(
    own_bikeshare: Path, airflow_db: Path, tmp_path: Path
) -> None:
    _break(own_bikeshare)
    summary = tmp_path / "single.json"
    done = run_cli(
        "run",
        str(own_bikeshare),
        "--pattern",
        "single",
        "--progress",
        "plain",
        "--summary-json",
        str(summary),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    outcome = json.loads(summary.read_text())
    (task,) = [t for t in outcome["tasks"] if t["state"] == "failed"]
    assert "Binder Error" in task["error"] and "no_such_column" in task["error"], task["error"]
    assert "assert_three_bikes_fail" in task["error"] and "Got 3 results" in task["error"]
    section = _section(done.stdout, task["task_id"])
    assert "Binder Error" in section and _log_of(section).is_file()
    assert f"dbtflow retry {outcome['dag_id']}" in done.stdout


def test_a_failure_that_is_no_node_shows_the_last_error_of_its_log() -> None:
    # The records of an Airflow 3 task log (JSON lines; the REST API serves the same as entries).
    log = [
        json.dumps({"event": "dbt results: ...", "level": "info"}),
        json.dumps({"event": "on-run-end hook failed", "level": "error"}),
        json.dumps(
            {
                "event": "Task failed with exception",
                "level": "error",
                "exception": [
                    {"exc_type": "AirflowException", "exc_value": "dbt failed: the on-run-end hook failed"}
                ],
            }
        ),
        json.dumps({"event": "Task instance in failure state", "level": "info"}),
    ]
    assert last_log_error(log) == "dbt failed: the on-run-end hook failed"
    assert last_log_error([json.loads(line) for line in log[:2]]) == "on-run-end hook failed"
    assert last_log_error(["plain text", json.dumps({"event": "ok", "level": "info"})]) is None

    killed = {"exc_type": "SystemExit", "exc_value": "-9"}
    row = TaskRow("dbt_build", "failed", 1, 1.0, ("model.p.a",))
    found = reasons([row], [], {"dbt_build": "/logs/a.log"}, lambda _: [{"error_detail": [killed]}])
    assert found["dbt_build"].error == "SystemExit: -9" and found["dbt_build"].log == "/logs/a.log"


def test_a_nodes_newest_result_decides_and_a_test_names_its_failure_count() -> None:
    old = NodeResult("test.p.t", "fail", "Got 2 results, configured to fail if != 0", failures=2)
    new = NodeResult("test.p.t", "pass", None, failures=0)
    row = TaskRow("a", "failed", 2, 1.0, ("model.p.a", "test.p.t"))
    log = [{"event": "something else", "level": "error"}]
    assert reasons([row], [old], {}, lambda _: log)["a"].error.startswith(
        "test.p.t: fail (2 failing rows): Got 2"
    )
    assert reasons([row], [old, new], {}, lambda _: log)["a"].error == "something else"
    message = (
        "Runtime Error in model a\n  Binder Error: x\n  LINE 1: select y\n                ^\n  more\n  more"
    )
    lines = node_lines(NodeResult("model.p.a", "error", message))
    assert lines[0] == "model.p.a: error: Runtime Error in model a" and len(lines) == 4
    assert lines[2:] == ["    LINE 1: select y", "                  ^"]
