"""``dbtflow run --state-aware`` and slim CI (``--target ci --defer-to DAG_ID``), on DuckDB and PostgreSQL.

One module-scoped sequence of five commands on the small project with sources
(``tests/fixtures/state_aware_shop``), with a production target (schema ``main``) and a CI target
(schema ``ci``) on one DuckDB file, serves the DuckDB checks (CI time: each ``dbtflow run`` starts
Airflow):

1. production, state-aware: builds everything (and keeps its manifest for deferral);
2. production again, nothing changed: every model is left out but the one whose source has no
   load time, and the command exits 0; then with ``--full-refresh``: everything is built;
3. slim CI with nothing modified: one line says so, exit 0, no DAG run;
4. after an edit of ``fct_orders``, slim CI: only ``fct_orders`` and its downstream are built, in
   ``ci``, reading their unchanged parents from ``main`` (nothing else exists in ``ci``).

PostgreSQL gets one lean test of slim CI (a production run, an edit, a CI run), schemas ``prod``
and ``ci`` in one database. The state-aware rules are tested in
``tests/project/test_state_aware_rules.py`` and under ``dag.test()`` (with ``dbt_dag(defer_to=...)``)
in ``tests/airflow/test_state_aware.py``.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from postgres import ensure_local_server, psql

from conftest import FIXTURES, copy_project, run_cli

PROFILES = """
state_shop:
  target: prod
  outputs:
    prod: {type: duckdb, path: "{{ env_var('STATE_SHOP_DUCKDB') }}", schema: main, threads: 2}
    ci: {type: duckdb, path: "{{ env_var('STATE_SHOP_DUCKDB') }}", schema: ci, threads: 2}
"""

PG_DATABASE = "dbtflow_slim_ci"
PG_PROFILES = f"""
state_shop:
  target: prod
  outputs:
    prod: {{type: postgres, host: 127.0.0.1, port: 5432, user: postgres, password: "", dbname: {PG_DATABASE},
            schema: prod, threads: 2}}
    ci: {{type: postgres, host: 127.0.0.1, port: 5432, user: postgres, password: "", dbname: {PG_DATABASE},
          schema: ci, threads: 2}}
