"""Under a real scheduler, by project: dbtflow per_model, one BashOperator ``dbt build``, Cosmos.

The question is what Airflow adds around dbt's own work. For each project and side, one DAG run
on a fresh deployment (``benchmarks.scheduler``): trigger to end, build time (the run's start to
the end of the task that runs dbt), tail (that task's end to the run's end: what Airflow adds
after dbt finished), and each component's CPU over the run. The BashOperator side is the floor
a scheduler imposes on any one-task DAG; ratios are to it, measured in the same invocation.
"""

from __future__ import annotations

import statistics
from datetime import date

from benchmarks.harness import log
from benchmarks.projects import Project, project
from benchmarks.report import merge_table
from benchmarks.scheduler import SCHEDULER_LOAD_TIMEOUT_S, SchedulerRun, under_scheduler

SIDES = {
    "dbtflow": "dbtflow per_model streamed",
    "bash": "one BashOperator `dbt build`",
    "cosmos_watcher": "Cosmos WATCHER",
}
#: ``--sizes`` tokens: a bare number is a layered project, except 14 (the mixed project).
DEFAULT_SIZES = ["14", "100", "1000", "chain10", "chain100", "chain500"]
HEADING = "## Under a real scheduler, by project: what Airflow adds around dbt"
#: Airflow's metadata database, as a row names it (SQLite unless said).
METADATA = {
    "sqlite": "SQLite metadata",
    "postgres": "PostgreSQL metadata",
    "celery": "CeleryExecutor, PostgreSQL metadata",
}
CPU_COLUMNS = ("scheduler", "workers", "dag-processor", "triggerer", "api-server")


def project_key(token: str) -> str:
    if token == "14":
        return "mixed14"
    return f"n{token}" if token.isdigit() else token


def measure(
    tokens: list[str], sides: list[str], repeats: int, metadata: str = "sqlite"
) -> list[tuple[Project, str, list[SchedulerRun | str]]]:
    out = []
    for token in tokens:
        proj = project(project_key(token))
        for side in sides:
            runs: list[SchedulerRun | str] = []
            for i in range(repeats):
                try:
                    runs.append(under_scheduler(proj, side, SCHEDULER_LOAD_TIMEOUT_S, metadata=metadata))
                except Exception as exc:  # a failed side is reported in the table, not fatal
                    runs.append(f"failed: {str(exc).splitlines()[0][:100]}")
                log(f"{proj.name} under a scheduler, {side} run {i + 1}/{repeats}: {runs[-1]}")
            out.append((proj, side, runs))
    return out


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _seconds(value: float | None, bound: str = "") -> str:
    return "-" if value is None else f"{bound}{value:.1f} s"


def _row(
    proj: Project,
    side: str,
    runs: list[SchedulerRun | str],
    floor: float | None,
    metadata: str,
    idle_rate: float | None = None,
) -> tuple[str, float | None]:
    """The row's Markdown, and its trigger-to-end time when it is the floor (the BashOperator).

    ``idle_rate`` is the triggerer's CPU per second of the BashOperator run of the same project
    (no trigger runs there: Airflow's own loop); a dbtflow row shows its triggerer CPU per node
    task, and the same above that idle loop."""
    name = proj.name if metadata == "sqlite" else f"{proj.name}, {METADATA[metadata]}"
    done = [r for r in runs if isinstance(r, SchedulerRun)]
    if not done:
        failure = next((r for r in runs if isinstance(r, str)), "not run")
        return f"| {name} | {SIDES[side]} | {failure} |" + " |" * 10 + f" {date.today()} |", None
    finished = all(r.state in ("success", "failed") for r in done)
    more = "" if finished else "> "
    seconds = statistics.median(r.seconds for r in done)
    states = ", ".join(sorted({r.state for r in done}))
    cpu = {c: _median([r.tree_cpu_s.get(c) for r in done]) for c in CPU_COLUMNS}
    total = sum(v for v in cpu.values() if v is not None)
    ratio = "-" if not floor or not finished else f"{seconds / floor:.2f}x"
    cells = [
        name,
        SIDES[side],
        f"{more}{seconds:.1f} s ({states}), n={len(done)}",
        _seconds(_median([r.build_s for r in done])),
        _seconds(_median([r.tail_s for r in done])),
        *(_seconds(cpu[c], more) for c in CPU_COLUMNS[:3]),
        _triggerer(cpu["triggerer"], seconds, _node_tasks(done) if side == "dbtflow" else 0, idle_rate, more),
        _seconds(cpu["api-server"], more),
        _seconds(total, more),
        ratio,
        date.today().isoformat(),
    ]
    return "| " + " | ".join(cells) + " |", seconds if finished and side == "bash" else None


