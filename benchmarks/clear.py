"""What a clear after a fix costs, next to a plain ``dbt build --select`` of the same nodes.

Issue 23: a model fails and its dependants end ``upstream_failed``; once it is fixed, the user
clears the failed task with its downstream ("only failed", without ``dbt_build``). The first
cleared task builds its nodes and every waiting dependant's in one dbt invocation
(``dbtflow.streaming.together``). Goal: at most 1.3x ``dbt build --select model+``, in wall time
and in CPU.

A 60-model layered project; the model with about 36 descendants reads a table that does not
exist yet. ``dbtflow run`` fails on it; the table is created; ``dbt_build`` is marked ``success``
in the embedded Airflow's database (as a clear that leaves it out) and ``dbtflow retry
--no-head-start`` clears the rest and runs them. Measured: that retry (a new process: Airflow's
start-up included), and ``dbt build --select model+`` on the same DuckDB file. Not run by the
tests; ``python -m benchmarks.clear [--repeats N]`` prints the table, ``make bench`` may add it.

``--scheduler`` measures the clear where the issue measured it: under a real deployment
(``dbtflow.testing.deployment``, PostgreSQL metadata). The DAG runs and fails; the table is
created; every failed and upstream-failed task of the run is cleared with its downstream through
the REST API (what ``dbtflow retry --remote`` does). Measured: clear to the end of the run, and
the CPU of every Airflow component's process tree (the tasks and dbt included) over that time.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import duckdb

from benchmarks import generate as gen
from benchmarks.harness import BIN, THREADS, WORK, Result, log, timed_cpu
from benchmarks.projects import Project, fresh_database
from benchmarks.report import replace_section
from benchmarks.scenarios import dbtflow_env
from dbtflow.runner.remote import AirflowApi, ApiCredentials
from dbtflow.state.store import StateStore

HEADING = "## Clearing a fixed failure and its dependants"
MODELS = 60
DEPENDANTS = 36
_REF = re.compile(r"ref\('(m\d+_\d+)'\)")


def _project() -> tuple[Project, str, int]:
    """The generated project, with its most fitting model made to fail until ``late_input`` exists."""
    path = gen.generate(WORK / "projects" / "clear60", MODELS, name="clear60")
    sql = {f.stem: f for f in (path / "models").rglob("m*.sql")}
    children: dict[str, set[str]] = {name: set() for name in sql}
    for name, file in sql.items():
        for parent in _REF.findall(file.read_text()):
            children[parent].add(name)

    def below(name: str) -> set[str]:
        found: set[str] = set()
        todo = [name]
        while todo:
            for child in children[todo.pop()] - found:
                found.add(child)
                todo.append(child)
        return found

    failing = min(sql, key=lambda name: abs(len(below(name)) - DEPENDANTS))
    file = sql[failing]
    file.write_text(file.read_text().rstrip() + "\nwhere (select count(*) from main.late_input) >= 0\n")
    project = Project(f"layered N={MODELS}", path, "SYNTH_DUCKDB", "synth", "bench", MODELS)
    return project, failing, len(below(failing))


def _mark_producer_succeeded(dag_id: str, run_id: str) -> None:
    database = WORK / "dbtflow-home" / "airflow" / "airflow.db"
    with sqlite3.connect(database, timeout=60) as con:
        con.execute(
            "update task_instance set state = 'success' where dag_id = ? and run_id = ? and task_id = ?",
            (dag_id, run_id, "dbt_build"),
        )


def measure(repeats: int) -> tuple[str, int, Result, Result]:
    """The failing model, its dependants' count, the clear's and ``dbt build --select``'s cost."""
    project, failing, dependants = _project()
    clear, bare = Result("clear (one invocation)"), Result("dbt build --select")
    dbtflow, dbt = str(BIN / "dbtflow"), str(BIN / "dbt")
    for _ in range(repeats):
        database = fresh_database(project)
        env = dbtflow_env(project, database)
        summary = WORK / "clear-summary.json"
        summary.unlink(missing_ok=True)
        run = [dbtflow, "run", str(project.path), "--threads", THREADS, "--progress", "none"]
        failed = subprocess.run([*run, "--summary-json", str(summary)], env=env, capture_output=True)
        assert failed.returncode == 1, "the late model should fail the first run"
        outcome = json.loads(summary.read_text())
        with duckdb.connect(str(database)) as con:
            con.execute("create table main.late_input as select 1 as n")
        _mark_producer_succeeded(outcome["dag_id"], outcome["run_id"])
        retry = [dbtflow, "retry", outcome["dag_id"], "--progress", "none", "--no-head-start"]
        wall, cpu = timed_cpu(retry, env=env)
        clear.seconds.append(wall)
        clear.cpu.append(cpu)
        select = [dbt, "build", "--select", f"{failing}+", "--threads", THREADS]
        select += ["--project-dir", str(project.path), "--profiles-dir", str(project.path)]
        wall, cpu = timed_cpu(select, env=project.env(database), cwd=project.path)
        bare.seconds.append(wall)
        bare.cpu.append(cpu)
        log(f"clear of {failing} and {dependants} dependants: {clear.cell()} vs dbt {bare.cell()}")
    return failing, dependants, clear, bare


