"""Rendering the measurements into the Markdown tables of ``benchmarks/results.md``.

Kept apart from the measuring so that a table can be re-rendered, or one section of the file
replaced (``replace_section``) while the others keep their last measurement: some tables take an
hour and are redone only on request.
"""

from __future__ import annotations

import os
import platform
import subprocess
import textwrap
from datetime import date
from importlib import metadata

from benchmarks.harness import COSMOS_VENV, Result
from benchmarks.projects import Project
from benchmarks.scheduler import SCHEDULER_LOAD_TIMEOUT_S, SchedulerRun


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


def merge_table(
    report: str, heading: str, intro: list[str], rows: list[str], notes: list[str], keys: int
) -> str:
    """``report`` with the table under ``heading`` updated: ``rows`` replace the old rows with
    the same first ``keys`` cells, the others are kept (a run may measure only some rows)."""

    def key(row: str) -> tuple[str, ...]:
        return tuple(cell.strip() for cell in row.strip().strip("|").split("|")[:keys])

    lines = report.splitlines()
    bounds = _section(lines, heading)
    old = [] if bounds is None else lines[bounds[0] : bounds[1]]
    table = [line for line in old if line.startswith("| ") and not line.startswith("| ---")][1:]
    merged = {key(row): row for row in table}
    fresh = {key(row): row for row in rows}
    kept = [row for k, row in merged.items() if k not in fresh]
    section = [heading, "", *intro, *rows, *kept, "", *notes]
    return replace_section(report, heading, section)
