"""``dbtflow run`` against plain ``dbt build`` on projects of different shapes, in one run.

Where dbtflow's cost comes from depends on the shape: a chain puts every node hand-off on the
critical path, a heavy project is dominated by the warehouse, a wide one by dbt's threads.
Both sides are run in alternating pairs (the order swapped every pair) into a new DuckDB file,
each after one unmeasured warm-up run (dbt's partial parse, dbtflow's graph cache); wall time
and the CPU of the whole process tree are reported, with the median of the pairs' ratios.
"""

from __future__ import annotations

import statistics
from datetime import date

from benchmarks.harness import Result, alternate, log
from benchmarks.projects import Project, project
from benchmarks.report import merge_table
from benchmarks.scenarios import dbt_build_cpu, dbtflow_run_cpu

#: The projects of the table, in its order.
SHAPES = ["example", "chain10", "chain100", "chain500", "heavy100", "wide200"]
HEADING = "## `dbtflow run` against plain `dbt build`, by project shape"


def measure(
    keys: list[str], repeats: int, slow_repeats: int
) -> list[tuple[Project, Result, Result, list[float]]]:
    """For each project: plain ``dbt build``, ``dbtflow run`` and the pairs' ratios."""
    out = []
    for key in keys:
        proj = project(key)
        runs = slow_repeats if proj.models >= 500 else repeats
        for warm in (dbt_build_cpu, dbtflow_run_cpu):  # not measured
            try:
                warm(proj)
            except RuntimeError as exc:
                log(f"{proj.name} warm-up: {exc}")
        dbt, ours, ratios = alternate(
            runs,
            (f"{proj.name} dbt build", lambda p=proj: dbt_build_cpu(p)),
            (f"{proj.name} dbtflow run", lambda p=proj: dbtflow_run_cpu(p)),
        )
        out.append((proj, dbt, ours, ratios))
    return out


def _cpu_ratio(ours: Result, dbt: Result) -> str:
    if ours.median_cpu is None or not dbt.median_cpu:
        return "-"
    return f"{ours.median_cpu / dbt.median_cpu:.2f}x"


def rows(measured: list[tuple[Project, Result, Result, list[float]]]) -> list[str]:
    today = date.today().isoformat()
    out = []
    for proj, dbt, ours, ratios in measured:
        ratio = f"{statistics.median(ratios):.2f}x" if ratios else "-"
        out.append(
            f"| {proj.name} | {dbt.cell()} | {dbt.cpu_cell()} | {ours.cell()} | {ours.cpu_cell()} |"
            f" {ratio} | {_cpu_ratio(ours, dbt)} | {today} |"
        )
    return out


INTRO = [
    "| project | plain `dbt build` | its CPU | `dbtflow run` (per_model streamed) | its CPU |"
    " dbtflow / dbt build | CPU dbtflow / dbt build | measured |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
]
NOTES = [
    "Both sides in alternating pairs, each into a new DuckDB file, after one unmeasured warm-up",
    "of each; dbt threads 2. CPU is user + system time of the command's whole process tree. The",
    "wall ratio is the median of the pairs' ratios. Chains: N tables, each selecting from the",
    "previous one (the first from a seed). Heavy: 10 layers, 70 % of the non-staging models are",
    "tables, 600,000 rows per staging model, `not_null` on about 30 % of the models. Wide: 2 layers",
    "(20 staging views, 180 models independent of each other). The rows of one project were",
    "measured in one run; the `measured` column says when. The 5-model example is the bundled",
    "bikeshare project, with its seeds, snapshot and tests.",
]


def update(report: str, measured: list[tuple[Project, Result, Result, list[float]]]) -> str:
    return merge_table(report, HEADING, INTRO, rows(measured), NOTES, keys=1)
