"""``make bench``: dbtflow against plain dbt and Astronomer Cosmos, measured in the same run.

Projects: the bundled 5-model example and synthetic layered projects (``benchmarks.generate``)
with N = 100, 1000 and 5000 models. Every end-to-end run builds into a new DuckDB file.

Measured (wall time from outside the process; medians of ``--repeats`` runs):
- plain ``dbt build`` (threads 2);
- ``dbtflow run`` per_model streamed, single, and per_model with one dbt invocation per task;
- Cosmos 1.15 LOCAL (dbtRunner) with ``airflow dags test``, and Cosmos WATCHER and dbtflow
  streamed under a real scheduler (LocalExecutor, the four Airflow components), trigger to end;
- DAG-file load (DagBag in a fresh process) and its peak memory, dbtflow vs Cosmos's manifest
  load mode, at N = 100, 1000 and 5000;
- retrying one failed model (``dbtflow retry``) against a bare ``dbt run --select`` of it.

Cosmos is installed by this script into its own virtualenv under ``benchmarks/work/``; it is
never a dependency of dbtflow. The table goes to stdout and to ``benchmarks/results.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.generate import generate

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
REPO = HERE.parent
EXAMPLE = REPO / "src" / "dbtflow" / "examples" / "bikeshare"
BIN = Path(sys.executable).parent
COSMOS_VENV = WORK / "cosmos-venv"
COSMOS_VERSION = "1.15.*"
THREADS = "2"


@dataclass
class Result:
    """Repeated measurements of one thing."""

    label: str
    seconds: list[float] = field(default_factory=list)
    peak_mb: list[float] = field(default_factory=list)
    failed: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds and not self.failed else None

    @property
    def median_mb(self) -> float | None:
        return statistics.median(self.peak_mb) if self.peak_mb else None

    def cell(self) -> str:
        if self.failed:
            return f"{self.failed}"
        if not self.seconds:
            return "not run"
        spread = f" ({min(self.seconds):.1f}-{max(self.seconds):.1f})" if len(self.seconds) > 1 else ""
        return f"{self.median:.2f} s{spread}, n={len(self.seconds)}"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def timed(
    command: list[str], *, env: dict[str, str], cwd: Path | None = None, timeout: float = 3600
) -> float:
    """Run a command; return its wall time in seconds (raise with its output if it fails)."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-2000:]
        raise RuntimeError(f"{' '.join(command[:4])}... exited {done.returncode}:\n{tail}")
    return elapsed


def repeat(label: str, runs: int, once: Callable[[], float]) -> Result:
    result = Result(label)
    for i in range(runs):
        try:
            result.seconds.append(once())
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            result.failed = f"failed: {str(exc).splitlines()[0][:120]}"
            log(f"{label}: {exc}")
            break
        log(f"{label} run {i + 1}/{runs}: {result.seconds[-1]:.2f} s")
    return result


# --- projects ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    name: str
    path: Path
    db_env: str
    profile: str
    target: str
    models: int

    def env(self, database: Path) -> dict[str, str]:
        return {**os.environ, self.db_env: str(database), "DO_NOT_TRACK": "1"}


def projects(sizes: list[int]) -> dict[str, Project]:
    out = {}
    example = WORK / "projects" / "example"
    shutil.rmtree(example, ignore_errors=True)
    shutil.copytree(EXAMPLE, example)
    out["example"] = Project("5-model example", example, "BIKESHARE_DUCKDB", "bikeshare", "dev", 5)
    for n in sizes:
        path = WORK / "projects" / f"synth_{n}"
        if not (path / "dbt_project.yml").exists():
            log(f"generating N={n}")
            generate(path, n)
        out[f"n{n}"] = Project(f"N={n}", path, "SYNTH_DUCKDB", "synth", "bench", n)
    return out


def ensure_manifest(project: Project) -> None:
    """Cosmos's manifest load mode reads ``target/manifest.json``: produce it with ``dbt parse``."""
    if (project.path / "target" / "manifest.json").exists():
        return
    dbt = str(BIN / "dbt")
    timed(
        [dbt, "parse", "--project-dir", str(project.path), "--profiles-dir", str(project.path)],
        env=project.env(fresh_database(project)),
        cwd=project.path,
    )


