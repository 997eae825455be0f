"""What a state-aware run costs when nothing changed, next to the full run before it.

For each layered project, one DuckDB file and one DAG id: a first ``dbtflow run --state-aware``
builds everything (a full run, plus the measuring of sources and the recording of each build),
then each further run with nothing changed leaves every model out (the generated projects read
seeds and ``range()``, no source: nothing of unknown freshness). Both are ``dbtflow run`` wall
and CPU times, from a new process each.
"""

from __future__ import annotations

from benchmarks.harness import BIN, THREADS, Result, log, timed_cpu
from benchmarks.projects import Project, fresh_database
from benchmarks.report import _section, replace_section
from benchmarks.scenarios import dbtflow_env

HEADING = "## State-aware runs"


def _run(project: Project, env: dict[str, str], dag_id: str, *extra: str) -> tuple[float, float]:
    command = [
        str(BIN / "dbtflow"), "run", str(project.path), "--state-aware", "--dag-id", dag_id,
        "--threads", THREADS, "--progress", "none", *extra,
    ]  # fmt: skip
    return timed_cpu(command, env=env, cwd=project.path)


def measure(projects: list[Project], repeats: int) -> dict[str, tuple[Result, Result]]:
    """Per project: the first (full) state-aware run, and the runs with nothing changed."""
    found: dict[str, tuple[Result, Result]] = {}
    for project in projects:
        env = dbtflow_env(project, fresh_database(project))
        dag_id = f"bench_state_aware_{project.path.name}"
        full, unchanged = Result("full"), Result("unchanged")
        # The database is new but the DAG's build records are not (an earlier measurement's):
        # the first run builds everything regardless, and records it.
        wall, cpu = _run(project, env, dag_id, "--full-refresh")
        full.seconds.append(wall)
        full.cpu.append(cpu)
        log(f"{project.name} state-aware, full run: {wall:.1f} s (CPU {cpu:.1f} s)")
        for _ in range(repeats):
            wall, cpu = _run(project, env, dag_id)
            unchanged.seconds.append(wall)
            unchanged.cpu.append(cpu)
            log(f"{project.name} state-aware, nothing changed: {wall:.1f} s (CPU {cpu:.1f} s)")
        log(f"{project.name} state-aware: full {full.cell()}, nothing changed {unchanged.cell()}")
        found[project.name] = (full, unchanged)
    return found


def update(report: str, measured: dict[str, tuple[Result, Result]]) -> str:
    """``report`` with the state-aware table: this measurement's rows, and the last measurement's
    rows of the projects not measured this time."""
    lines = [
        HEADING,
        "",
        "`dbtflow run --state-aware` on one DuckDB file: the first run builds everything; a run with "
        "nothing changed builds nothing (every task skipped, saying why). Wall time (CPU of the whole "
        "process tree), median.",
        "",
        "| project | full run (first, state-aware) | nothing changed | saved |",
        "| --- | --- | --- | --- |",
    ]
    head = len(lines)
    for name, (full, unchanged) in measured.items():
        saved = "-"
        if full.median and unchanged.median is not None:
            saved = f"{100 * (1 - unchanged.median / full.median):.0f} %"
        lines.append(
            f"| {name} | {full.cell()} ({full.cpu_cell()}) | {unchanged.cell()} ({unchanged.cpu_cell()}) "
            f"| {saved} |"
        )
    rows = lines[head:] + _kept_rows(report, set(measured))
    rows.sort(key=lambda row: int("".join(ch for ch in row.split("|")[1] if ch.isdigit()) or 0))
    return replace_section(report, HEADING, lines[:head] + rows)


def _kept_rows(report: str, measured: set[str]) -> list[str]:
    """The table rows of the report's section for the projects not in ``measured``."""
    old = report.splitlines()
    bounds = _section(old, HEADING)
    if bounds is None:
        return []
    kept: list[str] = []
    for line in old[bounds[0] : bounds[1]]:
        if line.startswith("| N=") and line.split("|")[1].strip() not in measured:
            kept.append(line)
    return kept
