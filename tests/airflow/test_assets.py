"""Airflow assets of dbt relations: their names, what a split DAG waits for, and the events a run
emits (``dag.test()`` with real dbt on DuckDB): one per model, seed and snapshot built, with the
build's facts, and none for a failed or skipped node, whether its task is streamed or one
``dbt build`` task that fails."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from airflow.sdk import Asset

from dbtflow import DbtflowError, DbtProject
from dbtflow.airflow.assets import model_asset, upstream_assets
from dbtflow.project.relations import Relation, Warehouse, namespace_of, relation_parts
from postgres import ensure_local_server, psql

from conftest import AIRFLOW_HOME, EXAMPLE, copy_project
from dagtest import dag_file, load_dag

BROKEN_STG_BIKES = "select no_such_column from {{ ref('raw_bikes') }}\n"
#: What the broken project builds: everything but stg_bikes (failed) and bike_utilization (skipped).
BUILT = {
    "seed.bikeshare.raw_bikes", "seed.bikeshare.raw_stations", "seed.bikeshare.raw_trips",
    "model.bikeshare.stg_stations", "model.bikeshare.stg_trips", "model.bikeshare.dim_stations",
    "model.bikeshare.fct_trips", "model.bikeshare.station_daily_usage",
    "model.bikeshare.trips_microbatch", "snapshot.bikeshare.stations_snapshot",
}  # fmt: skip


def _uris(condition: Any) -> set[str]:
    return {a.uri for a in condition.objects}


def test_a_model_asset_names_its_relation(bikeshare_dir: Path, warehouse: Path) -> None:
    project = DbtProject(bikeshare_dir)
    asset = model_asset(project, "fct_trips")
    # OpenLineage's dataset URI: namespace duckdb://<absolute path>, name database.schema.table.
    assert asset.uri == f"duckdb:{warehouse.resolve()}/warehouse.main.fct_trips"
    assert asset == model_asset(project, "model.bikeshare.fct_trips")
    assert model_asset(project, "raw_trips").uri.endswith("/warehouse.main.raw_trips")
    with pytest.raises(DbtflowError, match="No model, seed or snapshot named 'int_trip_durations'"):
        model_asset(project, "int_trip_durations")  # ephemeral: no relation


def test_relation_naming_follows_openlineage() -> None:
    from openlineage.client.naming.dataset import Postgres

    assert relation_parts('"an""a"."main"."t"') == ('an"a', "main", "t")
    assert relation_parts("`proj`.`ds`.`t`") == ("proj", "ds", "t")
    postgres = Warehouse("postgres", namespace_of({"type": "postgres", "host": "db", "port": 5432}))
    relation = Relation(postgres, "analytics", "marts", "fct_orders")
    # As OpenLineage's own naming helper names the dataset; the asset is its URI, namespace/name.
    named = Postgres(host="db", port="5432", database="analytics", schema="marts", table="fct_orders")
    assert (postgres.namespace, relation.dataset_name) == (named.get_namespace(), named.get_name())
    assert Asset(uri=relation.uri).uri == "postgres://db:5432/analytics.marts.fct_orders"
    # The AIP-60 form, for when Airflow's PostgreSQL provider (which rejects any other) is installed.
    assert relation.airflow_uri == "postgres://db:5432/analytics/marts/fct_orders"
    bigquery = Warehouse("bigquery", namespace_of({"type": "bigquery"}))
    assert Relation(bigquery, "proj", "ds", "t").uri == "bigquery://proj/ds/t"


def test_upstream_assets_of_a_split_project(bikeshare_dir: Path, library_dir: Path, warehouse: Path) -> None:
    bikeshare = DbtProject(bikeshare_dir)
    marts = _uris(upstream_assets(bikeshare, select="tag:marts"))
    # fct_trips reads stg_trips through the ephemeral int_trip_durations: it counts.
    assert {u.rsplit(".", 1)[1] for u in marts} == {"stg_bikes", "stg_stations", "stg_trips"}
    only_fct = _uris(upstream_assets(bikeshare, select="station_daily_usage"))
    assert {u.rsplit(".", 1)[1] for u in only_fct} == {"fct_trips", "dim_stations"}
    # A relationships test of fct_trips reads dim_stations: the test runs in this DAG, so it waits.
    tested = _uris(upstream_assets(bikeshare, select="+fct_trips"))
    assert {u.rsplit(".", 1)[1] for u in tested} == {"dim_stations"}
    with pytest.raises(DbtflowError, match="reads no model outside itself") as refused:
        upstream_assets(bikeshare, select="+station_daily_usage")
    assert "model_asset" in str(refused.value)

    library = DbtProject(library_dir)
    marts = _uris(upstream_assets(library, select="tag:marts"))
    # A versioned model (its latest version) and a model of a local package count too.
    names = {u.rsplit(".", 1)[1] for u in marts}
    assert names == {"calendar_months", "dim_members_v2", "stg_books", "stg_loans"}
    assert model_asset(library, "dim_members").uri in marts


def _event_rows(dag_id: str) -> list[tuple[str, str, str]]:
    """The asset events of the DAG's runs: (asset URI, the event's extra as stored, its task)."""
    with closing(sqlite3.connect(AIRFLOW_HOME.database)) as con:
        return con.execute(
            "select a.uri, e.extra, e.source_task_id from asset_event e join asset a on a.id = e.asset_id"
            " where e.source_dag_id = ?",
            (dag_id,),
        ).fetchall()


def _events(dag_id: str) -> dict[str, dict[str, Any]]:
    """The asset events of the DAG's runs: asset URI -> the event's extra."""
    found: dict[str, dict[str, Any]] = {}
    for uri, extra, _ in _event_rows(dag_id):
        assert uri not in found, f"two events for {uri}"
        value = json.loads(extra)
        found[uri] = json.loads(value) if isinstance(value, str) else value
    return found


def _sources(dag_id: str) -> dict[str, str]:
    """The task that emitted each asset event of the DAG's runs: asset URI -> task id."""
    return {uri: source for uri, _, source in _event_rows(dag_id)}


