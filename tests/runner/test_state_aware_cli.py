"""``dbtflow run --state-aware`` and slim CI (``--target ci --defer-to DAG_ID``) on one DuckDB file.

One sequence of three runs of the small project with sources (``tests/fixtures/state_aware_shop``),
with a production target (schema ``main``) and a CI target (schema ``ci``) on the same file:

1. production, state-aware: builds everything (and keeps its manifest for deferral);
2. production again, nothing changed: every model is left out but the one whose source has no
   load time, and the command exits 0;
3. after an edit of ``fct_orders``, slim CI: only ``fct_orders`` and its downstream are built, in
   ``ci``, reading their unchanged parents from ``main`` (nothing else exists in ``ci``).

The state-aware rules are tested in ``tests/project/test_state_aware.py`` and under ``dag.test()``
in ``tests/airflow/test_state_aware.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from conftest import FIXTURES, copy_project, run_cli

PROFILES = """
state_shop:
  target: prod
  outputs:
    prod: {type: duckdb, path: "{{ env_var('STATE_SHOP_DUCKDB') }}", schema: main, threads: 2}
    ci: {type: duckdb, path: "{{ env_var('STATE_SHOP_DUCKDB') }}", schema: ci, threads: 2}
"""


def _tasks(summary: Path) -> dict[str, str]:
    return {task["task_id"]: task["state"] for task in json.loads(summary.read_text())["tasks"]}


def _tables(database: Path, schema: str) -> set[str]:
    with duckdb.connect(str(database), read_only=True) as con:
        rows = con.execute(
            "select table_name from information_schema.tables where table_schema = ?", [schema]
        ).fetchall()
    return {row[0] for row in rows}


def test_state_aware_runs_and_slim_ci(tmp_path: Path, airflow_db: Path) -> None:
    project = copy_project(FIXTURES / "state_aware_shop", tmp_path / "shop")
    (project / "profiles.yml").write_text(PROFILES)
    database = tmp_path / "shop.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("create schema raw")
        con.execute("create table raw.orders as select 1 as order_id, 1 as customer_id, 10.0 as amount, "
                    "timestamp '2024-01-01 10:00' as _loaded_at")  # fmt: skip
        con.execute("create table raw.customers as select 1 as customer_id, 'ann' as name, "
                    "timestamp '2024-01-01 10:00' as _loaded_at")  # fmt: skip
        con.execute("create table raw.notes as select 'hi' as note")
    env = {"STATE_SHOP_DUCKDB": str(database)}
    prod = ["run", str(project), "--state-aware", "--dag-id", "shop_prod", "--progress", "none"]

    first = run_cli(*prod, "--summary-json", str(tmp_path / "first.json"), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert set(_tasks(tmp_path / "first.json").values()) == {"success"}

    second = run_cli(*prod, "--summary-json", str(tmp_path / "second.json"), env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    tasks = _tasks(tmp_path / "second.json")
    skipped = {task for task, state in tasks.items() if state == "skipped"}
    assert skipped == {
        "stg_orders",
        "stg_customers",
        "fct_orders",
        "customer_revenue",
        "dim_customers",
        "regions",
    }
    assert tasks["stg_notes"] == "success"  # its source has no load time: always built

    model = project / "models" / "marts" / "fct_orders.sql"
    model.write_text(model.read_text() + "where o.amount >= 0\n")
    ci = ["run", str(project), "--target", "ci", "--defer-to", "shop_prod", "--progress", "none"]
    slim = run_cli(*ci, "--summary-json", str(tmp_path / "ci.json"), env=env)
    assert slim.returncode == 0, slim.stdout + slim.stderr
    summary = json.loads((tmp_path / "ci.json").read_text())
    assert summary["dag_id"] == "shop_prod_slim_ci"
    node_tasks = {task for task in _tasks(tmp_path / "ci.json") if not task.startswith("dbt_")}
    assert node_tasks == {"fct_orders", "customer_revenue"}
    # Built in the CI schema only, from production's unchanged parents (deferred: not in `ci`).
    assert _tables(database, "ci") == {"fct_orders", "customer_revenue"}
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("select count(*) from ci.fct_orders").fetchone() == (1,)
