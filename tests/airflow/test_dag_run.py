"""A per_model DAG run with real Airflow (``dag.test()``), real dbt and a real DuckDB file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from dbtflow.cli import main

from conftest import run_dbt_cli
from dagtest import dag_file, load_dag, run_dag

TABLES = [
    "main.raw_trips",
    "main.stg_trips",
    "main.fct_trips",
    "main.dim_stations",
    "main.station_daily_usage",
    "main.bike_utilization",
    "main.stations_snapshot",
]


def _assert_docs_of_the_built_project(folder: Path) -> None:
    assert "<html" in (folder / "index.html").read_text()[:200].lower()
    assert "model.bikeshare.fct_trips" in json.loads((folder / "manifest.json").read_text())["nodes"]
    catalog = json.loads((folder / "catalog.json").read_text())["nodes"]
    assert "duration_minutes" in catalog["model.bikeshare.fct_trips"]["columns"]  # read from the warehouse


def _counts(database: Path) -> dict[str, int]:
    with duckdb.connect(str(database), read_only=True) as con:
        return {t: con.execute(f"select count(*) from {t}").fetchone()[0] for t in TABLES}  # type: ignore[index]


@pytest.mark.parametrize("execution", ["streamed", "per_task"])
def test_dag_run_builds_what_dbt_build_builds(
    bikeshare_dir: Path, warehouse: Path, airflow_db: Path, tmp_path: Path, execution: str
) -> None:
    # Streamed, the run ends with refreshing the dbt docs, here into a file:// ObjectStoragePath.
    docs = f", docs=ObjectStoragePath('file://{tmp_path}/docs')" if execution == "streamed" else ""
    source = f"""
        from airflow.sdk import ObjectStoragePath
        from dbtflow import DbtProject, dbt_dag
        project = DbtProject({str(bikeshare_dir)!r})
        dag = dbt_dag(project, dag_id="bike_{execution}", execution={execution!r}{docs})
    """
    with dag_file(f"bike_{execution}", source) as path:
        state, tasks = run_dag(path, f"bike_{execution}")
    assert state == "success", tasks
    assert all(s == "success" for s, _ in tasks.values()), tasks
    if docs:
        assert tasks["dbt_docs"][0] == "success"
        _assert_docs_of_the_built_project(tmp_path / "docs")
        # `dbtflow docs --target-path`: the same, from the command line; a storage it cannot
        # write to is one line before dbt runs.
        cli = ["docs", str(bikeshare_dir), "--target-path"]
        assert main([*cli, f"file://{tmp_path}/cli_docs"]) == 0
        _assert_docs_of_the_built_project(tmp_path / "cli_docs")
        assert main([*cli, "nosuchfs://bucket/docs"]) == 2
    expected_tasks = {
        "raw_bikes", "raw_stations", "raw_trips", "stg_bikes", "stg_stations", "stg_trips",
        "dim_stations", "fct_trips", "station_daily_usage", "bike_utilization", "stations_snapshot",
    }  # fmt: skip
    assert expected_tasks <= set(tasks)

    reference = tmp_path / "reference.duckdb"
    done = run_dbt_cli(bikeshare_dir, "build", env={"BIKESHARE_DUCKDB": str(reference)})
    assert done.returncode == 0, done.stdout
    ours = _counts(warehouse)
    assert ours == _counts(reference)
    assert ours["main.fct_trips"] == 120


def test_broken_model_fails_its_task_and_only_its_dependants(
    own_bikeshare: Path, airflow_db: Path, tmp_path: Path
) -> None:
    (own_bikeshare / "models" / "staging" / "stg_bikes.sql").write_text(
        "select no_such_column from {{ ref('raw_bikes') }}\n"
    )
    source = f"""
        from dbtflow import DbtProject, dbt_dag
        dag = dbt_dag(DbtProject({str(own_bikeshare)!r}), dag_id="bike_broken", docs=True)
    """
    with dag_file("bike_broken", source) as path:
        state, tasks = run_dag(path, "bike_broken")
    assert state == "failed"
    assert tasks["stg_bikes"][0] == "failed"
    assert tasks["bike_utilization"][0] == "skipped"
    assert tasks["dbt_build"][0] == "failed"
    assert tasks["dbt_docs"][0] == "upstream_failed"  # docs=True refreshes the docs after a good run only
    for independent in ("stg_trips", "fct_trips", "dim_stations", "station_daily_usage", "stations_snapshot"):
        assert tasks[independent][0] == "success", independent


def test_warnings_do_not_fail_a_task(own_bikeshare: Path, airflow_db: Path) -> None:
    (own_bikeshare / "tests" / "warn_on_long_trips.sql").write_text(
        "{{ config(severity='warn') }}\nselect * from {{ ref('fct_trips') }} where duration_minutes > 10\n"
    )
    source = f"""
        from dbtflow import DbtProject, dbt_dag
        dag = dbt_dag(DbtProject({str(own_bikeshare)!r}), dag_id="bike_warn")
    """
    with dag_file("bike_warn", source) as path:
        state, tasks = run_dag(path, "bike_warn")
        dag = load_dag(path, "bike_warn")
    assert "test.bikeshare.warn_on_long_trips" in dag.task_dict["fct_trips"].unique_ids
    assert state == "success", tasks
    assert tasks["fct_trips"][0] == "success"


def test_each_task_shows_its_unique_id(bikeshare_dir: Path, warehouse: Path) -> None:
    source = f"""
        from dbtflow import DbtProject, dbt_dag
        dag = dbt_dag(DbtProject({str(bikeshare_dir)!r}), dag_id="bike_ids")
    """
    with dag_file("bike_ids", source) as path:
        dag = load_dag(path, "bike_ids")
    task = dag.task_dict["fct_trips"]
    assert task.unique_ids[0] == "model.bikeshare.fct_trips"
    # Its documentation links to its model's page in the dbt docs and its row in the report.
    assert "(/dbtflow/docs/bikeshare/#!/model/model.bikeshare.fct_trips)" in task.doc_md
    assert "(/dbtflow/reports/bike_ids/#model.bikeshare.fct_trips)" in task.doc_md
    assert "(/dbtflow/docs/bikeshare/#!/seed/seed.bikeshare.raw_trips)" in dag.task_dict["raw_trips"].doc_md
    assert "unique_ids" in task.template_fields
    from airflow.serialization.serialized_objects import DagSerialization

    serialized = DagSerialization.to_dict(dag)
    fct = next(t for t in serialized["dag"]["tasks"] if t["__var"]["task_id"] == "fct_trips")["__var"]
    assert fct["unique_ids"][0] == "model.bikeshare.fct_trips"
    assert fct["doc_md"] == task.doc_md


def test_second_load_of_a_dag_file_does_not_touch_dbt(
    bikeshare_dir: Path, warehouse: Path, tmp_path: Path
) -> None:
    dag_path = tmp_path / "dags" / "bike.py"
    dag_path.parent.mkdir()
    dag_path.write_text(
        "# airflow dag\nfrom dbtflow import DbtProject, dbt_dag\n"
        f"dag = dbt_dag(DbtProject({str(bikeshare_dir)!r}), dag_id='bike_load', select='+fct_trips')\n"
    )
    probe = (
        "import sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(dag_path)!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "print(len(bag.dags['bike_load'].tasks), 'dbt' in sys.modules, 'dbt.cli.main' in sys.modules)\n"
    )
    first = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    second = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == [first.stdout.split()[0], "False", "False"]

    # A change to a model file invalidates the cache: the next load parses with dbt again.
    model = bikeshare_dir / "models" / "marts" / "fct_trips.sql"
    original = model.read_text()
    try:
        model.write_text(original + "\n-- edited\n")
        third = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
        assert third.returncode == 0, third.stderr
        assert third.stdout.split()[1] == "True"
    finally:
        model.write_text(original)
