"""State-aware per_model runs (``dbt_dag(state_aware=True)``) under ``dag.test()``, real dbt, DuckDB.

One module-scoped sequence of five runs of one DAG serves every check (CI time): a first run
builds everything; a second with nothing changed leaves every node out but the one whose source
has no load time; a changed model's SQL rebuilds it and its downstream; new rows in a source
rebuild that source's readers; a run with ``{"full_refresh": true}`` builds everything. Slim CI
(``dbt_dag(defer_to=DAG_ID)``, target ``ci`` on the same DuckDB file) then defers to that last run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dbtflow.state.store import StateStore
from dbtflow.streaming.consumer import Action, Watch, decide_from

from conftest import FIXTURES, copy_project, history_of_run
from dagtest import dag_file, load_dag

DAG_ID = "state_aware_shop"
MODELS = {"stg_orders", "stg_customers", "stg_notes", "fct_orders", "customer_revenue", "dim_customers"}
#: stg_notes reads a source without a load time: its freshness is unknown, so it is always built.
ALWAYS_BUILT = {"stg_notes"}
#: Production in schema main (the DAG above), slim CI in schema ci, on one DuckDB file.
PROFILES = """
state_shop:
  target: dev
  outputs:
    dev: {type: duckdb, path: "{{ env_var('STATE_SHOP_DUCKDB') }}", schema: main, threads: 2}
    ci: {type: duckdb, path: "{{ env_var('STATE_SHOP_DUCKDB') }}", schema: ci, threads: 2}