def fresh_database(project: Project) -> Path:
    database = WORK / "db" / f"{project.path.name}.duckdb"
    database.parent.mkdir(parents=True, exist_ok=True)
    for stale in database.parent.glob(f"{database.name}*"):
        stale.unlink()
    return database


# --- plain dbt and dbtflow ---------------------------------------------------------------------


def dbt_build(project: Project) -> float:
    database = fresh_database(project)
    dbt = str(BIN / "dbt")
    args = [
        "build",
        "--threads",
        THREADS,
        "--project-dir",
        str(project.path),
        "--profiles-dir",
        str(project.path),
    ]
    return timed([dbt, *args], env=project.env(database), cwd=project.path)


def dbtflow_env(project: Project, database: Path) -> dict[str, str]:
    return {**project.env(database), "DBTFLOW_HOME": str(WORK / "dbtflow-home")}


def dbtflow_run(project: Project, *extra: str) -> float:
    database = fresh_database(project)
    command = [
        str(BIN / "dbtflow"),
        "run",
        str(project.path),
        "--threads",
        THREADS,
        "--progress",
        "none",
        *extra,
    ]
    return timed(command, env=dbtflow_env(project, database), cwd=project.path)


# --- DAG-file load -----------------------------------------------------------------------------

LOAD_PROBE = """
import json, resource, sys, time
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
t1 = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
t2 = time.perf_counter()
assert not bag.import_errors, bag.import_errors
dag = next(iter(bag.dags.values()))
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "tasks": len(dag.tasks),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

DBTFLOW_DAG = """# airflow DAG
from dbtflow import DbtProject, dbt_dag
dag = dbt_dag(DbtProject({path!r}), dag_id={dag_id!r})
"""

COSMOS_DAG = """# airflow DAG
from datetime import datetime
from cosmos import DbtDag, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import ExecutionMode, InvocationMode, LoadMode
dag = DbtDag(
    dag_id={dag_id!r},
    project_config=ProjectConfig(dbt_project_path={path!r}, manifest_path={manifest!r}),
    profile_config=ProfileConfig(
        profile_name={profile!r}, target_name={target!r}, profiles_yml_filepath={profiles!r}
    ),
    render_config=RenderConfig(load_method=LoadMode.{load}, should_detach_multiple_parents_tests=True),
    execution_config=ExecutionConfig(
        execution_mode=ExecutionMode.{mode}, invocation_mode=InvocationMode.DBT_RUNNER
    ),
    operator_args={{"install_deps": False}},
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
)
"""


def cosmos_dag_source(project: Project, dag_id: str, mode: str = "LOCAL", load: str = "DBT_MANIFEST") -> str:
    return COSMOS_DAG.format(
        dag_id=dag_id,
        path=str(project.path),
        manifest=str(project.path / "target" / "manifest.json"),
        profile=project.profile,
        target=project.target,
        profiles=str(project.path / "profiles.yml"),
        load=load,
        mode=mode,
    )


def airflow_env(home: Path, dags: Path, base: dict[str, str]) -> dict[str, str]:
    env = {
        **base,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    }
    for key in list(env):
        if key.startswith("AIRFLOW__LOGGING"):
            env.pop(key)
    return env


def load_probe(python: Path, dag_file: Path, env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(
        [str(python), "-c", LOAD_PROBE, str(dag_file)], env=env, capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def dag_load(project: Project, repeats: int) -> tuple[Result, Result, Result, dict[str, int]]:
    """Cold and warm dbtflow loads, and Cosmos manifest-mode loads, of one project's DAG file."""
    folder = WORK / "load" / project.path.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ours = folder / "dbtflow_dag.py"
    ours.write_text(DBTFLOW_DAG.format(path=str(project.path), dag_id=f"dbtflow_{project.path.name}"))
    theirs = folder / "cosmos_dag.py"
    theirs.write_text(cosmos_dag_source(project, f"cosmos_{project.path.name}"))
    ensure_manifest(project)
    database = fresh_database(project)
    home = Path(tempfile.mkdtemp(prefix="dbtflow-load-", dir=WORK))
    env = {**dbtflow_env(project, database), "DBTFLOW_HOME": str(home)}
    airflow = airflow_env(WORK / "load-airflow", folder, env)
    tasks: dict[str, int] = {}

    cold = Result("dbtflow, first load (parses)")
    probe = load_probe(BIN / "python", ours, airflow)
    cold.seconds.append(probe["load_s"])
    cold.peak_mb.append(probe["peak_mb"])
    warm = Result("dbtflow")
    for _ in range(repeats):
        probe = load_probe(BIN / "python", ours, airflow)
        warm.seconds.append(probe["load_s"])
        warm.peak_mb.append(probe["peak_mb"])
        tasks["dbtflow"] = int(probe["tasks"])
    cosmos = Result("Cosmos, manifest load mode")
    cosmos_env = airflow_env(WORK / "load-airflow-cosmos", folder, project.env(database))
    for _ in range(repeats):
        probe = load_probe(COSMOS_VENV / "bin" / "python", theirs, cosmos_env)
        cosmos.seconds.append(probe["load_s"])
        cosmos.peak_mb.append(probe["peak_mb"])
        tasks["cosmos"] = int(probe["tasks"])
    shutil.rmtree(home, ignore_errors=True)
    log(f"load {project.name}: dbtflow {warm.cell()} ({tasks['dbtflow']} tasks), cosmos {cosmos.cell()}")
    return cold, warm, cosmos, tasks


