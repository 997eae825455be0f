"""The ELT layout with real Airflow (``dag.test()``), real dbt and DuckDB: a real extraction task
loads files into raw tables, the freshness gate holds dbt back on stale sources, common-sql checks
run on the built tables, and a local webhook receives the notifications."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from conftest import REPO, copy_project
from dagtest import dag_file, load_dag, run_dag
from webhook import Webhook

SHOP = REPO / "examples" / "shop_elt"
DAG_SOURCE = (REPO / "examples" / "dags" / "shop_elt.py").read_text()


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_db: Path) -> Iterator[dict[str, Any]]:
    project = copy_project(SHOP, tmp_path / "shop")
    inbox = tmp_path / "inbox"
    shutil.copytree(SHOP / "inbox", inbox)
    warehouse = tmp_path / "shop.duckdb"
    hook = Webhook()
    env = {
        "SHOP_PROJECT": str(project),
        "SHOP_INBOX": str(inbox),
        "SHOP_DUCKDB": str(warehouse),
        "SHOP_WEBHOOK_URL": hook.url,
        "SHOP_FRESHNESS_INTERVAL": "1",
        "SHOP_FRESHNESS_TIMEOUT": "4",
        "AIRFLOW_CONN_SHOP_WAREHOUSE": json.dumps({"conn_type": "duckdb", "extra": {"path": str(warehouse)}}),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield {"project": project, "inbox": inbox, "warehouse": warehouse, "hook": hook}
    hook.server.shutdown()


def _run() -> tuple[str, dict[str, tuple[str, int]]]:
    with dag_file("shop_elt", DAG_SOURCE) as path:
        return run_dag(path, "shop_elt")


def _tables(warehouse: Path) -> set[str]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute("select table_schema, table_name from information_schema.tables").fetchall()
    return {f"{schema}.{table}" for schema, table in rows}


def test_sections_are_wired_in_order(shop: dict[str, Any]) -> None:
    with dag_file("shop_elt", DAG_SOURCE) as path:
        dag = load_dag(path, "shop_elt")
    assert dag.task_dict["source_freshness"].upstream_task_ids == {"load_new_files"}
    assert "source_freshness" in dag.task_dict["dbt.dbt_build"].upstream_task_ids
    gate = dag.task_dict["source_freshness"]
    assert gate.sources == ["source.shop.raw.customers", "source.shop.raw.orders"]
    for check in ("check_fct_orders_columns", "check_amounts_positive"):
        assert dag.task_dict[check].upstream_task_ids == {"dbt.customer_revenue", "dbt.dbt_build"}
        assert check in dag.task_dict["notify_success"].upstream_task_ids
    assert len(dag.task_dict["notify_failure"].upstream_task_ids) == len(dag.tasks) - 2


def test_fresh_sources_run_the_whole_pipeline_and_notify_success_once(shop: dict[str, Any]) -> None:
    state, tasks = _run()
    assert state == "success", tasks
    assert tasks["notify_failure"][0] == "skipped"
    assert {"raw.orders", "main.fct_orders", "main.customer_revenue"} <= _tables(shop["warehouse"])
    (message,) = shop["hook"].messages
    assert message["state"] == "success" and message["dag_id"] == "shop_elt"
    assert set(message["models_built"]) >= {"model.shop.fct_orders", "model.shop.customer_revenue"}
    assert message["failed_models"] == [] and message["stale_sources"] == []


def test_stale_sources_fail_the_gate_with_the_list_and_dbt_never_runs(shop: dict[str, Any]) -> None:
    # The source system sent nothing new for two days: raw tables exist, with old load times.
    old = datetime.now() - timedelta(days=2)
    shutil.rmtree(shop["inbox"])
    shop["inbox"].mkdir()
    with duckdb.connect(str(shop["warehouse"])) as con:
        con.execute("create schema raw")
        con.execute("create table raw.orders (order_id int, customer_id int, ordered_at timestamp,"
                    " amount decimal(10, 2), _loaded_at timestamp)")  # fmt: skip
        con.execute("insert into raw.orders values (1, 1, ?, 5, ?)", [old, old])
        con.execute(
            "create table raw.customers"
            " (customer_id int, name varchar, country varchar, _loaded_at timestamp)"
        )
        con.execute("insert into raw.customers values (1, 'Ada', 'FR', ?)", [old])
    state, tasks = _run()
    assert state == "failed"
    assert tasks["source_freshness"][0] == "failed"
    # The producer never ran (upstream_failed); the streamed node tasks, which wait from the
    # start of the run, end skipped: their upstream did not succeed.
    assert tasks["dbt.dbt_build"][0] == "upstream_failed"
    nodes = {
        t: s
        for t, (s, _) in tasks.items()
        if t.startswith("dbt.") and t not in ("dbt.dbt_build", "dbt.dbt_assets")
    }
    assert nodes and all(s == "skipped" for s in nodes.values()), nodes
    assert "main.fct_orders" not in _tables(shop["warehouse"]), "dbt ran on stale sources"
    (message,) = shop["hook"].messages
    assert message["state"] == "failed" and message["failed_tasks"] == ["source_freshness"]
    assert message["stale_sources"] == ["source.shop.raw.customers", "source.shop.raw.orders"]


def test_a_failing_check_blocks_the_success_message(shop: dict[str, Any]) -> None:
    (shop["inbox"] / "orders" / "orders_0002.csv").write_text(
        "order_id,customer_id,ordered_at,amount\n4,2,2026-11-23 08:00:00,-3.00\n"
    )
    state, tasks = _run()
    assert state == "failed"
    assert tasks["check_amounts_positive"][0] == "failed"
    assert tasks["check_fct_orders_columns"][0] == "success" and tasks["dbt.fct_orders"][0] == "success"
    (message,) = shop["hook"].messages
    assert message["state"] == "failed" and message["failed_tasks"] == ["check_amounts_positive"]


MAIL_DAG = """
from airflow.providers.common.sql.operators.sql import SQLTableCheckOperator
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from dbtflow import DbtProject
from dbtflow.airflow.elt import elt_dag

