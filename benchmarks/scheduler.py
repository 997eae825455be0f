"""Runs under a real scheduler: the four Airflow components, a DAG run triggered through the API.

``make bench`` (and ``--scheduler-load``) uses it to compare dbtflow's streamed per_model DAG
with Cosmos WATCHER on the same deployment (``dbtflow.testing.deployment``: LocalExecutor on
SQLite), measuring what the run costs each component, not only its wall time: Airflow's own
overhead competes with dbt for the same 2 cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.cosmos import cosmos_dag_source
from benchmarks.harness import BIN, COSMOS_VENV, THREADS, WORK, log, tree_cpu_seconds
from benchmarks.projects import Project, ensure_manifest, fresh_database
from benchmarks.scenarios import DBTFLOW_DAG, dbtflow_env

#: How long a scheduler-load run may take before it is measured as not finished.
SCHEDULER_LOAD_TIMEOUT_S = 1200.0


@dataclass
class SchedulerRun:
    """One DAG run under a real scheduler, with what it cost Airflow's own components."""

    #: From trigger to the end of the run, or to the time limit when it had not ended.
    seconds: float
    #: ``success``, ``failed``, or what was done when the time limit came.
    state: str
    #: CPU seconds of the scheduler (with its executor's workers) from trigger to end of the run.
    scheduler_cpu_s: float
    #: CPU seconds of the dag-processor over the same time.
    processor_cpu_s: float
    #: CPU seconds of the triggerer (where deferred tasks wait) over the same time.
    triggerer_cpu_s: float
    #: The dag-processor's own parse time of the DAG file ("Last Duration"), median of re-parses.
    parse_s: float | None
    #: The run's start to the end of the task that runs dbt (dbt's own work), from the metadata.
    build_s: float | None = None
    #: The end of the task that runs dbt to the end of the run: what Airflow adds after dbt.
    tail_s: float | None = None
    #: How many task instances the run has.
    tasks: int | None = None
    #: CPU seconds over the same time of each component's whole process tree, reaped children
    #: included (``harness.tree_cpu_seconds``); ``workers`` is the scheduler's tree without the
    #: scheduler process itself: the LocalExecutor's workers, the tasks and dbt.
    tree_cpu_s: dict[str, float] = field(default_factory=dict)