# --- Cosmos ------------------------------------------------------------------------------------


def ensure_cosmos() -> None:
    python = COSMOS_VENV / "bin" / "python"
    if python.exists():
        return
    log("installing Astronomer Cosmos into its own virtualenv")
    subprocess.run([sys.executable, "-m", "venv", str(COSMOS_VENV)], check=True)
    pins = [
        f"astronomer-cosmos=={COSMOS_VERSION}",
        f"apache-airflow=={metadata.version('apache-airflow')}",
        "apache-airflow-providers-standard",
        f"dbt-core=={metadata.version('dbt-core')}",
        f"dbt-duckdb=={metadata.version('dbt-duckdb')}",
    ]
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], check=True)


def cosmos_local(project: Project) -> float:
    """Cosmos per-model tasks (LOCAL, dbtRunner) through ``airflow dags test``."""
    dags = WORK / "cosmos-dags"
    shutil.rmtree(dags, ignore_errors=True)
    dags.mkdir(parents=True)
    dag_id = f"cosmos_local_{project.path.name}"
    (dags / f"{dag_id}.py").write_text(cosmos_dag_source(project, dag_id))
    ensure_manifest(project)
    database = fresh_database(project)
    home = WORK / "cosmos-airflow"
    env = airflow_env(home, dags, project.env(database))
    airflow = str(COSMOS_VENV / "bin" / "airflow")
    if not (home / "airflow.db").exists():
        timed([airflow, "db", "migrate"], env=env)
    return timed([airflow, "dags", "test", dag_id], env=env)


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