class _Receiver(BaseHTTPRequestHandler):
    """Keeps the JSON body of every POST (an OpenLineage HTTP transport's events)."""

    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _clear_openlineage_config() -> None:
    from airflow.providers.openlineage import conf

    for value in vars(conf).values():
        if hasattr(value, "cache_clear"):
            value.cache_clear()


@contextmanager
def _openlineage_listener_left_behind_removed() -> Iterator[None]:
    """Unregister, at the end, the OpenLineage listener registered inside: its plugin decides
    whether it has a listener when it is first imported, so a worker whose plugins were first
    loaded here, with OpenLineage configured, kept the listener for every later ``dag.test()``;
    each task's listener then forked a child that waited its 10 s timeout for a connection from
    the in-process API (a later test ran for many minutes, 2026-12-04). Airflow's listener
    managers (core and task SDK) are looked at only where they exist: none is created here."""
    from airflow.listeners import listener as core
    from airflow.sdk import listener as sdk

    def openlineage_listeners() -> set[tuple[Any, Any]]:
        return {
            (manager, plugin)
            for manager in (
                m.get_listener_manager() for m in (core, sdk) if m.get_listener_manager.cache_info().currsize
            )
            for plugin in manager.pm.get_plugins()
            if type(plugin).__name__ == "OpenLineageListener"
        }

    before = openlineage_listeners()
    try:
        yield
    finally:
        for manager, plugin in openlineage_listeners() - before:
            manager.pm.unregister(plugin)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, airflow_db: Path) -> Iterator[dict[str, Any]]:
    """One ``dag.test()`` run per pattern of a project with a broken model, with OpenLineage's
    HTTP transport pointed at a local receiver: dag id -> (project, run, task states)."""
    root = tmp_path_factory.mktemp("assets")
    project = copy_project(EXAMPLE, root / "bikeshare")
    (project / "models" / "staging" / "stg_bikes.sql").write_text(BROKEN_STG_BIKES)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    transport = {"type": "http", "url": f"http://127.0.0.1:{server.server_port}", "endpoint": "lineage"}
    found: dict[str, Any] = {"project": DbtProject(project), "events": _Receiver.received}
    with pytest.MonkeyPatch.context() as patch, _openlineage_listener_left_behind_removed():
        patch.setenv("BIKESHARE_DUCKDB", str(root / "assets.duckdb"))
        patch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps(transport))
        patch.setenv("AIRFLOW__OPENLINEAGE__NAMESPACE", "dbtflow_tests")
        _clear_openlineage_config()
        try:
            for pattern in ("per_model", "single"):
                dag_id = f"assets_{pattern}"
                source = f"""
                    from dbtflow import DbtProject, dbt_dag
                    dag = dbt_dag(DbtProject({str(project)!r}), dag_id={dag_id!r}, pattern={pattern!r})
                """
                with dag_file(dag_id, source) as path:
                    run = load_dag(path, dag_id).test()
                    found[pattern] = (run, {ti.task_id: str(ti.state) for ti in run.get_task_instances()})
            yield found
        finally:
            server.shutdown()
            patch.undo()
            _clear_openlineage_config()


@pytest.mark.parametrize("pattern", ["per_model", "single"])
def test_a_run_emits_one_event_per_node_built(runs: dict[str, Any], pattern: str) -> None:
    dag_id = f"assets_{pattern}"
    run, states = runs[pattern]
    # The run is as red as dbt build. Single: its asset task (a teardown) emitted what the failed
    # build task built; per_model: each node task that succeeded emitted its own node's event.
    assert str(run.state) == "failed", states
    if pattern == "single":
        assert states["dbt_assets"] == "success", states
    else:
        assert "dbt_assets" not in states, states
    project = runs["project"]
    events = _events(dag_id)
    expected = {model_asset(project, uid).uri: uid for uid in BUILT}
    assert set(events) == set(expected), sorted(events)
    for uri, extra in events.items():
        assert extra["unique_id"] == expected[uri]
        assert extra["status"] == "success"
        assert extra["dag_id"] == dag_id and extra["run_id"] == run.run_id
        assert extra["execution_time_s"] >= 0
        assert isinstance(extra["invocation_id"], str) and len(extra["invocation_id"]) == 36
        if pattern == "per_model":  # from the node's own task (run in-process by dag.test())
            assert _sources(dag_id)[uri] == extra["unique_id"].rsplit(".", 1)[1], uri
    # DuckDB reports the rows a seed loads and a table model writes.
    assert events[model_asset(project, "raw_trips").uri]["rows_affected"] == 120


