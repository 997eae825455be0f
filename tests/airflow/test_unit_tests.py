"""dbt unit tests gate their model in every pattern, as in ``dbt build``: they run before the model,
and a failing one fails the model's task (naming the unit test, with its diff) and leaves the model
and its children unbuilt.

The project is the example with two unit tests: one on ``dim_stations`` that fails (it expects a
station name the model does not produce; ``station_daily_usage`` reads ``dim_stations``) and one
on ``stg_bikes`` that passes (``bike_utilization`` reads ``stg_bikes``).
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dbtflow import DbtProject
from dbtflow.plan.planner import make_plan
from dbtflow.project.invoke import run_dbt
from dbtflow.project.manifest import load_graph, load_manifest
from dbtflow.project.results import NodeResult
from dbtflow.project.results_table import failure_summary
from dbtflow.project.selection import exact_selection
from dbtflow.state.store import StateStore

from conftest import AIRFLOW_HOME, run_cli

FAILING = "unit_test.bikeshare.dim_stations.dim_stations_keeps_station_names"
PASSING = "unit_test.bikeshare.stg_bikes.stg_bikes_lowers_bike_models"
DIM_STATIONS = "model.bikeshare.dim_stations"
STG_BIKES = "model.bikeshare.stg_bikes"

MARTS_UNIT_TESTS = """\
unit_tests:
  - name: dim_stations_keeps_station_names
    description: "Wrong on purpose: the model keeps the name, this expects another one."
    model: dim_stations
    given:
      - input: ref('stg_stations')
        rows:
          - {station_id: 1, station_name: Harbour Gate, city: Porto, capacity: 20, opened_on: 2021-03-01}
    expect:
      rows:
        - {station_id: 1, station_name: Not The Harbour}
"""
STAGING_UNIT_TESTS = """\
unit_tests:
  - name: stg_bikes_lowers_bike_models
    model: stg_bikes
    given:
      - input: ref('raw_bikes')
        rows:
          - {bike_id: 7, bike_model: CITY, purchased_on: 2021-02-20}
    expect:
      rows:
        - {bike_id: 7, bike_model: city}
