"""Example ELT pipeline (an Airflow DAG built with dbtflow's elt_dag):

1. extract and load: the shop's new CSV exports (inbox/<table>/*.csv) go into raw DuckDB tables,
   each row stamped with its load time (_loaded_at);
2. a freshness gate: dbt source freshness on the raw tables, until they are fresh;
3. dbt: the shop project, one task per model;
4. quality checks: common-sql column and table checks on the built tables;
5. notifications: a JSON webhook on success (consumers) and on failure (owners).

Settings come from the environment: SHOP_DUCKDB (the warehouse file), SHOP_INBOX, SHOP_WEBHOOK_URL,
SHOP_FRESHNESS_INTERVAL / SHOP_FRESHNESS_TIMEOUT (seconds). The checks read the warehouse through
the Airflow connection `shop_warehouse` (type duckdb, extra {"path": ...}).
"""

import os
from pathlib import Path

from airflow.providers.common.sql.operators.sql import SQLColumnCheckOperator, SQLTableCheckOperator
from airflow.sdk import task

from dbtflow import DbtProject
from dbtflow.airflow.elt import FreshnessGate, elt_dag
from dbtflow.airflow.notify import WebhookNotifier

PROJECT = Path(os.environ.get("SHOP_PROJECT", Path(__file__).resolve().parents[1] / "shop_elt"))
INBOX = Path(os.environ.get("SHOP_INBOX", PROJECT / "inbox"))
WEBHOOK = os.environ.get("SHOP_WEBHOOK_URL", "http://127.0.0.1:8099/shop")
TABLES = ("orders", "customers")


@task
def load_new_files() -> dict[str, int]:
    """Append each new export file to its raw table (with its load time), then move it aside."""
    import duckdb

    loaded: dict[str, int] = {}
    with duckdb.connect(os.environ.get("SHOP_DUCKDB", str(PROJECT / "shop.duckdb"))) as con:
        con.execute("create schema if not exists raw")
        for table in TABLES:
            done = INBOX / table / "loaded"
            done.mkdir(parents=True, exist_ok=True)
            loaded[table] = 0
            for file in sorted((INBOX / table).glob("*.csv")):
                rows = f"select *, current_timestamp as _loaded_at from read_csv_auto('{file}')"
                exists = con.execute(
                    "select count(*) from information_schema.tables"
                    " where table_schema = 'raw' and table_name = ?",
                    [table],
                ).fetchone()
                if exists and exists[0]:
                    con.execute(f"insert into raw.{table} {rows}")
                else:
                    con.execute(f"create table raw.{table} as {rows}")
                loaded[table] += 1
                file.rename(done / file.name)
    return loaded


dag = elt_dag(
    "shop_elt",
    DbtProject(PROJECT),
    schedule="@hourly",
    extract=lambda: [load_new_files()],
    freshness=FreshnessGate(
        poke_interval=float(os.environ.get("SHOP_FRESHNESS_INTERVAL", 300)),
        timeout=float(os.environ.get("SHOP_FRESHNESS_TIMEOUT", 3600)),
    ),
    checks=[
        SQLColumnCheckOperator(
            task_id="check_fct_orders_columns",
            conn_id="shop_warehouse",
            table="main.fct_orders",
            column_mapping={"order_id": {"null_check": {"equal_to": 0}, "unique_check": {"equal_to": 0}}},
        ),
        SQLTableCheckOperator(
            task_id="check_amounts_positive",
            conn_id="shop_warehouse",
            table="main.fct_orders",
            checks={"amounts_positive": {"check_statement": "min(amount) >= 0"}},
        ),
    ],
    notify_success=[WebhookNotifier(WEBHOOK)],
    notify_failure=[WebhookNotifier(WEBHOOK)],
)
