"""The command line: `dbtflow run`, `dbtflow render`, and one clear line for bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from lineage_receiver import NAMESPACE, lineage_receiver

from conftest import EXAMPLE, copy_project, run_cli


def test_run_executes_every_task_and_writes_the_summary(
    bikeshare_dir: Path, warehouse: Path, airflow_db: Path, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.json"
    done = run_cli("run", str(bikeshare_dir), "--progress", "plain", "--summary-json", str(summary))
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(summary.read_text())
    assert set(outcome) == {"dag_id", "run_id", "state", "tasks"}
    assert outcome["state"] == "success" and outcome["dag_id"] == "dbtflow_bikeshare"
    tasks = {t["task_id"]: t for t in outcome["tasks"]}
    assert set(tasks["fct_trips"]) == {"task_id", "state", "try_number", "duration_s", "nodes", "error"}
    assert tasks["fct_trips"]["nodes"][0] == "model.bikeshare.fct_trips"
    assert all(t["state"] == "success" and t["try_number"] == 1 for t in tasks.values())
    # The last line: the run's tasks and time, then the command's whole time and where it went.
    last = done.stdout.strip().splitlines()[-1]
    line = re.fullmatch(
        r"DAG run success: (\d+) tasks in ([\d.]+) s \(([\d.]+) s in all: parse ([\d.]+) s,"
        r" Airflow start ([\d.]+) s\); (\d+) success",
        last,
    )
    assert line is not None, last
    assert int(line[1]) == int(line[6]) == len(tasks)
    run_s, whole_s, parse_s, airflow_s = (float(line[i]) for i in (2, 3, 4, 5))
    assert whole_s >= run_s + parse_s + airflow_s - 0.3, last  # (each rounded to 0.1 s)
    assert warehouse.exists()


def test_run_exit_code_is_1_when_a_task_fails(own_bikeshare: Path, airflow_db: Path, tmp_path: Path) -> None:
    (own_bikeshare / "models" / "marts" / "dim_stations.sql").write_text("select * from nowhere\n")
    summary = tmp_path / "summary.json"
    with lineage_receiver() as receiver:
        done = run_cli(
            "run",
            str(own_bikeshare),
            "--progress",
            "none",
            "--summary-json",
            str(summary),
            env=receiver.env(),
        )
    assert done.returncode == 1, done.stdout + done.stderr
    outcome = json.loads(summary.read_text())
    states = {t["task_id"]: t["state"] for t in outcome["tasks"]}
    assert states["dim_stations"] == "failed"
    # dbt skips the dependants of a failed model; their streamed tasks end upstream_failed, as
    # Airflow shows them, and dbt_build fails as `dbt build` exits 1.
    assert states["station_daily_usage"] == "upstream_failed"
    assert states["dbt_build"] == "failed"
    assert states["fct_trips"] == "success"
    # OpenLineage with the provider configured: the forked dbt (the head start) sends each node's
    # events, with the producer task's run as their parent, as the task itself would.
    by_node = receiver.node_events(outcome["dag_id"])
    assert sorted(e["eventType"] for e in by_node["model.bikeshare.fct_trips"]) == ["COMPLETE", "START"]
    assert sorted(e["eventType"] for e in by_node["model.bikeshare.dim_stations"]) == ["FAIL", "START"]
    assert "model.bikeshare.station_daily_usage" not in by_node  # skipped: it never ran
    parents = {json.dumps(e["run"]["facets"]["parent"], sort_keys=True) for v in by_node.values() for e in v}
    assert len(parents) == 1, parents
    parent = json.loads(parents.pop())
    assert (parent["job"]["namespace"], parent["job"]["name"]) == (
        NAMESPACE,
        f"{outcome['dag_id']}.dbt_build",
    )
    assert (parent["root"]["job"]["namespace"], parent["root"]["job"]["name"]) == (
        NAMESPACE,
        outcome["dag_id"],
    )
    assert parent["run"]["runId"] == _provider_run_id(outcome["dag_id"], outcome["run_id"], "dbt_build")


def test_render_prints_the_task_graph_and_runs_nothing(bikeshare_dir: Path, warehouse: Path) -> None:
    done = run_cli("render", str(bikeshare_dir), "--format", "json", "--select", "+station_daily_usage")
    assert done.returncode == 0, done.stderr
    graph = json.loads(done.stdout)
    tasks = {t["task_id"]: t for t in graph["tasks"]}
    assert set(tasks["station_daily_usage"]) == {"task_id", "nodes", "upstream"}
    assert sorted(tasks["station_daily_usage"]["upstream"]) == ["dim_stations", "fct_trips"]
    assert tasks["fct_trips"]["nodes"][0] == "model.bikeshare.fct_trips"
    assert "bike_utilization" not in tasks
    assert not warehouse.exists()


def _one_clear_line(done) -> str:  # type: ignore[no-untyped-def]
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert lines[0].startswith("dbtflow: error: ") and " Fix: " in lines[0]
    return lines[0]


def test_missing_project_folder(tmp_path: Path) -> None:
    line = _one_clear_line(run_cli("render", str(tmp_path / "nowhere")))
    assert "does not exist" in line


def test_folder_without_dbt_project(tmp_path: Path) -> None:
    line = _one_clear_line(run_cli("run", str(tmp_path)))
    assert "dbt_project.yml is missing" in line


def test_invalid_dbt_project_yml(tmp_path: Path) -> None:
    project = copy_project(EXAMPLE, tmp_path / "p")
    (project / "dbt_project.yml").write_text("name: [unclosed\n")
    line = _one_clear_line(run_cli("render", str(project)))
    assert "not valid YAML" in line


def test_broken_manifest(bikeshare_dir: Path, warehouse: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text('{"metadata": ')
    line = _one_clear_line(run_cli("render", str(bikeshare_dir), "--manifest", str(manifest)))
    assert "not valid JSON" in line


def test_unknown_selector_method(bikeshare_dir: Path, warehouse: Path) -> None:
    line = _one_clear_line(run_cli("render", str(bikeshare_dir), "--select", "colour:red"))
    assert "'colour' is not a valid method name" in line


def test_missing_profile(tmp_path: Path) -> None:
    project = copy_project(EXAMPLE, tmp_path / "p")
    (project / "profiles.yml").write_text(yaml.safe_dump({"other": {"target": "dev", "outputs": {}}}))
    line = _one_clear_line(run_cli("render", str(project)))
    assert "Profile 'bikeshare'" in line and "other" in line


def test_missing_target(bikeshare_dir: Path, warehouse: Path) -> None:
    line = _one_clear_line(run_cli("render", str(bikeshare_dir), "--target", "prod"))
    assert "Target 'prod'" in line and "dev" in line


@pytest.mark.parametrize(
    "sql",
    ["select {{ ref('no_such_model') }}", "select {{ unclosed"],
    ids=["missing-ref", "jinja-syntax"],
)
def test_dbt_compile_error(tmp_path: Path, sql: str) -> None:
    project = copy_project(EXAMPLE, tmp_path / "p")
    (project / "models" / "marts" / "broken.sql").write_text(sql + "\n")
    line = _one_clear_line(run_cli("render", str(project)))
    assert "dbt could not parse the project" in line and "broken" in line


def _provider_run_id(dag_id: str, run_id: str, task_id: str) -> str:
    """The OpenLineage run id Airflow's provider gives try 1 of a task of the embedded Airflow's run."""
    from airflow.models import DagRun
    from airflow.providers.openlineage import conf
    from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter
    from airflow.utils.session import create_session

    with create_session() as session:
        dag_run = session.query(DagRun).filter_by(dag_id=dag_id, run_id=run_id).one()
        logical_date = dag_run.logical_date or dag_run.run_after
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__OPENLINEAGE__NAMESPACE", NAMESPACE)  # part of the id
        assert conf.namespace() == NAMESPACE  # (the provider caches nothing under pytest)
        return str(
            OpenLineageAdapter.build_task_instance_run_id(
                dag_id=dag_id, task_id=task_id, try_number=1, logical_date=logical_date, map_index=-1
            )
        )
