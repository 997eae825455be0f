"""State-aware runs with one dbt invocation per task (``execution="per_task"``) and the single
pattern, under ``dag.test()``, real dbt, DuckDB.

per_task: each node task decides for its own model and tests when it starts, knowing what the
run's upstream tasks built (``dbtflow.airflow.state_aware.node_task_selection``). The project is
the state-aware shop with ``tests="after_model"`` (each model's tests in a task after it) and one
test on two models (``relationships`` from stg_orders to stg_customers, in a task of its own), so
that a test task's decision is seen apart from its model's. One module-scoped sequence of four
runs: everything; nothing changed; stg_customers' SQL changed; new rows in raw.orders.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from dbtflow.project.status import UNCHANGED
from dbtflow.state.store import StateStore

from conftest import FIXTURES, copy_project, history_of_run
from dagtest import dag_file, load_dag

DAG_ID = "state_aware_per_task"
MODELS = {"stg_orders", "stg_customers", "stg_notes", "fct_orders", "customer_revenue", "dim_customers"}
ALWAYS_BUILT = {"stg_notes"}
RELATIONSHIPS = "test__relationships_stg_orders_customer_id__customer_id__ref_stg_customers_"
PROFILES = """
state_shop:
  target: dev
  outputs:
    dev: {type: duckdb, path: "{{ env_var('STATE_SHOP_DUCKDB') }}", schema: main, threads: 2}
"""
#: The fixture's tests, and one test on two models (a warning only: order 2's customer is not in
#: raw.customers).
STAGING_TESTS = """
version: 2
models:
  - name: stg_orders
    columns:
      - name: order_id
        data_tests: [unique]
      - name: customer_id
        data_tests:
          - relationships: {to: ref('stg_customers'), field: customer_id, config: {severity: warn}}
  - name: stg_customers
    columns:
      - name: customer_id
        data_tests: [unique]