"""

#: What slim CI builds after the edit of fct_orders.
MODIFIED_AND_DOWNSTREAM = {"fct_orders", "customer_revenue"}

#: Raw tables: one order, one customer (both with a load time), one note (without).
RAW_TABLES = [
    "create schema raw",
    "create table raw.orders as select 1 as order_id, 1 as customer_id, 10.0 as amount, "
    "timestamp '2024-01-01 10:00' as _loaded_at",
    "create table raw.customers as select 1 as customer_id, 'ann' as name, "
    "timestamp '2024-01-01 10:00' as _loaded_at",
    "create table raw.notes as select 'hi' as note",
]


@dataclass(frozen=True)
class Step:
    """One ``dbtflow run`` of the sequence: its process and its ``--summary-json``."""

    done: subprocess.CompletedProcess[str]
    summary: dict[str, Any]

    @property
    def output(self) -> str:
        return self.done.stdout + self.done.stderr

    @property
    def tasks(self) -> dict[str, str]:
        return {task["task_id"]: task["state"] for task in self.summary["tasks"]}


@dataclass(frozen=True)
class Runs:
    database: Path
    steps: dict[str, Step]


def _run(tmp: Path, name: str, *args: str, env: dict[str, str]) -> Step:
    summary = tmp / f"{name}.json"
    done = run_cli(*args, "--progress", "none", "--summary-json", str(summary), env=env)
    return Step(done, json.loads(summary.read_text()) if summary.exists() else {"tasks": []})


def _edit_fct_orders(project: Path) -> None:
    model = project / "models" / "marts" / "fct_orders.sql"
    model.write_text(model.read_text() + "where o.amount >= 0\n")


def _tables(database: Path, schema: str) -> set[str]:
    with duckdb.connect(str(database), read_only=True) as con:
        rows = con.execute(
            "select table_name from information_schema.tables where table_schema = ?", [schema]
        ).fetchall()
    return {row[0] for row in rows}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, airflow_db: Path) -> Runs:
    tmp = tmp_path_factory.mktemp("state_aware_cli")
    project = copy_project(FIXTURES / "state_aware_shop", tmp / "shop")
    (project / "profiles.yml").write_text(PROFILES)
    database = tmp / "shop.duckdb"
    with duckdb.connect(str(database)) as con:
        for sql in RAW_TABLES:
            con.execute(sql)
    env = {"STATE_SHOP_DUCKDB": str(database)}
    prod = ["run", str(project), "--state-aware", "--dag-id", "shop_prod"]
    ci = ["run", str(project), "--target", "ci", "--defer-to", "shop_prod"]
    steps = {"first": _run(tmp, "first", *prod, env=env), "second": _run(tmp, "second", *prod, env=env)}
    steps["full_refresh"] = _run(tmp, "full_refresh", *prod, "--full-refresh", env=env)
    steps["unmodified"] = _run(tmp, "unmodified", *ci, env=env)
    _edit_fct_orders(project)
    steps["modified"] = _run(tmp, "modified", *ci, env=env)
    return Runs(database, steps)


def test_first_state_aware_run_builds_everything(runs: Runs) -> None:
    first = runs.steps["first"]
    assert first.done.returncode == 0, first.output
    assert set(first.tasks.values()) == {"success"}


def test_second_run_with_nothing_changed_skips_every_model_and_exits_0(runs: Runs) -> None:
    second = runs.steps["second"]
    assert second.done.returncode == 0, second.output
    skipped = {task for task, state in second.tasks.items() if state == "skipped"}
    assert skipped == {
        "stg_orders",
        "stg_customers",
        "fct_orders",
        "customer_revenue",
        "dim_customers",
        "regions",
    }
    assert second.tasks["stg_notes"] == "success"  # its source has no load time: always built


def test_full_refresh_builds_every_model_again(runs: Runs) -> None:
    """``--state-aware --full-refresh`` with nothing changed: every task runs and succeeds."""
    full = runs.steps["full_refresh"]
    assert full.done.returncode == 0, full.output
    assert full.tasks and set(full.tasks.values()) == {"success"}
    assert {"stg_orders", "fct_orders", "regions"} <= set(full.tasks)


def test_slim_ci_with_nothing_modified_ends_cleanly(runs: Runs) -> None:
    unmodified = runs.steps["unmodified"]
    assert unmodified.done.returncode == 0, unmodified.output
    line = unmodified.done.stdout
    assert line.startswith("Nothing modified since shop_prod's run manual__"), unmodified.output
    assert line.endswith(": the slim CI selection (state:modified+) matches no node, so nothing was built.\n")
    assert unmodified.summary == {
        "dag_id": "shop_prod_slim_ci",
        "run_id": "",
        "state": "success",
        "tasks": [],
    }


def test_slim_ci_builds_the_modified_models_from_production_parents(runs: Runs) -> None:
    modified = runs.steps["modified"]
    assert modified.done.returncode == 0, modified.output
    assert modified.summary["dag_id"] == "shop_prod_slim_ci"
    assert {task for task in modified.tasks if not task.startswith("dbt_")} == MODIFIED_AND_DOWNSTREAM
    # Built in the CI schema only, from production's unchanged parents (deferred: not in `ci`).
    assert _tables(runs.database, "ci") == MODIFIED_AND_DOWNSTREAM
    with duckdb.connect(str(runs.database), read_only=True) as con:
        assert con.execute("select count(*) from ci.fct_orders").fetchone() == (1,)


def test_slim_ci_on_postgresql(tmp_path: Path, airflow_db: Path) -> None:
    """Production in schema prod, slim CI in schema ci of one PostgreSQL database: CI builds only
    the edited model and its downstream, reading the unchanged parents from prod."""
    ensure_local_server()
    psql(f"drop database if exists {PG_DATABASE} with (force)")
    psql(f"create database {PG_DATABASE}")
    for sql in RAW_TABLES:
        psql(sql, database=PG_DATABASE)
    project = copy_project(FIXTURES / "state_aware_shop", tmp_path / "shop")
    (project / "profiles.yml").write_text(PG_PROFILES)
    prod = _run(tmp_path, "prod", "run", str(project), "--dag-id", "shop_pg_prod", env={})
    assert prod.done.returncode == 0, prod.output
    _edit_fct_orders(project)
    ci = _run(tmp_path, "ci", "run", str(project), "--target", "ci", "--defer-to", "shop_pg_prod", env={})
    assert ci.done.returncode == 0, ci.output
    assert {task for task in ci.tasks if not task.startswith("dbt_")} == MODIFIED_AND_DOWNSTREAM
    tables = psql(
        "select string_agg(table_name, ',' order by table_name) from information_schema.tables "
        "where table_schema = 'ci'",
        database=PG_DATABASE,
    )
    assert "customer_revenue,fct_orders" in tables
    # One order, joined to prod.stg_customers (deferred: ci has no stg_customers).
    assert " ann" in psql("select name from ci.fct_orders", database=PG_DATABASE)