dag = elt_dag(
    "shop_mail",
    DbtProject({project!r}),
    freshness=False,
    checks=[
        SQLTableCheckOperator(
            task_id="check_enough_orders",
            conn_id="shop_warehouse",
            table="main.fct_orders",
            checks={{"enough_orders": {{"check_statement": "count(*) > 1000"}}}},
        )
    ],
    notify_failure=[
        SmtpNotifier(
            to="owners@example.com",
            from_email="dbtflow@example.com",
            smtp_conn_id="local_smtp",
            subject="{{{{ dbtflow.dag_id }}}} failed: {{{{ dbtflow.failed_tasks | join(', ') }}}}",
            html_content="Failed tasks: {{{{ dbtflow.failed_tasks | join(', ') }}}}",
        )
    ],
)
"""


def test_a_failure_is_mailed_to_the_owners_through_the_smtp_provider(
    shop: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received: list[Any] = []

    class Keep(Message):
        def handle_message(self, message: Any) -> None:
            received.append(message)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_LOCAL_SMTP",
            json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port,
                        "extra": {"disable_tls": True, "disable_ssl": True}}),
        )  # fmt: skip
        with duckdb.connect(str(shop["warehouse"])) as con:
            con.execute("create schema raw")
            for table in ("orders", "customers"):
                file = next((shop["inbox"] / table).glob("*.csv"))
                con.execute(
                    f"create table raw.{table} as select *, now() as _loaded_at from read_csv_auto('{file}')"
                )
        with dag_file("shop_mail", MAIL_DAG.format(project=str(shop["project"]))) as path:
            state, tasks = run_dag(path, "shop_mail")
    finally:
        controller.stop()
    assert state == "failed" and tasks["check_enough_orders"][0] == "failed"
    (mail,) = received
    assert mail["To"] == "owners@example.com"
    assert mail["Subject"] == "shop_mail failed: check_enough_orders"


PER_SOURCE_DAG = """
from dbtflow import DbtProject
from dbtflow.airflow.elt import FreshnessGate, elt_dag
from dbtflow.airflow.notify import WebhookNotifier

dag = elt_dag(
    "shop_per_source",
    DbtProject({project!r}),
    freshness=FreshnessGate(per_source=True, poke_interval=1, timeout=3),
    notify_success=[WebhookNotifier({url!r})],
    notify_failure=[WebhookNotifier({url!r})],
)
"""


def test_per_source_gates_hold_back_only_the_models_of_stale_sources(shop: dict[str, Any]) -> None:
    old = datetime.now() - timedelta(days=2)
    with duckdb.connect(str(shop["warehouse"])) as con:
        con.execute("create schema raw")
        file = next((shop["inbox"] / "orders").glob("*.csv"))
        con.execute(f"create table raw.orders as select *, now() as _loaded_at from read_csv_auto('{file}')")
        file = next((shop["inbox"] / "customers").glob("*.csv"))
        con.execute(
            f"create table raw.customers as select *, ? as _loaded_at from read_csv_auto('{file}')", [old]
        )
    source = PER_SOURCE_DAG.format(project=str(shop["project"]), url=shop["hook"].url)
    with dag_file("shop_per_source", source) as path:
        dag = load_dag(path, "shop_per_source")
        assert dag.task_dict["dbt.stg_orders"].upstream_task_ids == {"fresh__raw__orders"}
        assert dag.task_dict["dbt.stg_customers"].upstream_task_ids == {"fresh__raw__customers"}
        state, tasks = run_dag(path, "shop_per_source")
    # The run completes: the fresh source's models were built, the stale one's were skipped.
    assert state == "success"
    assert tasks["fresh__raw__orders"][0] == "success" and tasks["dbt.stg_orders"][0] == "success"
    assert tasks["fresh__raw__customers"][0] == "skipped"
    assert tasks["dbt.stg_customers"][0] == "skipped" and tasks["dbt.fct_orders"][0] == "skipped"
    assert "main.stg_orders" in _tables(shop["warehouse"])
    assert "main.stg_customers" not in _tables(shop["warehouse"])
    (message,) = shop["hook"].messages
    assert message["state"] == "stale" and message["stale_sources"] == ["source.shop.raw.customers"]