"""


@dataclass
class Run:
    run_id: str
    state: str
    #: Task id -> Airflow state.
    tasks: dict[str, str]
    #: Node names the run-time history recorded as built (models, seeds, snapshots).
    built: set[str]
    #: Node name -> why the run left it out, as its task logs it (the consumer's decision).
    reasons: dict[str, str]

    def with_state(self, state: str) -> set[str]:
        return {task for task, s in self.tasks.items() if s == state}


def _reasons(run_id: str) -> dict[str, str]:
    """Why each node of the run was left out: the message its skipped task logs."""
    store = StateStore()
    found = {}
    for stored in store.results_of_run(DAG_ID, run_id):
        uid = stored.result.unique_id
        decision = decide_from(store.node_states(DAG_ID, run_id, [uid]), [uid], 1, Watch(), main_node=uid)
        if decision.action is Action.SKIP:
            found[uid.split(".")[2]] = decision.message
    return found


def _run(path: Path, conf: dict[str, Any] | None = None) -> Run:
    dag = load_dag(path, DAG_ID)
    dag_run = dag.test(run_conf=conf)
    tasks = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    built = {
        r.unique_id.rsplit(".", 1)[-1]
        for r in history_of_run(DAG_ID, dag_run.run_id)
        if r.status == "success" and r.unique_id.split(".")[0] in ("model", "seed", "snapshot")
    }
    return Run(dag_run.run_id, str(dag_run.state), tasks, built, _reasons(dag_run.run_id))


def _load(database: Path, orders: list[tuple[int, int, float, str]]) -> None:
    with duckdb.connect(str(database)) as con:
        con.execute("create schema if not exists raw")
        con.execute(
            "create table if not exists raw.orders "
            "(order_id int, customer_id int, amount double, _loaded_at timestamp)"
        )
        con.execute(
            "create table if not exists raw.customers as "
            "select 1 as customer_id, 'ann' as name, timestamp '2024-01-01 10:00' as _loaded_at"
        )
        con.execute("create table if not exists raw.notes as select 'hello' as note")
        con.executemany("insert into raw.orders values (?, ?, ?, ?)", orders)


@dataclass(frozen=True)
class Shop:
    project: Path
    database: Path


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    root = tmp_path_factory.mktemp("state_aware")
    project = copy_project(FIXTURES / "state_aware_shop", root / "shop")
    (project / "profiles.yml").write_text(PROFILES)
    return Shop(project, root / "shop.duckdb")


@pytest.fixture(scope="module")
def runs(shop: Shop, airflow_db: Path) -> Iterator[dict[str, Run]]:
    project, database = shop.project, shop.database
    _load(database, [(1, 1, 10.0, "2024-01-01 10:00"), (2, 2, 5.0, "2024-01-01 11:00")])
    source = f"""
        from dbtflow import DbtProject, dbt_dag
        dag = dbt_dag(DbtProject({str(project)!r}), dag_id={DAG_ID!r}, state_aware=True)
    """
    found: dict[str, Run] = {}
    with pytest.MonkeyPatch.context() as mp, dag_file(DAG_ID, source) as path:
        mp.setenv("STATE_SHOP_DUCKDB", str(database))
        found["first"] = _run(path)
        found["unchanged"] = _run(path)
        sql = project / "models" / "staging" / "stg_customers.sql"
        sql.write_text(
            sql.read_text().replace("select customer_id, name", "select customer_id, upper(name) as name")
        )
        found["sql_changed"] = _run(path)
        _load(database, [(3, 1, 7.5, "2024-01-02 09:00")])
        found["new_orders"] = _run(path)
        found["full_refresh"] = _run(path, {"full_refresh": True})
    yield found


def test_first_run_builds_everything(runs: dict[str, Run]) -> None:
    first = runs["first"]
    assert first.state == "success", first.tasks
    assert first.built == MODELS | {"regions"}


def test_second_run_with_nothing_changed_builds_nothing(runs: dict[str, Run]) -> None:
    second = runs["unchanged"]
    assert second.state == "success", second.tasks
    assert second.built == ALWAYS_BUILT
    assert second.with_state("skipped") == MODELS - ALWAYS_BUILT | {"regions"}
    first_run = runs["first"].run_id
    assert set(second.reasons) == {
        *second.with_state("skipped"),
        "unique_stg_orders_order_id",
        "unique_stg_customers_customer_id",
    }
    assert second.reasons["fct_orders"] == f"Not built: unchanged since run {first_run}; sources not newer."
    assert "stg_notes" not in second.reasons


def test_changed_sql_rebuilds_the_model_and_its_downstream_only(runs: dict[str, Run]) -> None:
    changed = runs["sql_changed"]
    assert changed.state == "success", changed.tasks
    assert (
        changed.built == {"stg_customers", "fct_orders", "customer_revenue", "dim_customers"} | ALWAYS_BUILT
    )
    assert changed.with_state("skipped") == {"stg_orders", "regions"}


def test_newer_source_data_rebuilds_its_readers_only(runs: dict[str, Run]) -> None:
    new_orders = runs["new_orders"]
    assert new_orders.state == "success", new_orders.tasks
    assert new_orders.built == {"stg_orders", "fct_orders", "customer_revenue"} | ALWAYS_BUILT
    assert new_orders.with_state("skipped") == {"stg_customers", "dim_customers", "regions"}


def test_full_refresh_builds_everything(runs: dict[str, Run]) -> None:
    full = runs["full_refresh"]
    assert full.state == "success", full.tasks
    assert full.built == MODELS | {"regions"}
    assert not full.with_state("skipped")


def test_slim_ci_dag_builds_the_modified_models_reading_production(shop: Shop, runs: dict[str, Run]) -> None:
    """``dbt_dag(defer_to=DAG_ID)`` against the module's last (successful) production run: with
    nothing modified it is one task that succeeds; after an edit of fct_orders it builds exactly
    fct_orders and its downstream, in schema ci, reading their unchanged parents from main."""
    assert runs["full_refresh"].state == "success"
    ci_id = "state_aware_shop_ci"
    source = f"""
        from dbtflow import DbtProject, dbt_dag
        dag = dbt_dag(DbtProject({str(shop.project)!r}, target="ci"), dag_id={ci_id!r}, defer_to={DAG_ID!r})
    """
    with pytest.MonkeyPatch.context() as mp, dag_file(ci_id, source) as path:
        mp.setenv("STATE_SHOP_DUCKDB", str(shop.database))
        unmodified = load_dag(path, ci_id)
        assert list(unmodified.task_dict) == ["nothing_modified"]
        message = unmodified.task_dict["nothing_modified"].message
        assert message.startswith(f"Nothing modified since {DAG_ID}'s run {runs['full_refresh'].run_id}:")
        assert str(unmodified.test().state) == "success"
        sql = shop.project / "models" / "marts" / "fct_orders.sql"
        sql.write_text(sql.read_text() + "where o.amount >= 0\n")
        modified = load_dag(path, ci_id)
        ci_run = modified.test()
    assert str(ci_run.state) == "success"
    states = {ti.task_id: str(ti.state) for ti in ci_run.get_task_instances()}
    assert {task for task in states if not task.startswith("dbt_")} == {"fct_orders", "customer_revenue"}
    assert set(states.values()) == {"success"}
    with duckdb.connect(str(shop.database), read_only=True) as con:
        tables = con.execute("select table_name from information_schema.tables where table_schema = 'ci'")
        assert {row[0] for row in tables.fetchall()} == {"fct_orders", "customer_revenue"}
        # Production's three orders, read through main.stg_orders (deferred: not in ci).
        assert con.execute("select count(*) from ci.fct_orders").fetchone() == (3,)


def test_grouped_builds_only_what_changed(tmp_path: Path, airflow_db: Path) -> None:
    """Grouped (one dbt invocation per folder): a second run leaves out the unchanged nodes from each
    group's selection, and a group with nothing to build ends skipped. A group downstream of a
    skipped one still decides for itself (trigger rule ``none_failed``): after an edit of
    fct_orders, with the seeds group skipped, marts builds fct_orders and its downstream."""
    project = copy_project(FIXTURES / "state_aware_shop", tmp_path / "shop")
    database = tmp_path / "shop.duckdb"
    _load(database, [(1, 1, 10.0, "2024-01-01 10:00")])
    dag_id = "state_aware_grouped"
    source = f"""
        from dbtflow import DbtProject, dbt_dag
        dag = dbt_dag(DbtProject({str(project)!r}), dag_id={dag_id!r}, pattern="grouped", state_aware=True)
    """
    with pytest.MonkeyPatch.context() as mp, dag_file(dag_id, source) as path:
        mp.setenv("STATE_SHOP_DUCKDB", str(database))
        dag = load_dag(path, dag_id)
        first = dag.test()
        second = dag.test()
        sql = project / "models" / "marts" / "fct_orders.sql"
        sql.write_text(sql.read_text() + "where o.amount >= 0\n")
        third = load_dag(path, dag_id).test()
    assert str(first.state) == str(second.state) == str(third.state) == "success"

    def built(run: Any) -> set[str]:
        return {
            r.unique_id.split(".")[2] for r in history_of_run(dag_id, run.run_id) if r.status == "success"
        }

    assert built(second) == ALWAYS_BUILT
    states = {ti.task_id: str(ti.state) for ti in second.get_task_instances()}
    assert states["staging"] == "success"
    assert states["marts"] == states["seeds"] == "skipped"
    assert built(third) == {"fct_orders", "customer_revenue"} | ALWAYS_BUILT
    states = {ti.task_id: str(ti.state) for ti in third.get_task_instances()}
    assert states["seeds"] == "skipped"
    assert states["staging"] == states["marts"] == "success"