def measure_under_scheduler(repeats: int) -> tuple[str, int, Result, Result]:
    """As ``measure``, with the clear made through a real deployment's REST API."""
    from benchmarks.scheduler import DBTFLOW_DAG, _tree_cpu, metadata_database
    from dbtflow.testing.deployment import airflow_deployment

    project, failing, dependants = _project()
    clear, bare = Result("clear under a scheduler"), Result("dbt build --select")
    dbt = str(BIN / "dbt")
    for _ in range(repeats):
        root = Path(tempfile.mkdtemp(prefix="clear-sched-", dir=WORK))
        dags = root / "dags"
        dags.mkdir()
        dag_id = "clear60"
        database = fresh_database(project)
        (dags / f"{dag_id}.py").write_text(DBTFLOW_DAG.format(path=str(project.path), dag_id=dag_id))
        env = {**dbtflow_env(project, database), "DBTFLOW_HOME": str(root / "dbtflow")}
        env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW")}
        with (
            metadata_database("postgres", f"bench_{root.name}") as metadata_url,
            airflow_deployment(root / "airflow", dags, env, metadata_url=metadata_url) as airflow,
        ):
            airflow.wait_for_dag(dag_id, timeout=900)
            run_id = airflow.trigger(dag_id)
            assert airflow.wait_for_run(dag_id, run_id, timeout=900) == "failed", "the late model should fail"
            with duckdb.connect(str(database)) as con:
                con.execute("create table main.late_input as select 1 as n")
            before = _tree_cpu(airflow.processes)
            started = time.monotonic()
            api = AirflowApi(airflow.api_url, ApiCredentials())  # what `dbtflow retry --remote` calls
            try:
                cleared = api.clear_failed(dag_id, run_id)
            finally:
                api.close()
            state = airflow.wait_for_run(dag_id, run_id, timeout=900)
            clear.seconds.append(time.monotonic() - started)
            after = _tree_cpu(airflow.processes)
            clear.cpu.append(sum(after.values()) - sum(before.get(k, 0.0) for k in after))
            invocations = StateStore(f"sqlite:///{root / 'dbtflow' / 'state.db'}").invocations_of_run(
                dag_id, run_id
            )
            log(
                f"clear of {len(cleared)} tasks: run {state}; dbt invocations of the run: "
                + ", ".join(f"{i.task_id} try {i.try_number} ({i.state})" for i in invocations)
            )
        select = [dbt, "build", "--select", f"{failing}+", "--threads", THREADS]
        select += ["--project-dir", str(project.path), "--profiles-dir", str(project.path)]
        wall, cpu = timed_cpu(select, env=project.env(database), cwd=project.path)
        bare.seconds.append(wall)
        bare.cpu.append(cpu)
        shutil.rmtree(root, ignore_errors=True)
        log(f"clear of {failing} and {dependants} dependants: {clear.cell()} vs dbt {bare.cell()}")
    return failing, dependants, clear, bare


def table(failing: str, dependants: int, clear: Result, bare: Result) -> list[str]:
    ratio = cpu_ratio = "-"
    if clear.median and bare.median:
        ratio = f"{clear.median / bare.median:.2f}x"
    if clear.median_cpu and bare.median_cpu:
        cpu_ratio = f"{clear.median_cpu / bare.median_cpu:.2f}x"
    return [
        HEADING,
        "",
        f"A {MODELS}-model layered project: {failing} failed and its {dependants} dependants ended "
        "upstream_failed; after the fix, they are cleared (without dbt_build) and rebuilt by one dbt "
        "invocation (`dbtflow retry --no-head-start`, a new process with Airflow's start-up), against "
        "`dbt build --select model+` of the same nodes. Wall time (CPU of the process tree), median.",
        "",
        "| nodes | clear | dbt build --select | wall ratio | CPU ratio |",
        "| --- | --- | --- | --- | --- |",
        f"| {failing} + {dependants} | {clear.cell()} ({clear.cpu_cell()}) | {bare.cell()} "
        f"({bare.cpu_cell()}) | {ratio} | {cpu_ratio} |",
    ]


def scheduler_table(failing: str, dependants: int, clear: Result, bare: Result) -> list[str]:
    """The rows of the clear under a real deployment (see the module docstring)."""
    ratio = f"{clear.median / bare.median:.2f}x" if clear.median and bare.median else "-"
    cpu_ratio = f"{clear.median_cpu / bare.median_cpu:.2f}x" if clear.median_cpu and bare.median_cpu else "-"
    return [
        "| nodes | clear under a scheduler (CPU of all components) | dbt build --select | wall ratio |"
        " CPU ratio |",
        "| --- | --- | --- | --- | --- |",
        f"| {failing} + {dependants} | {clear.cell()} ({clear.cpu_cell()}) | {bare.cell()} "
        f"({bare.cpu_cell()}) | {ratio} | {cpu_ratio} |",
    ]


SCHEDULER_TEXT = (
    "**Under a real deployment** (`python -m benchmarks.clear --scheduler`, PostgreSQL metadata): the DAG "
    "run fails on the model; the table is created; every failed and upstream-failed task of the run is "
    "cleared with its downstream through the REST API (as `dbtflow retry --remote` does, `dbt_build` "
    "included). From the clear to the run's end, with the CPU of every Airflow component's process tree "
    "(the tasks and dbt included), against `dbt build --select model+` on the same DuckDB file. "
    "`dbtflow retry` (the table above) pays the embedded Airflow's start-up in a new process; a "
    "deployment has it running already."
)


def update(report: str, repeats: int) -> str:
    """``report`` with this scenario's section, measured now (``make bench``): through
    ``dbtflow retry``, and under a real deployment."""
    lines = table(*measure(repeats))
    lines += ["", SCHEDULER_TEXT, "", *scheduler_table(*measure_under_scheduler(repeats))]
    return replace_section(report, HEADING, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scheduler", action="store_true", help="the clear under a real deployment")
    args = parser.parse_args()
    if args.scheduler:
        print("\n".join(scheduler_table(*measure_under_scheduler(args.repeats))))
        return
    print("\n".join(table(*measure(args.repeats))))


if __name__ == "__main__":
    main()