def rows(
    measured: list[tuple[Project, str, list[SchedulerRun | str]]], metadata: str = "sqlite"
) -> list[str]:
    """One row per project and side; ratios to the BashOperator side of the same project."""
    floors: dict[str, float | None] = {}
    idle: dict[str, float | None] = {}
    for proj, side, runs in measured:
        if side == "bash":
            floors[proj.name] = _row(proj, side, runs, None, metadata)[1]
            done = [r for r in runs if isinstance(r, SchedulerRun) and r.seconds]
            rates = [r.tree_cpu_s["triggerer"] / r.seconds for r in done if "triggerer" in r.tree_cpu_s]
            idle[proj.name] = statistics.median(rates) if rates else None
    return [
        _row(proj, side, runs, floors.get(proj.name), metadata, idle.get(proj.name))[0]
        for proj, side, runs in measured
    ]


def _node_tasks(runs: list[SchedulerRun]) -> int:
    """The node tasks of a per-node run: its task instances but the one that runs dbt."""
    return max((r.tasks or 0) - 1 for r in runs) if runs else 0


def _triggerer(cpu: float | None, seconds: float, node_tasks: int, idle_rate: float | None, more: str) -> str:
    """The triggerer's CPU; for a per-node side, per node task, and per node task above the idle
    triggerer's loop over the same time."""
    cell = _seconds(cpu, more)
    if cpu is None or not node_tasks:
        return cell
    cell += f" ({cpu / node_tasks * 1000:.0f} ms per node task"
    if idle_rate is not None:
        cell += f", {max(cpu - idle_rate * seconds, 0.0) / node_tasks * 1000:.0f} ms above idle"
    return cell + ")"


INTRO = [
    "| project | side | trigger to end | build (run start to dbt done) | tail (dbt done to run end) |"
    " scheduler CPU | workers CPU (tasks, dbt) | dag-processor CPU | triggerer CPU | api-server CPU |"
    " total CPU | time / BashOperator | measured |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]
NOTES = [
    "LocalExecutor on SQLite (PostgreSQL where the project says so: a fresh database on the",
    "machine's server), the four components started afresh for each run; one run each unless",
    "n says otherwise. Build and tail come from the metadata database: the task that runs dbt is",
    "dbtflow's `dbt_build`, the BashOperator task, or Cosmos's `dbt_producer_watcher`. CPU is user +",
    "system time of each component's process tree from trigger to end, reaped children included;",
    "workers are the LocalExecutor's processes under the scheduler (the tasks and dbt). The",
    "triggerer's CPU of a per-node side is also given per node task, and per node task above the",
    "idle triggerer's loop (its CPU per second in the BashOperator run of the same project). The 14-node",
    "project is the bikeshare example plus a custom-schema folder: 3 seeds, a snapshot, an",
    f"incremental and an ephemeral model. A run still going after {SCHEDULER_LOAD_TIMEOUT_S:.0f} s is",
    "measured up to there (`>`: lower bounds).",
]


def update(
    report: str, measured: list[tuple[Project, str, list[SchedulerRun | str]]], metadata: str = "sqlite"
) -> str:
    return merge_table(report, HEADING, INTRO, rows(measured, metadata), NOTES, keys=2)