@pytest.mark.parametrize("pattern", ["per_model", "single"])
def test_openlineage_events_per_node(runs: dict[str, Any], pattern: str) -> None:
    dag_id = f"assets_{pattern}"
    mine = [
        e
        for e in runs["events"]
        if e["job"]["name"].startswith(f"{dag_id}.") and "." in e["job"]["name"][len(dag_id) + 1 :]
    ]
    by_node: dict[str, list[str]] = {}
    for event in mine:
        by_node.setdefault(event["job"]["name"][len(dag_id) + 1 :], []).append(event["eventType"])
    for uid in BUILT:
        assert sorted(by_node.get(uid, [])) == ["COMPLETE", "START"], (uid, by_node.get(uid))
    assert sorted(by_node["model.bikeshare.stg_bikes"]) == ["FAIL", "START"]
    assert "model.bikeshare.bike_utilization" not in by_node  # skipped: it never ran
    assert any(uid.startswith("test.") for uid in by_node)  # tests are nodes too
    fct = next(
        e
        for e in mine
        if e["job"]["name"] == f"{dag_id}.model.bikeshare.fct_trips" and e["eventType"] == "COMPLETE"
    )
    namespace = f"duckdb://{Path(str(runs['project'].path.parent / 'assets.duckdb')).resolve()}"
    assert fct["outputs"] == [
        {"namespace": namespace, "name": "assets.main.fct_trips", "facets": {}, "outputFacets": {}}
    ]
    # fct_trips reads stg_trips through the ephemeral int_trip_durations.
    assert {i["name"] for i in fct["inputs"]} == {"assets.main.stg_trips"}
    assert "int_trip_durations" in fct["job"]["facets"]["sql"]["query"]
    parent = fct["run"]["facets"]["parent"]
    # Both patterns build in the task dbt_build (the producer, or the single task).
    assert parent["job"]["namespace"] == "dbtflow_tests"
    assert parent["job"]["name"] == f"{dag_id}.dbt_build"
    assert parent["root"]["job"]["name"] == dag_id


def test_assets_false_leaves_the_asset_task_out(bikeshare_dir: Path, warehouse: Path) -> None:
    from dbtflow import dbt_dag

    with_assets = dbt_dag(DbtProject(bikeshare_dir), dag_id="with_assets", pattern="single")
    without = dbt_dag(DbtProject(bikeshare_dir), dag_id="no_assets", pattern="single", assets=False)
    assert with_assets.get_task("dbt_assets").is_teardown
    assert "dbt_assets" not in without.task_ids


PG_DATABASE = "dbtflow_assets_pg"
PG_PROFILE = f"""
pg_assets:
  target: dev
  outputs:
    dev:
      type: postgres
      host: 127.0.0.1
      port: 5432
      user: postgres
      password: unused-with-trust-auth
      dbname: {PG_DATABASE}
      schema: analytics
      threads: 2
"""


def test_a_postgres_build_emits_events_on_openlineage_named_assets(tmp_path: Path, airflow_db: Path) -> None:
    """On PostgreSQL the assets are OpenLineage's ``postgres://host:port/database.schema.table``."""
    ensure_local_server()
    psql(f"drop database if exists {PG_DATABASE}")
    psql(f"create database {PG_DATABASE}")
    project = tmp_path / "pg_assets"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: pg_assets\nversion: '1.0'\nprofile: pg_assets\n")
    (project / "profiles.yml").write_text(PG_PROFILE)
    (project / "models" / "orders.sql").write_text("select 1 as id\n")
    (project / "models" / "fct_orders.sql").write_text("select id from {{ ref('orders') }}\n")
    source = f"""
        from dbtflow import DbtProject, dbt_dag
        dag = dbt_dag(DbtProject({str(project)!r}), dag_id="assets_pg", pattern="single")
    """
    with dag_file("assets_pg", source) as path:
        run = load_dag(path, "assets_pg").test()
    assert str(run.state) == "success"
    expected = {
        f"postgres://127.0.0.1:5432/{PG_DATABASE}.analytics.{name}": f"model.pg_assets.{name}"
        for name in ("orders", "fct_orders")
    }
    uri = model_asset(DbtProject(project), "fct_orders").uri
    assert uri == f"postgres://127.0.0.1:5432/{PG_DATABASE}.analytics.fct_orders"
    events = _events("assets_pg")
    assert {u: e["unique_id"] for u, e in events.items()} == expected, events
    assert all(e["run_id"] == run.run_id for e in events.values())