"""


@pytest.fixture
def unit_tested(own_bikeshare: Path) -> Path:
    (own_bikeshare / "models" / "marts" / "_unit_tests.yml").write_text(MARTS_UNIT_TESTS)
    (own_bikeshare / "models" / "staging" / "_unit_tests.yml").write_text(STAGING_UNIT_TESTS)
    return own_bikeshare


def _tables(database: Path) -> set[str]:
    with duckdb.connect(str(database), read_only=True) as con:
        return {row[0] for row in con.execute("select table_name from information_schema.tables").fetchall()}


def _xcom(dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    with closing(sqlite3.connect(AIRFLOW_HOME.database)) as con:
        row = con.execute(
            "select value from xcom where dag_id = ? and run_id = ? and task_id = ? and key = 'return_value'",
            (dag_id, run_id, task_id),
        ).fetchone()
    assert row is not None, f"no XCom from {task_id}"
    value = json.loads(row[0])
    return json.loads(value) if isinstance(value, str) else value


def _log(dag_id: str, run_id: str, task_id: str) -> str:
    return next(
        AIRFLOW_HOME.log_folder.glob(f"dag_id={dag_id}/run_id={run_id}/task_id={task_id}/attempt=1.log")
    ).read_text()


def _run(project: Path, tmp_path: Path, dag_id: str, *flags: str) -> tuple[str, str, dict[str, str]]:
    """``dbtflow run`` the project; the run id, its state and each task's state."""
    summary = tmp_path / f"{dag_id}.json"
    done = run_cli(
        "run", str(project), "--dag-id", dag_id, "--progress", "none", "--summary-json", str(summary), *flags
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    data = json.loads(summary.read_text())
    return data["run_id"], data["state"], {t["task_id"]: t["state"] for t in data["tasks"]}


def _assert_gated(database: Path) -> None:
    """The failing unit test's model and its child were not built; the passing one's were."""
    tables = _tables(database)
    assert "dim_stations" not in tables and "station_daily_usage" not in tables, tables
    assert {"stg_bikes", "bike_utilization", "fct_trips"} <= tables, tables


def _assert_shows_the_diff(text: str) -> None:
    """dbt's diff of actual against expected rows."""
    assert "actual differs from expected" in text and "Not The Harbour" in text, text[-3000:]


def _assert_names_the_unit_test(text: str) -> None:
    assert f"{FAILING}: fail: actual differs from expected" in text, text[-3000:]
    _assert_shows_the_diff(text)


def test_unit_tests_are_nodes_of_their_model_and_gate_it_in_every_plan(unit_tested: Path) -> None:
    project = DbtProject(unit_tested)
    graph = load_graph(project)
    assert {n.unique_id for n in graph.unit_tests()} == {FAILING, PASSING}
    assert graph.nodes[FAILING].resource_type == "unit_test"
    assert graph.nodes[FAILING].attached_node == DIM_STATIONS
    assert FAILING not in {n.unique_id for n in graph.tests()}

    for execution in ("streamed", "per_task"):
        for tests in ("with_model", "after_model", "at_end"):
            plan = make_plan(project, tests=tests, execution=execution)
            assert {FAILING, PASSING} <= plan.selected
            model_task = plan.task("dim_stations")
            # The model stays the task's main node; its unit test runs in its task, whatever the mode.
            assert model_task.main_node == DIM_STATIONS
            assert model_task.nodes[:2] == (DIM_STATIONS, FAILING), (execution, tests)
            assert plan.task("stg_bikes").nodes[:2] == (STG_BIKES, PASSING)
            assert plan.task_of_node()[FAILING] == "dim_stations"
            if execution == "streamed":
                assert plan.producer is not None
                assert {FAILING, PASSING} <= set(plan.task(plan.producer).nodes)
                assert "resource_type:unit_test" not in plan.producer_selection
            else:
                assert plan.producer is None
    none = make_plan(project, tests="none")
    assert FAILING not in none.task_of_node() and none.task("dim_stations").nodes == (DIM_STATIONS,)
    assert "resource_type:unit_test" in none.producer_selection

    # dbt selects a model's unit tests with the model (dbt ls, as `dbt build --select`).
    selected = make_plan(project, select="dim_stations")
    assert selected.selected >= {DIM_STATIONS, FAILING} and PASSING not in selected.selected
    assert selected.task("dim_stations").nodes[:2] == (DIM_STATIONS, FAILING)
    # dbt build runs a unit test only with its model: selected alone, it gets no task (dbt lists it).
    for pattern in ("per_model", "grouped"):
        alone = make_plan(
            project, pattern=pattern, select="unit_test:dim_stations_keeps_station_names stg_stations"
        )
        assert FAILING in alone.selected
        assert FAILING not in {uid for spec in alone.tasks for uid in spec.nodes}, pattern

    grouped = make_plan(project, pattern="grouped")
    assert FAILING in grouped.task("marts").nodes and PASSING in grouped.task("staging").nodes
    single = make_plan(project, pattern="single", select="+dim_stations")
    assert FAILING in single.tasks[0].nodes and PASSING not in single.tasks[0].nodes


def test_exact_selection_selects_a_unit_test_and_nothing_else(unit_tested: Path) -> None:
    project = DbtProject(unit_tested)
    graph = load_graph(project)
    for wanted in ([FAILING], [DIM_STATIONS], [DIM_STATIONS, FAILING]):
        run = run_dbt(
            project,
            ["ls", *exact_selection(graph, wanted), "--output", "json", "--output-keys", "unique_id"],
            manifest=load_manifest(project),
        )
        assert run.success, run.error
        assert sorted(json.loads(line)["unique_id"] for line in run.payload or ()) == sorted(wanted)


def test_failure_summary_keeps_a_unit_test_diff_readable() -> None:
    message = "\n\nactual differs from expected:\n\n@@,id,name\r\n→ ,1  ,Old→New\r\n\n"
    result = NodeResult(FAILING, "fail", message)
    assert result.failed
    assert failure_summary([result, NodeResult(DIM_STATIONS, "skipped")]) == (
        f"{FAILING}: fail: actual differs from expected:\n    @@,id,name\n    → ,1  ,Old→New"
    )


@pytest.mark.parametrize("execution", ["streamed", "per_task"])
def test_per_model_failing_unit_test_fails_the_models_task_and_builds_nothing_after_it(
    unit_tested: Path, airflow_db: Path, tmp_path: Path, execution: str
) -> None:
    dag_id = f"unit_tests_{execution}"
    run_id, state, tasks = _run(unit_tested, tmp_path, dag_id, "--execution", execution)
    assert state == "failed"
    assert tasks["dim_stations"] == "failed", tasks
    assert tasks["station_daily_usage"] in ("upstream_failed", "skipped"), tasks
    for built in ("stg_bikes", "bike_utilization", "fct_trips", "stg_stations"):
        assert tasks[built] == "success", (built, tasks)
    _assert_names_the_unit_test(_log(dag_id, run_id, "dim_stations"))
    _assert_gated(tmp_path / "own.duckdb")
    # The task reported the failed unit test; it did not go on to build its skipped model alone
    # (which would have run the unit test a second time).
    runs = [s.result for s in StateStore().results_of_run(dag_id, run_id) if s.result.unique_id == FAILING]
    assert [r.status for r in runs] == ["fail"], runs


def test_grouped_failing_unit_test_fails_its_group(
    unit_tested: Path, airflow_db: Path, tmp_path: Path
) -> None:
    dag_id = "unit_tests_grouped"
    run_id, state, tasks = _run(unit_tested, tmp_path, dag_id, "--pattern", "grouped")
    assert state == "failed"
    assert tasks["marts"] == "failed" and tasks["staging"] == "success", tasks
    marts = _xcom(dag_id, run_id, "marts")
    assert marts["failed"] == [FAILING]
    assert marts["nodes"][DIM_STATIONS]["status"] == "skipped"
    assert marts["nodes"]["model.bikeshare.station_daily_usage"]["status"] == "skipped"
    _assert_shows_the_diff(marts["nodes"][FAILING]["message"])
    assert _xcom(dag_id, run_id, "staging")["nodes"][PASSING]["status"] == "pass"
    _assert_names_the_unit_test(_log(dag_id, run_id, "marts"))
    _assert_gated(tmp_path / "own.duckdb")


def test_single_failing_unit_test_fails_the_task(unit_tested: Path, airflow_db: Path, tmp_path: Path) -> None:
    dag_id = "unit_tests_single"
    run_id, state, tasks = _run(unit_tested, tmp_path, dag_id, "--pattern", "single")
    assert state == "failed" and tasks == {"dbt_build": "failed"}
    summary = _xcom(dag_id, run_id, "dbt_build")
    assert summary["failed"] == [FAILING]
    assert summary["nodes"][DIM_STATIONS]["status"] == "skipped"
    assert summary["nodes"][PASSING]["status"] == "pass"
    _assert_names_the_unit_test(_log(dag_id, run_id, "dbt_build"))
    _assert_gated(tmp_path / "own.duckdb")
