"""What ``make bench`` measures outside a scheduler: end-to-end runs, DAG-file loads, retries.

Each function runs one thing once, from outside the process (a new process, a new DuckDB file),
and returns what it cost; ``benchmarks.run`` repeats them and ``benchmarks.report`` renders
them. Kept apart from the harness so that what is measured can be read without how it is timed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.cosmos import airflow_env, cosmos_dag_source
from benchmarks.harness import BIN, COSMOS_VENV, EXAMPLE, THREADS, WORK, Result, log, timed, timed_cpu
from benchmarks.projects import Project, ensure_manifest, fresh_database

# --- plain dbt and dbtflow ---------------------------------------------------------------------


def dbt_build(project: Project) -> float:
    return dbt_build_cpu(project)[0]


def dbt_build_cpu(project: Project) -> tuple[float, float]:
    """Plain ``dbt build`` (threads 2) into a new DuckDB file: wall and CPU seconds."""
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
    return timed_cpu([dbt, *args], env=project.env(database), cwd=project.path)


def dbtflow_env(project: Project, database: Path) -> dict[str, str]:
    return {**project.env(database), "DBTFLOW_HOME": str(WORK / "dbtflow-home")}


def dbtflow_run(project: Project, *extra: str) -> float:
    return dbtflow_run_cpu(project, *extra)[0]


def dbtflow_run_cpu(project: Project, *extra: str) -> tuple[float, float]:
    """``dbtflow run`` (per_model streamed unless ``extra`` says otherwise): wall and CPU seconds."""
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
    return timed_cpu(command, env=dbtflow_env(project, database), cwd=project.path)


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
            summary = WORK / "retry-summary.json"
            summary.unlink(missing_ok=True)
            run = subprocess.run(
                [
                    dbtflow,
                    "run",
                    str(path),
                    "--progress",
                    "none",
                    "--threads",
                    THREADS,
                    "--summary-json",
                    str(summary),
                ],
                env=env,
                capture_output=True,
            )
            assert run.returncode == 1, "the late model should fail on the first run"
            # The DAG id is the run's own: since a DAG id belongs to the folder that first ran it,
            # this copy of the example gets ``dbtflow_bikeshare_<path hash>`` under a shared home.
            dag_id = json.loads(summary.read_text())["dag_id"]
            with duckdb.connect(str(database)) as con:
                con.execute(
                    "create table main.late_input as select trip_id, 'late' as note from main.fct_trips"
                )
            result.seconds.append(timed([dbtflow, "retry", dag_id, "--progress", "none", *flags], env=env))
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
