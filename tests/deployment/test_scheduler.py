"""A real scheduler (LocalExecutor on SQLite; runs triggered through the REST API): streamed node
tasks never take a worker and end within about a second of dbt finishing their node; a failure
marks only dependants; `dbtflow retry DAG --api-url` re-runs only the failed tasks and their
downstream (per_model and single); SIGKILLing the process running dbt mid-model recovers through
Airflow's retries with whole tables and no node built twice at once; a second run of a DAG
waits for the first; and the run's asset events (one per node built, with the build's facts, none
for a failed node) start a DAG scheduled on a model's asset and the second part of a project split
into two DAGs by tag; Airflow's backfill of a daily microbatch DAG runs each day once, building
that day's rows; a DAG run past its Airflow Deadline Alert is reported while it runs. The
scenarios share one deployment; runs of projects with warehouses of their own overlap."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from scheduler_scenarios import (
    DEADLINE_DAG,
    asset_events,
    backfill,
    deadline_alert,
    own_warehouse,
    retry_via_api,
    run_started_by,
)

from dbtflow.monitoring.history import History
from dbtflow.state.invocations import InvocationState
from dbtflow.state.store import StateStore
from dbtflow.testing.deployment import PARSE_ONCE, airflow_deployment

from conftest import (
    EXAMPLE,
    SLOW_SQL,
    SLOW_WHILE_FLAGGED_SQL,
    STG_TRIPS_AND_DOWNSTREAM,
    built_since,
    copy_project,
    overlapping_builds,
    pid_building,
    table_counts,
)
from webhook import Webhook

DAG = """# airflow DAG with dbtflow
from datetime import timedelta
from dbtflow import DbtProject, dbt_dag
dag = dbt_dag(
    DbtProject({project!r}, vars={{"slow_n": 40000}}),
    dag_id={dag_id!r},
    default_args={{"retries": {retries}, "retry_delay": timedelta(seconds=2)}},
    {extra}
)
"""
SLOW = "model.bikeshare.slow_model"
#: A DAG scheduled on one model's asset, in the file of the DAG that builds it (one parse for both).
DOWNSTREAM = """
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from dbtflow import model_asset
project = DbtProject({project!r}, vars={{"slow_n": 40000}})
with DAG("sched_downstream", schedule=[model_asset(project, "fct_trips")]):
    EmptyOperator(task_id="read_fct_trips")