"""


@dataclass
class Run:
    run_id: str
    state: str
    #: Task id -> Airflow state.
    tasks: dict[str, str]
    #: Node name -> status, as the run-time history recorded them (what dbt ran).
    ran: dict[str, str]
    #: Node name -> why the run left it out (its ``unchanged`` result in the state store).
    reasons: dict[str, str]

    def with_state(self, state: str) -> set[str]:
        return {task for task, s in self.tasks.items() if s == state}

    @property
    def built(self) -> set[str]:
        return {
            name for name, status in self.ran.items() if name in MODELS | {"regions"} and status == "success"
        }


def _name(unique_id: str) -> str:
    return unique_id.split(".")[2]


def _run(path: Path, dag_id: str, conf: dict | None = None) -> Run:
    dag_run = load_dag(path, dag_id).test(run_conf=conf)
    tasks = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    ran = {_name(r.unique_id): r.status for r in history_of_run(dag_id, dag_run.run_id)}
    reasons = {
        _name(stored.result.unique_id): stored.result.message or ""
        for stored in StateStore().results_of_run(dag_id, dag_run.run_id)
        if stored.result.status == UNCHANGED
    }
    return Run(dag_run.run_id, str(dag_run.state), tasks, ran, reasons)


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


def _shop(root: Path) -> tuple[Path, Path]:
    project = copy_project(FIXTURES / "state_aware_shop", root / "shop")
    (project / "profiles.yml").write_text(PROFILES)
    (project / "models" / "staging" / "_staging.yml").write_text(STAGING_TESTS)
    database = root / "shop.duckdb"
    _load(database, [(1, 1, 10.0, "2024-01-01 10:00"), (2, 2, 5.0, "2024-01-01 11:00")])
    return project, database


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, airflow_db: Path) -> Iterator[dict[str, Run]]:
    project, database = _shop(tmp_path_factory.mktemp("state_aware_per_task"))
    source = f"""
        from dbtflow import DbtProject, dbt_dag
        dag = dbt_dag(
            DbtProject({str(project)!r}), dag_id={DAG_ID!r}, state_aware=True,
            execution="per_task", tests="after_model",
        )
    """
    found: dict[str, Run] = {}
    with pytest.MonkeyPatch.context() as mp, dag_file(DAG_ID, source) as path:
        mp.setenv("STATE_SHOP_DUCKDB", str(database))
        found["first"] = _run(path, DAG_ID)
        found["unchanged"] = _run(path, DAG_ID)
        sql = project / "models" / "staging" / "stg_customers.sql"
        sql.write_text(
            sql.read_text().replace("select customer_id, name", "select customer_id, upper(name) as name")
        )
        found["sql_changed"] = _run(path, DAG_ID)
        _load(database, [(3, 1, 7.5, "2024-01-02 09:00")])
        found["new_orders"] = _run(path, DAG_ID)
    yield found


def test_per_task_first_run_builds_everything(runs: dict[str, Run]) -> None:
    first = runs["first"]
    assert first.state == "success", first.tasks
    assert first.built == MODELS | {"regions"}
    assert RELATIONSHIPS in first.tasks
    assert not first.with_state("skipped")


def test_per_task_nothing_changed_builds_nothing_and_says_why(runs: dict[str, Run]) -> None:
    second = runs["unchanged"]
    assert second.state == "success", second.tasks
    assert second.built == ALWAYS_BUILT
    # Every model's task but stg_notes', and the tests of the models left out, end skipped.
    assert second.with_state("skipped") == (MODELS - ALWAYS_BUILT) | {
        "regions",
        "stg_orders__tests",
        "stg_customers__tests",
        RELATIONSHIPS,
    }
    assert second.tasks["stg_notes"] == "success"
    assert not any(name.startswith(("unique_", "relationships_")) for name in second.ran)
    first_run = runs["first"].run_id
    assert second.reasons["fct_orders"] == f"unchanged since run {first_run}; sources not newer"
    assert second.reasons["unique_stg_orders_order_id"] == "not run: stg_orders not rebuilt"
    assert "stg_notes" not in second.reasons


def test_per_task_changed_sql_rebuilds_the_model_and_its_downstream(runs: dict[str, Run]) -> None:
    changed = runs["sql_changed"]
    assert changed.state == "success", changed.tasks
    # fct_orders' and dim_customers' own code is unchanged: built because stg_customers was rebuilt
    # earlier in this run (by another task).
    assert (
        changed.built == {"stg_customers", "fct_orders", "customer_revenue", "dim_customers"} | ALWAYS_BUILT
    )
    assert changed.with_state("skipped") == {"stg_orders", "regions", "stg_orders__tests"}
    # A model's tests run only when it is rebuilt; a test of two models when either is.
    assert changed.ran["unique_stg_customers_customer_id"] == "pass"
    assert "unique_stg_orders_order_id" not in changed.ran
    assert changed.tasks[RELATIONSHIPS] == "success"


def test_per_task_newer_source_data_rebuilds_its_readers_only(runs: dict[str, Run]) -> None:
    new_orders = runs["new_orders"]
    assert new_orders.state == "success", new_orders.tasks
    assert new_orders.built == {"stg_orders", "fct_orders", "customer_revenue"} | ALWAYS_BUILT
    assert new_orders.with_state("skipped") == {
        "stg_customers",
        "dim_customers",
        "regions",
        "stg_customers__tests",
    }
    assert new_orders.ran["unique_stg_orders_order_id"] == "pass"
    assert new_orders.tasks[RELATIONSHIPS] == "success"


def test_single_pattern_leaves_the_unchanged_nodes_out_of_its_selection(
    tmp_path: Path, airflow_db: Path
) -> None:
    """single (one task, one dbt invocation): a second run's selection holds only what must be
    built (stg_notes, whose source has no load time); the task succeeds; a run with the conf
    ``{"full_refresh": true}`` builds everything again."""
    project, database = _shop(tmp_path)
    dag_id = "state_aware_single"
    source = f"""
        from dbtflow import DbtProject, dbt_dag
        dag = dbt_dag(DbtProject({str(project)!r}), dag_id={dag_id!r}, pattern="single", state_aware=True)
    """
    with pytest.MonkeyPatch.context() as mp, dag_file(dag_id, source) as path:
        mp.setenv("STATE_SHOP_DUCKDB", str(database))
        first = _run(path, dag_id)
        second = _run(path, dag_id)
        full = _run(path, dag_id, {"full_refresh": True})
    assert first.state == second.state == full.state == "success"
    assert first.built == full.built == MODELS | {"regions"}
    assert second.built == ALWAYS_BUILT
    assert set(second.tasks.values()) == {"success"}
    assert not any(name.startswith(("unique_", "relationships_")) for name in second.ran)


def test_streamed_at_end_tests_run_only_for_rebuilt_models(tmp_path: Path, airflow_db: Path) -> None:
    """per_model streamed with ``tests="at_end"``: the one test task after every model (its own
    ``dbt test``) runs under ``none_failed`` and leaves out the tests of the models not rebuilt:
    with nothing changed it ends skipped; after stg_orders' SQL changes it runs stg_orders' tests
    and the test on both staging models, not stg_customers'."""
    project, _ = _shop(tmp_path)
    dag_id = "state_aware_at_end"
    source = f"""
        from dbtflow import DbtProject, dbt_dag
        dag = dbt_dag(DbtProject({str(project)!r}), dag_id={dag_id!r}, state_aware=True, tests="at_end")
    """
    with pytest.MonkeyPatch.context() as mp, dag_file(dag_id, source) as path:
        mp.setenv("STATE_SHOP_DUCKDB", str(tmp_path / "shop.duckdb"))
        first = _run(path, dag_id)
        second = _run(path, dag_id)
        sql = project / "models" / "staging" / "stg_orders.sql"
        sql.write_text(sql.read_text().replace("amount from", "amount * 1 as amount from"))
        third = _run(path, dag_id)
    assert first.state == second.state == third.state == "success"
    assert first.tasks["dbt_test"] == "success"
    assert second.tasks["dbt_test"] == "skipped"
    assert not any(name.startswith(("unique_", "relationships_")) for name in second.ran)
    assert third.tasks["dbt_test"] == "success"
    assert third.built == {"stg_orders", "fct_orders", "customer_revenue"} | ALWAYS_BUILT
    tests_run = {name for name in third.ran if name.startswith(("unique_", "relationships_"))}
    assert tests_run == {
        "unique_stg_orders_order_id",
        "relationships_stg_orders_customer_id__customer_id__ref_stg_customers_",
    }
    assert third.reasons["unique_stg_customers_customer_id"] == "not run: stg_customers not rebuilt"
