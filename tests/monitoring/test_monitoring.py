"""Run-time history and growth trends: synthetic histories, and a real history of runs in which
one model's input table grows every run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import duckdb
import pytest

from dbtflow.monitoring.history import History, NodeRun
from dbtflow.monitoring.trends import theil_sen, trends

from conftest import run_cli

DAY = 86400.0


def _runs(uid: str, times: list[float]) -> list[NodeRun]:
    return [
        NodeRun("d", f"r{i}", "t", 1, uid, "success", started_at=1_700_000_000 + i * DAY, execution_s=s)
        for i, s in enumerate(times)
    ]


def test_theil_sen_ignores_one_outlier() -> None:
    assert theil_sen([0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]) == 1.0
    assert theil_sen([0, 1, 2, 3, 4, 5], [1, 2, 3, 400, 5, 6]) == 1.0


def test_a_growing_model_is_flagged_and_noisy_flat_ones_are_not() -> None:
    rng = random.Random(7)
    growing = [10 + 0.8 * i + rng.uniform(-1, 1) for i in range(20)]
    noisy_flat = [10 + rng.uniform(-3, 3) for _ in range(20)]
    flat_with_spike = [10.0] * 19 + [60.0]
    history = [*_runs("model.p.grows", growing), *_runs("model.p.flat", noisy_flat)]
    history += _runs("model.p.spike", flat_with_spike)
    found = {t.unique_id: t for t in trends(history)}
    assert found["model.p.grows"].growing
    assert 0.6 < found["model.p.grows"].slope_per_run_s < 1.0
    assert abs(found["model.p.grows"].slope_per_week_s - 7 * found["model.p.grows"].slope_per_run_s) < 0.5
    assert not found["model.p.flat"].growing
    assert not found["model.p.spike"].growing
    # A failed run is not a timing.
    failed = NodeRun("d", "x", "t", 1, "model.p.flat", "error", 1_800_000_000, 999.0)
    with_failure = {t.unique_id: t for t in trends([*history, failed])}
    assert with_failure["model.p.flat"].median_s == found["model.p.flat"].median_s


# The growing model runs after the steady one, so that its growing work does not slow the steady
# one down by competing for the CPU.
GROWER = """{{ config(materialized='table') }}
-- depends_on: {{ ref('steady') }}
select count(*) as pairs
from main.events as a, main.events as b
where (a.id + b.id) % 7 = 0
"""
STEADY = "{{ config(materialized='table') }}\nselect count(*) as n from range(1000)\n"


def test_a_model_whose_input_grows_every_run_is_flagged_from_real_runs(tmp_path: Path) -> None:
    project = tmp_path / "growth"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: growth\nprofile: growth\n")
    database = tmp_path / "growth.duckdb"
    (project / "profiles.yml").write_text(
        f"growth:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: '{database}'\n"
    )
    (project / "models" / "grower.sql").write_text(GROWER)
    (project / "models" / "steady.sql").write_text(STEADY)
    history_url = f"sqlite:///{tmp_path / 'history.db'}"
    env = {"DBTFLOW_HISTORY_URL": history_url}
    for run in range(6):
        # The source system delivers more events every day.
        with duckdb.connect(str(database)) as con:
            con.execute("create table if not exists main.events (id bigint)")
            con.execute(
                "insert into main.events select range from range(?, ?)", [run * 4000, (run + 1) * 4000]
            )
        done = run_cli("run", str(project), "--progress", "none", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
    runs = History(history_url).runs(dag_id="dbtflow_growth")
    assert {r.unique_id for r in runs} == {"model.growth.grower", "model.growth.steady"}
    # One record per invocation that built the model: one per run here (a node rebuilt in a
    # run, by a retry or a recovery, would add its own record to that run).
    grower_runs = {r.run_id for r in runs if r.unique_id == "model.growth.grower"}
    assert len(grower_runs) == 6
    timings = run_cli("timings", "--dag", "dbtflow_growth", "--format", "json", "--history-url", history_url)
    assert timings.returncode == 0, timings.stderr
    report = json.loads(timings.stdout)
    assert [t["unique_id"] for t in report["growing"]] == ["model.growth.grower"]
    text = run_cli("timings", "--history-url", history_url).stdout
    assert "Growing:" in text and "model.growth.grower: +" in text
    page = run_cli(
        "report", "--dag", "dbtflow_growth", "--project", str(project), "--history-url", history_url,
        "--out", str(tmp_path / "report"), env=env,
    )  # fmt: skip
    assert page.returncode == 0, page.stderr
    index = (tmp_path / "report" / "index.html").read_text()
    assert "model.growth.grower" in index and "Critical path" in index
    for plot in ("durations.png", "growers.png", "gantt.png"):
        assert (tmp_path / "report" / plot).read_bytes().startswith(b"\x89PNG")


def test_critical_path_follows_the_parent_that_finished_last() -> None:
    from dbtflow.monitoring.report import critical_path
    from dbtflow.project.graph import graph_from_manifest, load_manifest_file

    from conftest import FIXTURES

    graph = graph_from_manifest(load_manifest_file(FIXTURES / "manifest_bikeshare_dbt110.json"))
    timeline = {  # unique id -> (start, seconds)
        "seed.bikeshare.raw_trips": (0, 1), "seed.bikeshare.raw_stations": (0, 3),
        "model.bikeshare.stg_trips": (1, 1), "model.bikeshare.stg_stations": (3, 1),
        "model.bikeshare.fct_trips": (2, 1), "model.bikeshare.dim_stations": (4, 1),
        "model.bikeshare.station_daily_usage": (5, 2),
    }  # fmt: skip
    runs = [NodeRun("d", "r", "t", 1, uid, "success", start, secs) for uid, (start, secs) in timeline.items()]
    assert critical_path(runs, graph) == [
        "seed.bikeshare.raw_stations",
        "model.bikeshare.stg_stations",
        "model.bikeshare.dim_stations",
        "model.bikeshare.station_daily_usage",
    ]


class OtlpReceiver:
    """A local OTLP/HTTP logs endpoint that decodes what it receives."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

        self.records: list[dict[str, object]] = []
        records = self.records

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                request = ExportLogsServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                for resource_logs in request.resource_logs:
                    service = {a.key: a.value.string_value for a in resource_logs.resource.attributes}
                    for scope_logs in resource_logs.scope_logs:
                        for log in scope_logs.log_records:
                            attributes = {a.key: _any_value(a.value) for a in log.attributes}
                            records.append(
                                {"path": self.path, "service": service.get("service.name"),
                                 "severity": log.severity_text, "body": log.body.string_value, **attributes}
                            )  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _any_value(value: object) -> object:
    kind = value.WhichOneof("value")  # type: ignore[attr-defined]
    return getattr(value, kind) if kind else None