"""
#: A microbatch DAG on daily data intervals, in the good DAG's file (one parse): only backfilled.
BACKFILL = """
from datetime import datetime, timezone
from airflow.timetables.interval import CronDataIntervalTimetable
dbt_dag(
    project, dag_id="sched_backfill", select="+trips_microbatch",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=datetime(2024, 5, 1, tzinfo=timezone.utc), end_date=datetime(2024, 5, 4, tzinfo=timezone.utc),
)
"""
SPLIT = """# airflow DAGs: one project split by tag, the marts part scheduled on what it reads
from dbtflow import DbtProject, dbt_dag, upstream_assets
project = DbtProject({project!r})
staging = dbt_dag(project, dag_id="split_staging", pattern="single", select=["tag:raw", "tag:staging"])
marts = dbt_dag(
    project, dag_id="split_marts", pattern="single", select="tag:marts",
    schedule=upstream_assets(project, select="tag:marts"),
)
"""
#: The models, seeds and snapshot of the example: one asset event each per good run.
ASSET_NODES = {
    "seed.bikeshare.raw_bikes", "seed.bikeshare.raw_stations", "seed.bikeshare.raw_trips",
    "model.bikeshare.stg_bikes", "model.bikeshare.stg_stations", "model.bikeshare.stg_trips",
    "model.bikeshare.dim_stations", "model.bikeshare.fct_trips", "model.bikeshare.station_daily_usage",
    "model.bikeshare.bike_utilization", "model.bikeshare.trips_microbatch",
    "snapshot.bikeshare.stations_snapshot",
}  # fmt: skip


def _dag(project: Path, dag_id: str, retries: int = 0, extra: str = "") -> str:
    return DAG.format(project=str(project), dag_id=dag_id, retries=retries, extra=extra)


def _seconds(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@contextmanager
def _closing(hook: Webhook) -> Iterator[None]:
    try:
        yield
    finally:
        hook.server.shutdown()


# Many scenarios on one deployment (one start-up); on a loaded machine more than the default 600 s.
@pytest.mark.timeout(1500)
def test_streamed_dag_under_a_real_scheduler(tmp_path: Path) -> None:
    good = copy_project(EXAMPLE, tmp_path / "good")
    broken = copy_project(EXAMPLE, tmp_path / "broken")
    (broken / "models" / "staging" / "stg_bikes.sql").write_text("select nope from {{ ref('raw_bikes') }}\n")
    dags = tmp_path / "dags"
    dags.mkdir()
    single = copy_project(EXAMPLE, tmp_path / "single")
    (single / "models" / "staging" / "stg_trips.sql").write_text("select nope from {{ ref('raw_trips') }}\n")
    killed = copy_project(EXAMPLE, tmp_path / "killed")
    (killed / "models" / "marts" / "slow_model.sql").write_text(
        SLOW_WHILE_FLAGGED_SQL + "-- after {{ ref('fct_trips') }}\n"
    )
    slow_flag = tmp_path / "slow.flag"
    # Each project but the good one writes a warehouse of its own: their runs overlap its backfill.
    for project in (broken, single, killed):
        own_warehouse(project, tmp_path / f"{project.name}.duckdb")
    (dags / "good.py").write_text(_dag(good, "sched_good") + DOWNSTREAM.format(project=str(good)) + BACKFILL)
    # The DAG files used once the first run is under way come once its DAG is parsed: each file's
    # first parse runs dbt, two at a time, in no set order.
    later = {
        "broken.py": _dag(broken, "sched_broken"),
        "single.py": _dag(single, "sched_single", extra='pattern="single",'),
        "killed.py": _dag(killed, "sched_killed", retries=2),
    }
    # The split project writes a warehouse of its own: its assets are its own.
    split = copy_project(EXAMPLE, tmp_path / "split")
    own_warehouse(split, tmp_path / "split.duckdb")
    (dags / "split.py").write_text(SPLIT.format(project=str(split)))
    # A DAG run with an Airflow Deadline Alert, and a slow model with an expected duration.
    late = copy_project(EXAMPLE, tmp_path / "late")
    own_warehouse(late, tmp_path / "late.duckdb")
    (late / "models" / "marts" / "slow_model.sql").write_text(SLOW_SQL)
    hook = Webhook()
    later["deadlines.py"] = DEADLINE_DAG.format(project=str(late), url=hook.url)
    env = {
        **PARSE_ONCE,
        "SLOW_FLAG": str(slow_flag),
        "DBTFLOW_HOME": str(tmp_path / "dbtflow"),
        "DBTFLOW_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "BIKESHARE_DUCKDB": str(tmp_path / "warehouse.duckdb"),
        # Each DAG file parses its own copy of the project with dbt the first time (then cached):
        # on a loaded machine that takes longer than Airflow's 30 s default.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "180",
        "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "240",
    }
    (tmp_path / "dbtflow").mkdir()
    history = History(f"sqlite:///{tmp_path / 'dbtflow' / 'history.db'}")
    with airflow_deployment(tmp_path / "airflow", dags, env) as airflow, _closing(hook):
        airflow.wait_for_dag("sched_good", timeout=600)
        for name, source in later.items():
            (dags / name).write_text(source)
        # DAGs scheduled on assets get runs only while unpaused.
        for dag_id in ("sched_downstream", "split_marts"):
            airflow.wait_for_dag(dag_id, timeout=600)
            airflow.unpause(dag_id)
        # dbtflow's plugin (run-time reports) loads once and cleanly.
        plugins = airflow.api.get("/api/v2/plugins", params={"limit": 100}).json()["plugins"]
        assert [p["name"] for p in plugins].count("dbtflow") == 1, plugins
        plugin_errors = airflow.api.get("/api/v2/plugins/importErrors").json()
        assert plugin_errors["total_entries"] == 0, plugin_errors
        run_id, state, seconds = airflow.trigger_and_wait("sched_good")
        assert state == "success", airflow.query("select task_id, state from task_instance")
        tis = airflow.query(
            "select task_id, state, queued_dttm, end_date, start_date from task_instance"
            " where dag_id = ? and run_id = ?",
            "sched_good",
            run_id,
        )
        by_task = {t[0]: t for t in tis}
        assert all(t[1] == "success" for t in tis), tis
        # The producer ran on a worker; every node task started and ended in the triggerer, and
        # so did the asset task: the producer emitted every build's event, nothing was owed.
        assert by_task["dbt_build"][2] is not None, by_task
        node_tasks = [t for t in tis if t[0] != "dbt_build"]
        assert node_tasks and all(t[2] is None for t in node_tasks), node_tasks

        # Node tasks wait from the start of the run and end from dbt's results, not after them:
        # each task that was waiting when dbt recorded its node ended after that (how soon is
        # make bench's tail, not a test's: timings on a shared machine are not asserted).
        store = StateStore(env["DBTFLOW_STATE_URL"])
        with store.engine.connect() as conn:
            when = dict(
                conn.exec_driver_sql(
                    "select unique_id, recorded_at from dbtflow_results where run_id = ?", (run_id,)
                ).fetchall()
            )
        lags = {}
        for task_id, _, _, end, start in node_tasks:
            uid = next((u for u in when if u.split(".")[-1] == task_id), None)
            if uid is not None and _seconds(start) < when[uid]:
                lags[task_id] = round(_seconds(end) - when[uid], 2)
        assert len(lags) >= 3 and all(lag >= 0 for lag in lags.values()), lags
        print(f"\ntrigger to end of run: {seconds:.1f}s; waiting tasks ended after dbt's result: {lags}")

        # One trigger of the first part of the split project (checked at the end).
        split_run = airflow.trigger("split_staging")
        # One asset event per node built, with the build's facts (REST API).
        events = asset_events(airflow, "sched_good", run_id)
        assert {e["extra"]["unique_id"] for e in events} == ASSET_NODES, events
        invocations = {i.id for i in store.invocations_of_run("sched_good", run_id)}
        for event in events:
            # Each node task emitted its own node's event as it ended in the triggerer
            # (dbtflow.airflow.node_assets), not dbt_build at the end.
            assert event["source_task_id"] == event["extra"]["unique_id"].rsplit(".", 1)[1], event
            extra = event["extra"]
            assert extra["status"] == "success" and extra["execution_time_s"] >= 0, event
            assert (extra["dag_id"], extra["run_id"]) == ("sched_good", run_id), event
            assert extra["invocation_id"] in invocations, (event, invocations)
            assert event["uri"].startswith("duckdb:"), event
            assert event["uri"].endswith("." + extra["unique_id"].rsplit(".", 1)[1]), event
        # The DAG scheduled on fct_trips's asset gets a run from this run's event.
        downstream = run_started_by(airflow, "sched_downstream", "sched_good", run_id)
        assert airflow.wait_for_run("sched_downstream", downstream["dag_run_id"]) == "success"
        assert downstream["run_type"] == "asset_triggered", downstream

        # Airflow's backfill of three days and the deadline alert's DAG (both checked before the
        # scheduler is killed), while the broken, single and killed DAGs run: each of those
        # writes a warehouse of its own.
        pool = ThreadPoolExecutor(2)
        aside = [pool.submit(backfill, airflow, tmp_path / "warehouse.duckdb")]
        aside.append(pool.submit(deadline_alert, airflow, hook))

        airflow.wait_for_dag("sched_broken", timeout=600)
        run_id, state, _ = airflow.trigger_and_wait("sched_broken")
        assert state == "failed"
        states = dict(
            airflow.query(
                "select task_id, state from task_instance where dag_id = ? and run_id = ?",
                "sched_broken",
                run_id,
            )
        )
        assert states["stg_bikes"] == "failed"
        # Airflow's triggerer ends it upstream_failed through dbtflow's handler (airflow/upstream_failed.py).
        assert states["bike_utilization"] == "upstream_failed" and states["dbt_build"] == "failed"
        assert states["fct_trips"] == "success" and states["station_daily_usage"] == "success"
        # Nothing is emitted for the failed node or its skipped dependant.
        broken_events = asset_events(airflow, "sched_broken", run_id)
        emitted = {e["extra"]["unique_id"] for e in broken_events}
        # The producer failed; the node tasks that succeeded emitted their own events.
        assert all(e["source_task_id"] == e["extra"]["unique_id"].rsplit(".", 1)[1] for e in broken_events), (
            broken_events
        )
        assert emitted == ASSET_NODES - {"model.bikeshare.stg_bikes", "model.bikeshare.bike_utilization"}

        # Recovery: fix the model, then `dbtflow retry` through the deployment's REST API.
        (broken / "models" / "staging" / "stg_bikes.sql").write_text(
            (good / "models" / "staging" / "stg_bikes.sql").read_text()
        )
        before = [r for r in history.runs("sched_broken") if r.run_id == run_id]
        outcome = retry_via_api(airflow.api_url, "sched_broken", tmp_path)
        assert outcome["run_id"] == run_id and outcome["state"] == "success", outcome
        tries = {t["task_id"]: (t["state"], t["try_number"]) for t in outcome["tasks"]}
        assert tries["stg_bikes"] == ("success", 2) and tries["fct_trips"] == ("success", 1), tries
        again = built_since(before, [r for r in history.runs("sched_broken") if r.run_id == run_id])
        assert {u for u in again if u.startswith("model.")} == {
            "model.bikeshare.stg_bikes",
            "model.bikeshare.bike_utilization",
        }, again

        # The single pattern: its one task fails; the retry runs `dbt retry` (only what failed).
        airflow.wait_for_dag("sched_single", timeout=600)
        run_id, state, _ = airflow.trigger_and_wait("sched_single")
        assert state == "failed"
        (single / "models" / "staging" / "stg_trips.sql").write_text(
            (good / "models" / "staging" / "stg_trips.sql").read_text()
        )
        before = [r for r in history.runs("sched_single") if r.run_id == run_id]
        outcome = retry_via_api(airflow.api_url, "sched_single", tmp_path)
        # The dbt_assets teardown runs again after the retried task, as any teardown does.
        assert sorted((t["task_id"], t["try_number"]) for t in outcome["tasks"]) == [
            ("dbt_assets", 2),
            ("dbt_build", 2),
        ]
        again = built_since(before, [r for r in history.runs("sched_single") if r.run_id == run_id])
        assert {u for u in again if u.startswith("model.")} == STG_TRIPS_AND_DOWNSTREAM, again

        # SIGKILL the process running dbt while it builds the slow model.
        airflow.wait_for_dag("sched_killed", timeout=600)
        slow_flag.touch()
        run_id = airflow.trigger("sched_killed")
        pid = pid_building(store, "sched_killed", run_id, SLOW)
        os.kill(pid, signal.SIGKILL)
        slow_flag.unlink()  # the retry's build is quick
        state = airflow.wait_for_run("sched_killed", run_id)
        assert state == "success", airflow.tasks("sched_killed", run_id)
        records = [r for r in history.runs("sched_killed") if r.run_id == run_id]
        assert not overlapping_builds(records), overlapping_builds(records)
        assert [r.status for r in records if r.unique_id == SLOW] == ["success"]
        counts = table_counts(tmp_path / "killed.duckdb", ["slow_model", "fct_trips", "stg_trips"])
        assert counts["slow_model"] == 1 and counts["fct_trips"] == counts["stg_trips"] > 0, counts
        assert pid in {i.pid for i in store.invocations_of_run("sched_killed", run_id)}

        # SIGKILL the scheduler (with the LocalExecutor's workers, the task and dbt under it) and
        # the triggerer while dbt builds the slow model, then start them again (issue 23): the run
        # ends green, each node is built once, and the dead invocation is marked so.
        for scenario in aside:
            scenario.result()
        pool.shutdown()
        slow_flag.touch()
        run_id = airflow.trigger("sched_killed")
        pid_building(store, "sched_killed", run_id, SLOW)
        airflow.kill("scheduler")
        airflow.kill("triggerer")
        slow_flag.unlink()
        restarted = time.monotonic()
        airflow.start("scheduler")
        airflow.start("triggerer")
        state = airflow.wait_for_run("sched_killed", run_id)
        assert state == "success", airflow.tasks("sched_killed", run_id)
        # The restarted scheduler and triggerer ended their dead predecessors' jobs at start
        # (dbtflow.airflow.dead_jobs), so the killed dbt_build was reset and the waiting node
        # tasks taken over at once, not after Airflow's orphan check (300 s by default).
        for component, job_type in (("scheduler", "SchedulerJob"), ("triggerer", "TriggererJob")):
            logged = (airflow.home / f"{component}.log").read_text()
            assert f"dbtflow: ended {job_type} job(s)" in logged, component
        records = [r for r in history.runs("sched_killed") if r.run_id == run_id]
        builds = Counter(r.unique_id for r in records if r.status == "success")
        assert builds and max(builds.values()) == 1, builds
        assert builds[SLOW] == 1 and not overlapping_builds(records), records
        states = [i.state for i in store.invocations_of_run("sched_killed", run_id)]
        assert InvocationState.DIED in states, states
        print(
            f"\nkilled scheduler and triggerer: the run ended {time.monotonic() - restarted:.1f}s"
            " after the restart"
        )

        # Two runs triggered together: the second starts when the first has ended (max_active_runs=1).
        first, second = airflow.trigger("sched_good"), airflow.trigger("sched_good")
        assert airflow.wait_for_run("sched_good", second) == "success"
        runs = {r: airflow.api.get(f"/api/v2/dags/sched_good/dagRuns/{r}").json() for r in (first, second)}
        assert runs[second]["start_date"] >= runs[first]["end_date"], runs

        # The split project: one trigger of its staging part ran the marts part after it.
        assert airflow.wait_for_run("split_staging", split_run) == "success"
        marts_run = run_started_by(airflow, "split_marts", "split_staging", split_run)
        assert airflow.wait_for_run("split_marts", marts_run["dag_run_id"]) == "success"
        marts_runs = airflow._json("GET", "/api/v2/dags/split_marts/dagRuns")["dag_runs"]
        assert [r["dag_run_id"] for r in marts_runs] == [marts_run["dag_run_id"]], marts_runs
        split_tables = table_counts(
            tmp_path / "split.duckdb", ["stg_trips", "fct_trips", "station_daily_usage"]
        )
        assert all(n > 0 for n in split_tables.values()), split_tables