def _cpu_seconds(process: Any) -> float:
    """CPU time of a process and its live children."""
    import psutil

    total = 0.0
    for proc in [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


_STATS_ROW = re.compile(r"^dags-folder\s+(\S+\.py)\s+.*?\s(\d+\.\d+)s\s+\d{4}-\d\d-\d\dT", re.M)


def _parse_durations(log: Path, file_name: str) -> list[float]:
    """The dag-processor's "Last Duration" of the file, from each stats table it printed."""
    return [float(d) for f, d in _STATS_ROW.findall(log.read_text(errors="replace")) if f == file_name]


#: The kinds of DAG compared, and the task of each that runs dbt (its end: dbt is done).
PRODUCER_TASK = {"dbtflow": "dbt_build", "bash": "dbt_build", "cosmos_watcher": "dbt_producer_watcher"}

BASH_DAG = """# airflow DAG: one BashOperator task running plain dbt build
from datetime import datetime
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG
with DAG({dag_id!r}, schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    BashOperator(task_id="dbt_build", bash_command={command!r}, cwd={path!r})
"""


def bash_dag_source(project: Project, dag_id: str) -> str:
    path = str(project.path)
    command = f"{BIN / 'dbt'} build --threads {THREADS} --project-dir {path} --profiles-dir {path}"
    return BASH_DAG.format(dag_id=dag_id, command=command, path=path)


#: The components whose CPU the scheduler table reports.
COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")


def _tree_cpu(processes: dict[str, Any]) -> dict[str, float]:
    """Each component's tree CPU; the scheduler's split into itself and its workers."""
    import psutil

    out = {name: tree_cpu_seconds(processes[name].pid) for name in COMPONENTS}
    celery_workers = [name for name in processes if name.startswith("worker")]
    if celery_workers:  # CeleryExecutor: the tasks run under the Celery workers
        out["workers"] = sum(tree_cpu_seconds(processes[name].pid) for name in celery_workers)
        return out
    with contextlib.suppress(psutil.NoSuchProcess):
        own = psutil.Process(processes["scheduler"].pid).cpu_times()
        out["workers"] = out["scheduler"] - (own.user + own.system)
        out["scheduler"] = own.user + own.system
    return out


def _timeline(
    airflow: Any, dag_id: str, run_id: str, producer: str
) -> tuple[float | None, float | None, int]:
    """Build time (run start to the producer's end), tail (producer's end to run end), and how
    many task instances the run has."""

    def when(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    run = airflow.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()
    ends = {ti["task_id"]: when(ti["end_date"]) for ti in airflow.task_instances(dag_id, run_id)}
    start, end, built = when(run["start_date"]), when(run["end_date"]), ends.get(producer)
    build = (built - start).total_seconds() if built and start else None
    tail = (end - built).total_seconds() if built and end else None
    if built is not None:
        # What the tail is made of: the tasks that ended after the task that ran dbt.
        after = sorted(
            ((e - built).total_seconds(), task_id)
            for task_id, e in ends.items()
            if e is not None and e > built
        )
        last = ", ".join(f"{task_id} +{s:.1f}s" for s, task_id in after[-5:])
        log(f"{dag_id}: {len(after)} of {len(ends)} tasks ended after {producer}; the last: {last or '-'}")
    return build, tail, len(ends)


#: ``BENCH_KEEP=1``: keep every run's Airflow home, with its task instances in ``task_instances.json``.
KEEP = os.environ.get("BENCH_KEEP") == "1"
#: ``BENCH_PROFILE=DIR``: py-spy (``BENCH_PYSPY``, default ``py-spy`` on the PATH) records the
#: scheduler and the triggerer, with their children, during each measured run, as raw stacks in
#: DIR (``<dag_id>-<component>.txt``; ``python -m benchmarks.profile_shares`` sums them).
#: Samples count waits on the database as well; ``BENCH_PROFILE_GIL=1`` keeps only the samples
#: holding the GIL, close to the CPU time (the issue's goals are CPU).
PROFILE_DIR = os.environ.get("BENCH_PROFILE")
#: The machine's PostgreSQL server (trust auth), for ``--metadata postgres`` and ``celery``.
POSTGRES_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"
#: The machine's Redis, the CeleryExecutor's broker for ``--metadata celery``.
REDIS_BROKER = "redis://127.0.0.1:6379/8"


def postgres_url(name: str) -> str:
    """The URL of the PostgreSQL database ``metadata_database`` makes for ``name``."""
    return f"{POSTGRES_SERVER}/{re.sub(r'[^a-z0-9_]', '_', name.lower())[:60]}"


@contextlib.contextmanager
def metadata_database(metadata: str, name: str) -> Any:
    """``None`` for SQLite in the deployment's home, or the URL of a fresh PostgreSQL database
    (dropped afterwards) for ``postgres`` and ``celery``."""
    if metadata == "sqlite":
        yield None
        return
    import sqlalchemy as sa

    server = sa.create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    database = postgres_url(name).rsplit("/", 1)[1]
    try:
        with server.connect() as conn:
            conn.exec_driver_sql(f"drop database if exists {database} with (force)")
            conn.exec_driver_sql(f"create database {database}")
        yield f"{POSTGRES_SERVER}/{database}"
    finally:
        with server.connect() as conn:
            conn.exec_driver_sql(f"drop database if exists {database} with (force)")
        server.dispose()


def under_scheduler(
    project: Project,
    kind: str,
    timeout: float,
    *,
    warm: bool = True,
    metadata: str = "sqlite",
    parse_every_s: int | None = None,
) -> SchedulerRun:
    """One DAG run under a real scheduler, for ``dbtflow``, ``bash`` or ``cosmos_watcher``, measured
    after one unmeasured run of the same DAG (``warm``) unless told otherwise; Airflow's metadata
    in SQLite, or in PostgreSQL (``metadata="postgres"``), or the CeleryExecutor (two workers,
    PostgreSQL metadata, Redis broker: ``metadata="celery"``). The dag-processor re-parses the
    DAG file every ``parse_every_s`` seconds, by default as often as Airflow's default (30 s)."""
    from dbtflow.testing.deployment import Celery, airflow_deployment

    root = Path(tempfile.mkdtemp(prefix=f"sched-{kind}-", dir=WORK))
    dags = root / "dags"
    dags.mkdir()
    dag_id = f"{kind}_{project.path.name}"
    database = fresh_database(project)
    if kind == "dbtflow":
        (dags / f"{dag_id}.py").write_text(DBTFLOW_DAG.format(path=str(project.path), dag_id=dag_id))
        command = None
        env = {**dbtflow_env(project, database), "DBTFLOW_HOME": str(root / "dbtflow")}
    elif kind == "bash":
        (dags / f"{dag_id}.py").write_text(bash_dag_source(project, dag_id))
        command = None
        env = project.env(database)
    else:
        ensure_manifest(project)
        (dags / f"{dag_id}.py").write_text(cosmos_dag_source(project, dag_id, mode="WATCHER"))
        command = str(COSMOS_VENV / "bin" / "airflow")
        env = project.env(database)
    env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW")}
    if parse_every_s is not None:
        # The scheduler-load table re-parses more often than Airflow's default, so that the
        # file's steady-state parse time is seen several times during the run.
        env["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"] = str(parse_every_s)
    env["AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL"] = "5"
    if metadata == "celery" and kind == "dbtflow":
        # Each Celery worker has a dbtflow home of its own: the state is shared through a database.
        env["DBTFLOW_STATE_URL"] = env["DBTFLOW_HISTORY_URL"] = postgres_url(f"bench_{root.name}")
    state = "not started"
    try:
        with (
            metadata_database(metadata, f"bench_{root.name}") as metadata_url,
            airflow_deployment(
                root / "airflow",
                dags,
                env,
                airflow=command,
                metadata_url=None if metadata == "celery" else metadata_url,
                celery=Celery(metadata_url, REDIS_BROKER) if metadata == "celery" and metadata_url else None,
            ) as airflow,
        ):
            airflow.wait_for_dag(dag_id, timeout=900)
            if warm:
                # One unmeasured run first, as a deployment that has run before: the triggerer's
                # first call into the execution API builds its versioned app (about 9 s of CPU on
                # 2026-12-03, py-spy: Cadwyn's route generation), once per process, not per run.
                # Under Celery, until every worker has parsed the project into its own dbtflow
                # home (the measured run's dbt_build may go to either; on 2026-12-04 one that went
                # to the cold worker spent 7.6 s more in its build).
                for _ in range(4):
                    _wait_or_count(airflow, dag_id, airflow.trigger(dag_id), time.monotonic() + timeout)
                    if kind != "dbtflow" or all(
                        any((folder / "dbtflow" / "cache").glob("*/*/target"))
                        for folder in (root / "airflow").glob("worker*")
                    ):
                        break
            components = [airflow.processes[c] for c in ("scheduler", "dag-processor", "triggerer")]
            cpu_before = [_cpu_seconds(c) for c in components]
            tree_before = _tree_cpu(airflow.processes)
            started = time.monotonic()
            with _profiled(airflow, dag_id):
                run_id = airflow.trigger(dag_id)
                state = _wait_or_count(airflow, dag_id, run_id, started + timeout)
            seconds = time.monotonic() - started
            cpu = [_cpu_seconds(c) - before for c, before in zip(components, cpu_before, strict=True)]
            tree_after = _tree_cpu(airflow.processes)
            build_s, tail_s, tasks = _timeline(airflow, dag_id, run_id, PRODUCER_TASK[kind])
            if KEEP:
                (root / "task_instances.json").write_text(
                    json.dumps(
                        {
                            "run": airflow.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json(),
                            "tis": airflow.task_instances(dag_id, run_id),
                        },
                        default=str,
                    )
                )
            time.sleep(6)  # one more statistics table
        durations = _parse_durations(root / "airflow" / "dag-processor.log", f"{dag_id}.py")[1:]
        return SchedulerRun(
            seconds=seconds,
            state=state,
            scheduler_cpu_s=cpu[0],
            processor_cpu_s=cpu[1],
            triggerer_cpu_s=cpu[2],
            parse_s=statistics.median(durations) if durations else None,
            build_s=build_s,
            tail_s=tail_s,
            tasks=tasks,
            tree_cpu_s={k: tree_after[k] - tree_before.get(k, 0.0) for k in tree_after},
        )
    finally:
        if state == "success" and not KEEP:
            shutil.rmtree(root, ignore_errors=True)
        else:  # keep the components' and tasks' logs to see why
            kept = WORK / "failed-runs" / root.name
            kept.parent.mkdir(exist_ok=True)
            shutil.move(root, kept)
            log(f"{dag_id}: run {state}; its Airflow home and logs are kept in {kept}")


@contextlib.contextmanager
def _profiled(airflow: Any, dag_id: str) -> Any:
    """py-spy on the scheduler and the triggerer while the block runs, when BENCH_PROFILE asks."""
    if not PROFILE_DIR:
        yield
        return
    out = Path(PROFILE_DIR)
    out.mkdir(parents=True, exist_ok=True)
    spy = os.environ.get("BENCH_PYSPY", "py-spy")
    recorders = [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(airflow.processes[c].pid),
                "--subprocesses",
                "--rate",
                "50",
                "--format",
                "raw",
                "-o",
                str(out / f"{dag_id}-{c}.txt"),
                *(["--gil"] if os.environ.get("BENCH_PROFILE_GIL") == "1" else ["--nonblocking"]),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for c in ("scheduler", "triggerer")
    ]
    try:
        yield
    finally:
        for recorder in recorders:
            recorder.send_signal(signal.SIGINT)
        for recorder in recorders:
            recorder.wait(timeout=60)


def _run_state(airflow: Any, dag_id: str, run_id: str) -> str | None:
    """The run's state, read from the metadata database: the REST API's answer for a DAG run
    loads every version of its DAG's serialized document (``DagRun.dag_versions``), which at 500
    tasks cost the api-server most of its CPU (py-spy, 2026-12-03) while the benchmark polled it
    each second: work of the benchmark's own, on the same 2 cores as dbt, that no user pays."""
    mark = "%s" if airflow.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgres") else "?"
    rows = airflow.query(
        f"select state from dag_run where dag_id = {mark} and run_id = {mark}", dag_id, run_id
    )
    return str(rows[0][0]) if rows and rows[0][0] is not None else None


def _wait_or_count(airflow: Any, dag_id: str, run_id: str, deadline: float) -> str:
    """The run's final state, or (at the deadline) how many of its tasks had succeeded."""
    while time.monotonic() < deadline:
        state = _run_state(airflow, dag_id, run_id)
        if state in ("success", "failed"):
            return str(state)
        time.sleep(1)
    states = [state for state, _ in airflow.tasks(dag_id, run_id).values()]
    done, failed = states.count("success"), states.count("failed") + states.count("upstream_failed")
    return f"not finished: {done} of {len(states)} tasks succeeded, {failed} failed or upstream_failed"


def scheduler_load(project: Project, timeout: float) -> dict[str, SchedulerRun | str]:
    """dbtflow and Cosmos WATCHER on the same project under the same set-up."""
    out: dict[str, SchedulerRun | str] = {}
    for kind in ("dbtflow", "cosmos_watcher"):
        try:
            out[kind] = under_scheduler(project, kind, timeout, parse_every_s=10)
        except Exception as exc:  # a failed side is reported in the table, not fatal
            out[kind] = f"failed: {str(exc).splitlines()[0][:100]}"
        log(f"{project.name} scheduler load, {kind}: {out[kind]}")
    return out