def test_dbt_events_reach_an_otlp_receiver_and_json_lines(
    bikeshare_dir: Path, warehouse: Path, airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagtest import dag_file, run_dag

    receiver = OtlpReceiver()
    lines = tmp_path / "dbt-events.jsonl"
    monkeypatch.setenv("DBTFLOW_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("DBTFLOW_LOG_JSON", str(lines))
    source = f"""
        from dbtflow import DbtProject, dbt_dag
        dag = dbt_dag(DbtProject({str(bikeshare_dir)!r}), dag_id="forwarded", pattern="single")
    """
    try:
        with dag_file("forwarded", source) as path:
            state, _ = run_dag(path, "forwarded")
    finally:
        receiver.server.shutdown()
    assert state == "success"
    results = ("LogModelResult", "LogSeedResult")
    finished = [r for r in receiver.records if r.get("dbt.event") in results]
    assert {r["dbt.unique_id"] for r in finished} >= {"model.bikeshare.fct_trips", "seed.bikeshare.raw_trips"}
    fct = next(r for r in finished if r["dbt.unique_id"] == "model.bikeshare.fct_trips")
    assert fct["path"] == "/v1/logs" and fct["service"] == "dbtflow" and fct["severity"] == "INFO"
    assert fct["airflow.dag_id"] == "forwarded" and fct["airflow.task_id"] == "dbt_build"
    assert fct["airflow.try_number"] == 1 and fct["airflow.run_id"]
    assert "fct_trips" in str(fct["body"])
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    assert len(records) == len(receiver.records)
    done = next(
        r for r in records if r["event"] == "LogModelResult" and r["unique_id"] == "model.bikeshare.fct_trips"
    )
    assert (
        done["dag_id"] == "forwarded" and done["duration_s"] is not None and done["timestamp"].endswith("Z")
    )


def test_the_history_lives_in_postgresql_when_configured(tmp_path: Path) -> None:
    from postgres import ensure_local_server, psql

    ensure_local_server()
    psql("drop database if exists dbtflow_history")
    psql("create database dbtflow_history")
    url = "postgresql+psycopg2://postgres@127.0.0.1:5432/dbtflow_history"
    project = tmp_path / "tiny"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: tiny\nprofile: tiny\n")
    warehouse = tmp_path / "t.duckdb"
    (project / "profiles.yml").write_text(
        f"tiny:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: '{warehouse}'\n"
    )
    (project / "models" / "one.sql").write_text("select 1 as x\n")
    done = run_cli(
        "run", str(project), "--pattern", "single", "--progress", "none", env={"DBTFLOW_HISTORY_URL": url}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = History(url).runs(dag_id="dbtflow_tiny_single")
    assert run.unique_id == "model.tiny.one" and run.status == "success" and run.task_id == "dbt_build"
    assert "1" in psql("select count(*) from dbtflow_node_runs", database="dbtflow_history")