def under_scheduler(project: Project, kind: str, timeout: float) -> SchedulerRun:
    """One DAG run under a real scheduler, for ``dbtflow`` or ``cosmos_watcher``."""
    from dbtflow.testing.deployment import airflow_deployment

    root = Path(tempfile.mkdtemp(prefix=f"sched-{kind}-", dir=WORK))
    dags = root / "dags"
    dags.mkdir()
    dag_id = f"{kind}_{project.path.name}"
    database = fresh_database(project)
    if kind == "dbtflow":
        (dags / f"{dag_id}.py").write_text(DBTFLOW_DAG.format(path=str(project.path), dag_id=dag_id))
        command = None
        env = {**dbtflow_env(project, database), "DBTFLOW_HOME": str(root / "dbtflow")}
    else:
        ensure_manifest(project)
        (dags / f"{dag_id}.py").write_text(cosmos_dag_source(project, dag_id, mode="WATCHER"))
        command = str(COSMOS_VENV / "bin" / "airflow")
        env = project.env(database)
    env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW")}
    # Re-parse the file every 10 s and print the dag-processor's statistics every 5 s, so its
    # steady-state parse time is seen several times during the run.
    env["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"] = "10"
    env["AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL"] = "5"
    try:
        with airflow_deployment(root / "airflow", dags, env, airflow=command) as airflow:
            airflow.wait_for_dag(dag_id, timeout=900)
            components = [airflow.processes[c] for c in ("scheduler", "dag-processor", "triggerer")]
            cpu_before = [_cpu_seconds(c) for c in components]
            started = time.monotonic()
            run_id = airflow.trigger(dag_id)
            state = _wait_or_count(airflow, dag_id, run_id, started + timeout)
            seconds = time.monotonic() - started
            cpu = [_cpu_seconds(c) - before for c, before in zip(components, cpu_before, strict=True)]
            time.sleep(6)  # one more statistics table
        durations = _parse_durations(root / "airflow" / "dag-processor.log", f"{dag_id}.py")[1:]
        return SchedulerRun(
            seconds=seconds,
            state=state,
            scheduler_cpu_s=cpu[0],
            processor_cpu_s=cpu[1],
            triggerer_cpu_s=cpu[2],
            parse_s=statistics.median(durations) if durations else None,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_or_count(airflow: Any, dag_id: str, run_id: str, deadline: float) -> str:
    """The run's final state, or (at the deadline) how many of its tasks had succeeded."""
    while time.monotonic() < deadline:
        state = airflow.run_state(dag_id, run_id)
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
            out[kind] = under_scheduler(project, kind, timeout)
        except Exception as exc:  # a failed side is reported in the table, not fatal
            out[kind] = f"failed: {str(exc).splitlines()[0][:100]}"
        log(f"{project.name} scheduler load, {kind}: {out[kind]}")
    return out


def render_scheduler_load(project: Project, runs: dict[str, SchedulerRun | str]) -> list[str]:
    def cells(run: SchedulerRun | str) -> list[str]:
        if isinstance(run, str):
            return [run, "", "", "", ""]
        parse = "n/a" if run.parse_s is None else f"{run.parse_s:.2f} s"
        more = "" if run.state in ("success", "failed") else "> "
        return [
            f"{more}{run.seconds:.1f} s ({run.state})",
            parse,
            f"{more}{run.scheduler_cpu_s:.1f} s",
            f"{more}{run.processor_cpu_s:.1f} s",
            f"{more}{run.triggerer_cpu_s:.1f} s",
        ]

    lines = [
        f"## Scheduler load: {project.name}, per_model (LocalExecutor on SQLite, one run each)",
        "",
        "| | trigger to end of the run | dag-processor parse of the file | scheduler CPU during the run |"
        " dag-processor CPU during the run | triggerer CPU during the run |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for kind, label in (("dbtflow", "dbtflow streamed"), ("cosmos_watcher", "Cosmos WATCHER")):
        lines.append("| " + " | ".join([label, *cells(runs[kind])]) + " |")
    ours, theirs = runs["dbtflow"], runs["cosmos_watcher"]
    if isinstance(ours, SchedulerRun) and isinstance(theirs, SchedulerRun):
        # Cosmos stopped at the time limit: its time and CPU are lower bounds, so the ratios are
        # upper bounds.
        bound = "" if theirs.state in ("success", "failed") else "< "
        parse = f"{ours.parse_s / theirs.parse_s:.2f}x" if ours.parse_s and theirs.parse_s else "n/a"
        lines.append(
            f"| dbtflow / Cosmos | {bound}{ours.seconds / theirs.seconds:.2f}x | {parse} |"
            f" {bound}{ours.scheduler_cpu_s / theirs.scheduler_cpu_s:.2f}x |"
            f" {bound}{ours.processor_cpu_s / theirs.processor_cpu_s:.2f}x |"
            f" {bound}{ours.triggerer_cpu_s / theirs.triggerer_cpu_s:.2f}x |"
        )
    lines += [
        "",
        'Parse time is the dag-processor\'s own "Last Duration" of the DAG file (median of its',
        "re-parses every 10 s while the run goes on; the first parse, which runs `dbt parse` for",
        "dbtflow, is left out). CPU is user + system time of the component's processes (the",
        "scheduler's includes the LocalExecutor's workers, where the tasks and dbt run) from trigger",
        f"to end. A run still going after {SCHEDULER_LOAD_TIMEOUT_S:.0f} s is measured up to there",
        "(`>`: its time and CPU are lower bounds; `<`: the ratios are upper bounds).",
    ]
    return lines


def _section(lines: list[str], heading_prefix: str) -> tuple[int, int] | None:
    """Where the section whose heading starts with ``heading_prefix`` begins and ends."""
    start = next((i for i, line in enumerate(lines) if line.startswith(heading_prefix)), None)
    if start is None:
        return None
    ends = (i for i in range(start + 1, len(lines)) if lines[i].startswith(("## ", "Notes:")))
    return start, next(ends, len(lines))


def replace_section(report: str, heading_prefix: str, section: list[str]) -> str:
    """``report`` with that section replaced by ``section`` (or added before the notes)."""
    lines = report.splitlines()
    bounds = _section(lines, heading_prefix)
    if bounds is None:
        notes = next((i for i, line in enumerate(lines) if line.startswith("Notes:")), len(lines))
        bounds = (notes, notes)
    return "\n".join([*lines[: bounds[0]], *section, "", *lines[bounds[1] :]]) + "\n"


# --- retry -------------------------------------------------------------------------------------

LATE_MODEL = (
    "select f.trip_id, l.note from {{ ref('fct_trips') }} as f join main.late_input as l using (trip_id)\n"
)


def retry_bench(repeats: int) -> tuple[Result, Result, Result]:
    """A model fails because its input has not arrived; once it has, retry only that model."""
    import duckdb

    path = WORK / "projects" / "retry"
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(EXAMPLE, path)
    (path / "models" / "marts" / "late_report.sql").write_text(LATE_MODEL)
    project = Project("retry", path, "BIKESHARE_DUCKDB", "bikeshare", "dev", 6)
    ours, alone, bare = (
        Result("dbtflow retry"),
        Result("dbtflow retry --no-head-start"),
        Result("dbt run --select"),
    )
    dbtflow = str(BIN / "dbtflow")
    for _ in range(repeats):
        for result, flags in ((ours, []), (alone, ["--no-head-start"])):
            database = fresh_database(project)
            env = dbtflow_env(project, database)
            run = subprocess.run(
                [dbtflow, "run", str(path), "--progress", "none", "--threads", THREADS],
                env=env,
                capture_output=True,
            )
            assert run.returncode == 1, "the late model should fail on the first run"
            with duckdb.connect(str(database)) as con:
                con.execute(
                    "create table main.late_input as select trip_id, 'late' as note from main.fct_trips"
                )
            result.seconds.append(
                timed([dbtflow, "retry", "dbtflow_bikeshare", "--progress", "none", *flags], env=env)
            )
        dbt = str(BIN / "dbt")
        bare.seconds.append(
            timed(
                [
                    dbt,
                    "run",
                    "--select",
                    "late_report",
                    "--project-dir",
                    str(path),
                    "--profiles-dir",
                    str(path),
                ],
                env=project.env(database),
                cwd=path,
            )
        )
        log(
            f"retry: dbtflow {ours.seconds[-1]:.2f}s, alone {alone.seconds[-1]:.2f}s,"
            f" dbt {bare.seconds[-1]:.2f}s"
        )
    return ours, alone, bare


# --- report ------------------------------------------------------------------------------------


def ratio(a: Result, b: Result) -> str:
    if a.median is None or b.median is None or b.median == 0:
        return "-"
    return f"{a.median / b.median:.2f}x"


def versions() -> str:
    names = ["apache-airflow", "dbt-core", "dbt-duckdb", "duckdb", "dbtflow"]
    parts = [f"Python {platform.python_version()}"] + [f"{n} {metadata.version(n)}" for n in names]
    cosmos = subprocess.run(
        [
            str(COSMOS_VENV / "bin" / "python"),
            "-c",
            "from importlib.metadata import version; print(version('astronomer-cosmos'))",
        ],
        capture_output=True,
        text=True,
    )
    if cosmos.returncode == 0:
        parts.append(f"astronomer-cosmos {cosmos.stdout.strip()}")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (medians are quoted)")
    parser.add_argument("--slow-repeats", type=int, default=1, help="runs of measurements over a minute each")
    parser.add_argument("--with-1000-runs", action="store_true", help="also run N=1000 end to end (long)")
    parser.add_argument("--no-scheduler", action="store_true", help="skip the real-scheduler runs")
    parser.add_argument("--quick", action="store_true", help="N=100 only, one run each (a smoke test)")
    parser.add_argument(
        "--scheduler-load",
        action="store_true",
        help="only the scheduler-load comparison at N=1000 (updates its section of results.md)",
    )
    args = parser.parse_args()
    if args.scheduler_load:
        WORK.mkdir(exist_ok=True)
        ensure_cosmos()
        project = projects([1000])["n1000"]
        section = render_scheduler_load(project, scheduler_load(project, SCHEDULER_LOAD_TIMEOUT_S))
        print("\n".join(section))
        results = HERE / "results.md"
        results.write_text(replace_section(results.read_text(), "## Scheduler load", section))
        return
    if args.quick:
        args.repeats = args.slow_repeats = 1
    sizes = [100] if args.quick else [100, 1000, 5000]
    WORK.mkdir(exist_ok=True)
    ensure_cosmos()
    by_key = projects(sizes)

    load_rows = []
    for n in sizes:
        load_rows.append((by_key[f"n{n}"], *dag_load(by_key[f"n{n}"], args.repeats)))

    end_to_end = ["example", "n100"] + (["n1000"] if args.with_1000_runs else [])
    runs: dict[str, dict[str, Result]] = {}
    for key in end_to_end:
        project = by_key[key]
        slow = args.slow_repeats if project.models >= 100 else args.repeats
        dbtflow_run(project)  # warms dbtflow's parse cache and embedded Airflow; not measured
        runs[key] = {
            "dbt": repeat(f"{project.name} dbt build", args.repeats, lambda p=project: dbt_build(p)),
            "streamed": repeat(
                f"{project.name} dbtflow streamed", args.repeats, lambda p=project: dbtflow_run(p)
            ),
            "single": repeat(
                f"{project.name} dbtflow single",
                args.repeats,
                lambda p=project: dbtflow_run(p, "--pattern", "single"),
            ),
            "per_task": repeat(
                f"{project.name} dbtflow per_task",
                slow,
                lambda p=project: dbtflow_run(p, "--execution", "per_task"),
            ),
            "cosmos_local": repeat(f"{project.name} Cosmos LOCAL", slow, lambda p=project: cosmos_local(p)),
        }
    scheduler: dict[str, dict[str, Result]] = {}
    if not args.no_scheduler:
        for key in ["example", "n100"]:
            project = by_key[key]
            scheduler[key] = {}
            for kind in ("dbtflow", "cosmos_watcher"):
                result = Result(kind)
                try:
                    run = under_scheduler(project, kind, timeout=1500)
                    if run.state == "success":
                        result.seconds.append(run.seconds)
                    else:
                        result.failed = f"run {run.state} after {run.seconds:.0f} s"
                except (AssertionError, RuntimeError) as exc:
                    result.failed = f"failed: {str(exc).splitlines()[0][:100]}"
                log(f"{project.name} under a scheduler, {kind}: {result.cell()}")
                scheduler[key][kind] = result
    retry = retry_bench(args.repeats)
    report = render(by_key, load_rows, runs, scheduler, retry, args)
    results = HERE / "results.md"
    if args.with_1000_runs and not args.no_scheduler:
        n1000 = by_key["n1000"]
        load = render_scheduler_load(n1000, scheduler_load(n1000, SCHEDULER_LOAD_TIMEOUT_S))
        report = replace_section(report, "## Scheduler load", load)
    elif results.exists() and "## Scheduler load" in results.read_text():
        # Keep the last scheduler-load measurement (`--scheduler-load` or `--with-1000-runs` redo it).
        old = results.read_text().splitlines()
        start, end = _section(old, "## Scheduler load") or (0, 0)
        report = replace_section(report, "## Scheduler load", old[start:end])
    print(report)
    results.write_text(report)


def render(by_key, load_rows, runs, scheduler, retry, args) -> str:  # type: ignore[no-untyped-def]
    lines = [
        "# dbtflow benchmark results",
        "",
        f"Run on {date.today().isoformat()} with `make bench`; {os.cpu_count()} cores. {versions()}.",
        f"Medians of {args.repeats} runs (runs over a minute: {args.slow_repeats});"
        " the range is in brackets.",
        "Wall time from outside the process, each end-to-end run into a new DuckDB file, dbt threads 2.",
        "",
        "## End to end: one run of the whole project",
        "",
        "| project | plain `dbt build` | dbtflow per_model streamed | dbtflow single |"
        " per_model, one dbt per task | Cosmos LOCAL (`dags test`) | streamed / dbt build |"
        " single / dbt build | per_task / dbt build | Cosmos / dbt build | streamed vs Cosmos |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, r in runs.items():
        lines.append(
            f"| {by_key[key].name} | {r['dbt'].cell()} | {r['streamed'].cell()} | {r['single'].cell()} |"
            f" {r['per_task'].cell()} | {r['cosmos_local'].cell()} | {ratio(r['streamed'], r['dbt'])} |"
            f" {ratio(r['single'], r['dbt'])} | {ratio(r['per_task'], r['dbt'])} |"
            f" {ratio(r['cosmos_local'], r['dbt'])} | {ratio(r['streamed'], r['cosmos_local'])} |"
        )
    if scheduler:
        lines += [
            "",
            "## Under a real scheduler (LocalExecutor on SQLite; trigger to end of the run)",
            "",
            "| project | dbtflow per_model streamed | Cosmos WATCHER | dbtflow / Cosmos |",
            "| --- | --- | --- | --- |",
        ]
        for key, r in scheduler.items():
            lines.append(
                f"| {by_key[key].name} | {r['dbtflow'].cell()} | {r['cosmos_watcher'].cell()} |"
                f" {ratio(r['dbtflow'], r['cosmos_watcher'])} |"
            )
    lines += [
        "",
        "## DAG-file load (DagBag in a fresh process, after Airflow's import; peak memory of the process)",
        "",
        "| project | tasks (dbtflow / Cosmos) | dbtflow | dbtflow peak | first load (parses) |"
        " Cosmos manifest mode | Cosmos peak | dbtflow / Cosmos |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for project, cold, warm, cosmos, tasks in load_rows:
        lines.append(
            f"| {project.name} | {tasks['dbtflow']} / {tasks['cosmos']} | {warm.cell()} |"
            f" {warm.median_mb:.0f} MB | {cold.cell()} | {cosmos.cell()} | {cosmos.median_mb:.0f} MB |"
            f" {ratio(warm, cosmos)} |"
        )
    ours, alone, bare = retry
    lines += [
        "",
        "## Retrying one failed model (its input arrived late)",
        "",
        "| `dbtflow retry` | `dbtflow retry --no-head-start` | bare `dbt run --select` | retry / bare |",
        "| --- | --- | --- | --- |",
        f"| {ours.cell()} | {alone.cell()} | {bare.cell()} | {ratio(ours, bare)} |",
        "",
        textwrap.dedent(
            """\
            Notes: dbtflow's DAG-file load reads the cached graph (the first load parses the project
            with dbt and is shown separately). `dbtflow run` starts the run's dbt invocation while
            Airflow starts (the producer task attaches to it); `dbtflow retry` rebuilds the cleared
            nodes in one invocation their tasks reflect, or each alone with `--no-head-start`.
            Cosmos WATCHER is measured under a scheduler only: under `airflow dags test` its sensors
            run first and wait for a producer that never starts.
            `dbtflow run --pattern single` runs its one task in a forked Airflow worker process: Airflow's
            in-process Execution API start (about 4 s) and dbt's import (about 2 s) come before dbt starts,
            where the streamed head start overlaps them with the dbt invocation; under a scheduler this is
            the worker's task start-up that every one-task DAG pays.
            """
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
