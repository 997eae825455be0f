"""Deadlines: a model that outlives its expected duration is reported while it still runs. The
DAG run's Airflow Deadline Alert is checked by a scheduler: tests/deployment/test_scheduler.py
runs it on its deployment (scheduler_scenarios.deadline_alert)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dbtflow.monitoring.deadlines import DurationWatch, learned_expectations
from dbtflow.monitoring.history import History, NodeRun
from dbtflow.project.events import DbtEvent

from conftest import EXAMPLE, SLOW_SQL, copy_project
from dagtest import dag_file, run_dag
from webhook import Webhook


def _event(name: str, uid: str) -> DbtEvent:
    return DbtEvent(ts="2026-01-01T00:00:00Z", level="info", name=name, code="Q", msg="m", unique_id=uid)


def test_the_watch_reports_each_late_node_once_while_it_runs() -> None:
    late: list[tuple[str, float]] = []
    watch = DurationWatch(
        {"model.p.slow": 0.3, "fast": 5.0}, lambda uid, s, limit: late.append((uid, s)), poll_s=0.05
    )
    watch(_event("LogStartLine", "model.p.slow"))
    watch(_event("LogStartLine", "model.p.fast"))
    time.sleep(0.8)
    watch(_event("NodeFinished", "model.p.slow"))
    watch.close()
    assert [uid for uid, _ in late] == ["model.p.slow"]
    assert late[0][1] > 0.3


def test_expected_durations_are_learned_from_history() -> None:
    runs = [
        NodeRun("d", f"r{i}", "t", 1, "model.p.m", "success", float(i), s) for i, s in enumerate([10, 12, 11])
    ]
    runs.append(NodeRun("d", "x", "t", 1, "model.p.m", "error", 9.0, 500.0))
    assert learned_expectations(runs, factor=2.0, floor_s=1.0, last=20) == {"model.p.m": 24.0}
    assert learned_expectations(runs, factor=2.0, floor_s=60.0, last=20) == {"model.p.m": 60.0}


DAG = """
from datetime import timedelta
from dbtflow import DbtProject, dbt_dag
from dbtflow.airflow.deadlines import run_deadline
from dbtflow.airflow.notify import WebhookNotifier
from dbtflow.monitoring.deadlines import ModelDeadlines

dag = dbt_dag(
    DbtProject({project!r}, vars={{"slow_n": 25000}}),
    dag_id="deadlines",
    pattern={pattern!r},
    model_deadlines=ModelDeadlines(expected={{"slow_model": 1.0}}, learn=False,
                                   notifiers=(WebhookNotifier({url!r}),)),
    {extra}
)
"""


@pytest.mark.parametrize("pattern", ["single", "per_model"])
def test_a_slow_model_is_reported_while_it_still_runs(
    tmp_path: Path, airflow_db: Path, monkeypatch: pytest.MonkeyPatch, pattern: str
) -> None:
    project = copy_project(EXAMPLE, tmp_path / "bikeshare")
    monkeypatch.setenv("BIKESHARE_DUCKDB", str(tmp_path / "w.duckdb"))
    (project / "models" / "marts" / "slow_model.sql").write_text(SLOW_SQL)
    hook = Webhook()
    try:
        source = DAG.format(project=str(project), url=hook.url, pattern=pattern, extra="")
        with dag_file("deadlines", source) as path:
            state, _ = run_dag(path, "deadlines")
    finally:
        hook.server.shutdown()
    assert state == "success"
    (message,) = hook.messages
    assert message["state"] == "late" and message["unique_id"] == "model.bikeshare.slow_model"
    assert message["expected_s"] == 1.0 and message["running_s"] > 1.0
    # It arrived while dbt was still running the model (the history has when the model ended).
    (slow,) = [r for r in History().runs(dag_id="deadlines") if r.unique_id.endswith("slow_model")][-1:]
    assert hook.arrivals[0] < slow.started_at + slow.execution_s
