"""The examples as a new user meets them: the example DAG file, and the library project run
from its own folder with `dbtflow run`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from conftest import REPO, run_cli
from dagtest import load_dag


@pytest.mark.parametrize(
    ("name", "tasks"),
    [
        ("bikeshare_per_model", {"fct_trips", "dbt_build"}),
        ("bikeshare_single", {"dbt_build"}),
        ("bikeshare_grouped", {"seeds", "staging", "marts", "snapshots"}),
        ("dbt_cloud_job", {"dbt_cloud_job"}),
    ],
)
def test_example_dag_files_load(
    bikeshare_dir: Path, warehouse: Path, tmp_path: Path, name: str, tasks: set[str]
) -> None:
    # The example DAG files find the project next to their folder, as in the repository.
    shutil.copytree(bikeshare_dir, tmp_path / "bikeshare")
    (tmp_path / "dags").mkdir()
    dag_path = tmp_path / "dags" / f"{name}.py"
    shutil.copy(REPO / "examples" / "dags" / f"{name}.py", dag_path)
    dag = load_dag(dag_path, name)
    assert dag.default_args["retries"] >= 1
    assert set(dag.task_dict) >= tasks


def test_library_project_runs_as_a_new_user_would(
    library_dir: Path, airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(library_dir)  # profiles.yml points at library.duckdb in the current folder
    monkeypatch.delenv("LIBRARY_DUCKDB", raising=False)
    summary = tmp_path / "summary.json"
    done = run_cli("run", ".", "--progress", "plain", "--summary-json", str(summary))
    assert done.returncode == 0, done.stdout + done.stderr
    tasks = {t["task_id"]: t for t in json.loads(summary.read_text())["tasks"]}
    assert {
        "stg_books",
        "library_utils__stg_books",
        "dim_members_v1",
        "dim_members_v2",
        "loans_by_month",
    } <= set(tasks)
    assert all(t["state"] == "success" for t in tasks.values())
    with duckdb.connect(str(library_dir / "library.duckdb")) as con:
        assert con.execute("select count(*) from main.fct_loans").fetchone() == (5,)
        assert con.execute("select count(*) from main_utils.stg_books").fetchone() == (1,)

    # A named selector from selectors.yml and the `at_end` tests option.
    done = run_cli(
        "run", ".", "--selector", "circulation", "--tests", "at_end", "--progress", "none",
        "--summary-json", str(summary),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    tasks = {t["task_id"]: t for t in json.loads(summary.read_text())["tasks"]}
    assert "dbt_test" in tasks and "stg_members" not in tasks and "fct_loans" in tasks
