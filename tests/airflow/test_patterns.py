"""The single and grouped patterns: one dbt invocation per task, and retries that run only what
failed (``dbt retry``), asserted from dbt's own results as the tasks publish them in XCom."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from dbtflow import DbtflowError, DbtProject, Node
from dbtflow.plan.grouped import plan_grouped
from dbtflow.plan.model import TaskKind
from dbtflow.plan.planner import make_plan
from dbtflow.project.manifest import load_graph

from conftest import (
    AIRFLOW_HOME,
    FAIL_ONCE_SQL,
    STG_TRIPS_AND_DOWNSTREAM,
    built_since,
    history_of_run,
    run_cli,
    table_counts,
)

BROKEN_STG_TRIPS = "select no_such_column from {{ ref('raw_trips') }}\n"


def _xcom(dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    with closing(sqlite3.connect(AIRFLOW_HOME.database)) as con:
        row = con.execute(
            "select value from xcom where dag_id = ? and run_id = ? and task_id = ? and key = 'return_value'",
            (dag_id, run_id, task_id),
        ).fetchone()
    assert row is not None, f"no XCom from {task_id}"
    value = json.loads(row[0])
    return json.loads(value) if isinstance(value, str) else value


def _summary(path: Path) -> tuple[str, dict[str, tuple[str, int]]]:
    data = json.loads(path.read_text())
    return data["run_id"], {t["task_id"]: (t["state"], t["try_number"]) for t in data["tasks"]}


def _not_succeeded(summary: dict[str, Any]) -> set[str]:
    return {uid for uid, node in summary["nodes"].items() if node["status"] in ("error", "fail", "skipped")}


def test_single_task_airflow_retry_runs_dbt_retry_for_the_failed_nodes_only(
    own_bikeshare: Path, airflow_db: Path, tmp_path: Path
) -> None:
    (own_bikeshare / "models" / "marts" / "flaky_report.sql").write_text(FAIL_ONCE_SQL)
    (own_bikeshare / "models" / "marts" / "after_flaky.sql").write_text(
        "select ok from {{ ref('flaky_report') }}\n"
    )
    summary = tmp_path / "run.json"
    # The tries keep their run_results.json in object storage here (the state database otherwise).
    kept = tmp_path / "artifacts"
    done = run_cli(
        "run", str(own_bikeshare), "--pattern", "single", "--progress", "none", "--summary-json",
        str(summary), "--retries", "1", "--retry-delay", "0",
        env={"FLAG_DIR": str(tmp_path), "DBTFLOW_ARTIFACTS_URL": kept.as_uri()},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    run_id, tasks = _summary(summary)
    documents = sorted(p.relative_to(kept).parts[-2] for p in kept.rglob("run_results.json"))
    assert documents == ["try_1", "try_2"], documents
    assert tasks == {"dbt_build": ("success", 2)}
    xcom = _xcom("dbtflow_bikeshare_single", run_id, "dbt_build")
    # The second try ran exactly what failed or was skipped in the first: the flaky model and
    # the model after it; nothing else was built twice.
    assert xcom["ran"] == ["model.bikeshare.after_flaky", "model.bikeshare.flaky_report"]
    assert xcom["failed"] == []
    assert xcom["nodes"]["model.bikeshare.flaky_report"]["status"] == "success"
    assert xcom["nodes"]["model.bikeshare.fct_trips"]["status"] == "success"
    # Every node of the project with its newest result: the example's 29 (its ephemeral model has
    # no result of its own) and the two added here.
    assert len(xcom["nodes"]) == 31
    assert len(list(tmp_path.glob("attempt_*.csv"))) == 2, "the flaky model ran once per try"
    log = next(
        AIRFLOW_HOME.log_folder.glob(
            f"dag_id=dbtflow_bikeshare_single/run_id={run_id}/task_id=dbt_build/attempt=2.log"
        )
    ).read_text()
    assert "dbt retry ran 2 node(s)" in log and "model.bikeshare.flaky_report" in log


def test_single_task_fails_with_the_failed_nodes_and_a_clear_retries_them(
    own_bikeshare: Path, airflow_db: Path, tmp_path: Path
) -> None:
    model = own_bikeshare / "models" / "staging" / "stg_trips.sql"
    good = model.read_text()
    model.write_text(BROKEN_STG_TRIPS)
    summary = tmp_path / "run.json"
    args = ["--pattern", "single", "--progress", "none", "--summary-json", str(summary)]
    first = run_cli("run", str(own_bikeshare), *args)
    assert first.returncode == 1
    run_id, tasks = _summary(summary)
    assert tasks == {"dbt_build": ("failed", 1)}
    failed_try = _xcom("dbtflow_bikeshare_single", run_id, "dbt_build")
    assert failed_try["failed"] == ["model.bikeshare.stg_trips"]
    to_retry = _not_succeeded(failed_try)
    assert "model.bikeshare.fct_trips" in to_retry and "model.bikeshare.dim_stations" not in to_retry

    model.write_text(good)
    history_before = history_of_run("dbtflow_bikeshare_single", run_id)
    second = run_cli(
        "retry", "dbtflow_bikeshare_single", "--progress", "none", "--summary-json", str(summary)
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert _summary(summary)[1] == {"dbt_build": ("success", 2)}
    retried = _xcom("dbtflow_bikeshare_single", run_id, "dbt_build")
    assert set(retried["ran"]) == to_retry
    again = built_since(history_before, history_of_run("dbtflow_bikeshare_single", run_id))
    assert set(again) == to_retry
    assert {u for u in again if u.startswith("model.")} == STG_TRIPS_AND_DOWNSTREAM
    assert table_counts(tmp_path / "own.duckdb", ["fct_trips"])["fct_trips"] > 0


def test_grouped_tasks_follow_dbt_edges_and_a_retry_reruns_only_the_groups_failures(
    own_bikeshare: Path, airflow_db: Path, tmp_path: Path
) -> None:
    model = own_bikeshare / "models" / "staging" / "stg_trips.sql"
    good = model.read_text()
    model.write_text(BROKEN_STG_TRIPS)
    summary = tmp_path / "run.json"
    args = ["--pattern", "grouped", "--progress", "none", "--summary-json", str(summary)]
    first = run_cli("run", str(own_bikeshare), *args)
    assert first.returncode == 1
    run_id, tasks = _summary(summary)
    assert tasks == {
        "seeds": ("success", 1),
        "snapshots": ("success", 1),
        "staging": ("failed", 1),
        "marts": ("upstream_failed", 0),
    }
    staging_first = _xcom("dbtflow_bikeshare_grouped", run_id, "staging")
    assert staging_first["failed"] == ["model.bikeshare.stg_trips"]
    assert "model.bikeshare.stg_stations" in staging_first["ran"]

    model.write_text(good)
    history_before = history_of_run("dbtflow_bikeshare_grouped", run_id)
    succeeded_first = {r.unique_id for r in history_before if r.status in ("success", "pass")}
    second = run_cli(
        "retry", "dbtflow_bikeshare_grouped", "--progress", "none", "--summary-json", str(summary)
    )
    assert second.returncode == 0, second.stdout + second.stderr
    _, tasks = _summary(summary)
    assert tasks["seeds"] == ("success", 1) and tasks["staging"] == ("success", 2)
    assert tasks["marts"][0] == "success"
    staging = _xcom("dbtflow_bikeshare_grouped", run_id, "staging")
    # Only the failed model and its skipped tests ran again; the group's other models did not.
    assert set(staging["ran"]) == _not_succeeded(staging_first)
    assert {u for u in staging["ran"] if u.startswith("model.")} == {"model.bikeshare.stg_trips"}
    marts = _xcom("dbtflow_bikeshare_grouped", run_id, "marts")
    assert "model.bikeshare.fct_trips" in marts["ran"] and marts["failed"] == []
    # The history agrees: nothing that succeeded in the first try ran again (the marts group,
    # upstream-failed then, ran for the first time).
    again = built_since(history_before, history_of_run("dbtflow_bikeshare_grouped", run_id))
    assert "model.bikeshare.stg_trips" in again and not (set(again) & succeeded_first), again


def test_grouped_plan_matches_dbt_edges(bikeshare_dir: Path, warehouse: Path) -> None:
    project = DbtProject(bikeshare_dir)
    graph = load_graph(project)
    plan = make_plan(project, pattern="grouped", group_by="folder")
    group_of = {uid: spec.task_id for spec in plan.tasks for uid in spec.nodes}
    upstream = {spec.task_id: set(spec.upstream) for spec in plan.tasks}
    for spec in plan.tasks:
        for uid in spec.nodes:
            for parent in graph.build_parents(uid):
                if parent in group_of and group_of[parent] != spec.task_id:
                    assert group_of[parent] in upstream[spec.task_id], (uid, parent)
    # Every runnable node is in exactly one task; a test sits with (or after) all its parents.
    every = [uid for spec in plan.tasks for uid in spec.nodes]
    runnable = {uid for uid in plan.selected if not graph.nodes[uid].is_ephemeral}
    assert len(every) == len(set(every)) and set(every) == runnable
    relationships = next(u for u in every if ".relationships_" in u)
    assert group_of[relationships] == "marts"
    assert all(spec.kind is TaskKind.INVOCATION for spec in plan.tasks)


def test_tag_and_function_groupings(bikeshare_dir: Path, warehouse: Path) -> None:
    project = DbtProject(bikeshare_dir)
    by_tag = make_plan(project, pattern="grouped", group_by="tag")
    assert {spec.task_id for spec in by_tag.tasks} >= {"staging", "marts"}

    def by_layer(node: Node) -> str:
        return "marts" if "/marts/" in node.original_file_path else f"{node.resource_type}s_and_staging"

    plan = make_plan(project, pattern="grouped", group_by=by_layer)
    assert {spec.task_id for spec in plan.tasks} == {
        "seeds_and_staging",
        "models_and_staging",
        "snapshots_and_staging",
        "marts",
    }
    assert plan.task("marts").upstream == ("models_and_staging",)
    assert plan.task("models_and_staging").upstream == ("seeds_and_staging",)


def test_a_grouping_that_makes_a_cycle_names_the_nodes(bikeshare_dir: Path, warehouse: Path) -> None:
    graph = load_graph(DbtProject(bikeshare_dir))
    selected = frozenset(graph.nodes)

    def tangled(node: Node) -> str:
        # Seeds and marts together, staging apart: seeds -> staging -> marts -> back into one group.
        return "staging" if node.original_file_path.startswith("models/staging") else "the_rest"

    with pytest.raises(DbtflowError) as caught:
        plan_grouped(graph, selected, tangled)
    message = str(caught.value)
    assert "cycle between groups" in message
    assert "seed.bikeshare.raw_" in message and "(group the_rest) feeds model.bikeshare.stg_" in message
    assert "(group staging) feeds model.bikeshare." in message
    assert "group those nodes differently" in caught.value.fix


def test_a_cycle_making_grouping_fails_the_dag_file_with_the_same_error(
    bikeshare_dir: Path, warehouse: Path
) -> None:
    from dbtflow import dbt_dag

    with pytest.raises(DbtflowError, match="cycle between groups"):
        dbt_dag(
            DbtProject(bikeshare_dir),
            dag_id="tangled",
            pattern="grouped",
            group_by=lambda node: "a" if node.resource_type == "seed" or node.name == "fct_trips" else "b",
        )
