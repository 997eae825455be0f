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
- retrying one failed model (``dbtflow retry``) against a bare ``dbt run --select`` of it;
- a state-aware run with nothing changed next to the full run before it, at N = 100 and 1000
  (``benchmarks.state_aware``; ``--state-aware-table`` measures it alone);
- clearing a fixed failure and its 36 dependants (one dbt invocation) against ``dbt build
  --select`` of the same nodes (``benchmarks.clear``; ``python -m benchmarks.clear`` alone);
- the live report's index and a DAG's page from a history of 1000 models x 20 runs
  (``benchmarks.live_report``; ``--live-report`` measures it alone).

Cosmos is installed by this script into its own virtualenv under ``benchmarks/work/``; it is
never a dependency of dbtflow. The table goes to stdout and to ``benchmarks/results.md``.

Modules: ``harness`` (timing, CPU, repetitions), ``projects`` and ``generate`` (what is run),
``scenarios`` and ``cosmos`` (what is measured), ``scheduler`` (runs under a real scheduler),
``report`` (the tables); this one only reads the command line.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from benchmarks import assets_cost, clear, live_report, scheduler_table, shapes, state_aware
from benchmarks.cosmos import cosmos_local, ensure_cosmos
from benchmarks.harness import HERE, WORK, Result, log, repeat
from benchmarks.projects import projects
from benchmarks.report import _section, render, render_scheduler_load, replace_section
from benchmarks.scenarios import dag_load, dbt_build, dbtflow_run, retry_bench
from benchmarks.scheduler import SCHEDULER_LOAD_TIMEOUT_S, scheduler_load, under_scheduler


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
    parser.add_argument(
        "--live-report",
        action="store_true",
        help="only the live report's pages from a history of 1000 models x 20 runs (a few seconds)",
    )
    parser.add_argument(
        "--state-aware-table",
        action="store_true",
        help="only a state-aware run with nothing changed against the full run (N=100, 1000;"
        " --sizes 1000 measures one; rows not measured are kept)",
    )
    parser.add_argument(
        "--shapes-table",
        action="store_true",
        help="only `dbtflow run` vs `dbt build` by project shape (updates its rows of the results)",
    )
    parser.add_argument(
        "--shapes",
        type=_names,
        default=None,
        help=f"projects of the shapes table (default {','.join(shapes.SHAPES)})",
    )
    parser.add_argument(
        "--scheduler-table",
        action="store_true",
        help="only the under-a-scheduler table by project (updates its rows of the results)",
    )
    parser.add_argument(
        "--sizes",
        type=_names,
        default=None,
        help="projects of the scheduler table: 14 (mixed), 100, 1000 (layered), chain10...;"
        f" default {','.join(scheduler_table.DEFAULT_SIZES)}",
    )
    parser.add_argument(
        "--sides",
        type=_names,
        default=list(scheduler_table.SIDES),
        help=f"sides of the scheduler table (default {','.join(scheduler_table.SIDES)})",
    )
    parser.add_argument(
        "--metadata",
        choices=("sqlite", "postgres", "celery"),
        default="sqlite",
        help="the scheduler table's Airflow metadata database: SQLite, or a fresh database on the"
        " machine's PostgreSQL at 127.0.0.1:5432, or that with the CeleryExecutor (two workers,"
        " Redis at 127.0.0.1:6379) (default sqlite)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=HERE / "results.md",
        help="the file whose sections are updated (default benchmarks/results.md)",
    )
    args = parser.parse_args()
    # Stopped (also from a background job, where SIGINT is ignored): unwind, so that the Airflow
    # deployments' context managers stop their components instead of leaving them running.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.scheduler_load:
        WORK.mkdir(exist_ok=True)
        ensure_cosmos()
        project = projects([1000])["n1000"]
        section = render_scheduler_load(project, scheduler_load(project, SCHEDULER_LOAD_TIMEOUT_S))
        print("\n".join(section))
        results = args.results
        results.write_text(replace_section(results.read_text(), "## Scheduler load", section))
        return
    if args.live_report:
        live_report.run_alone(args.results, args.repeats)
        return
    if args.state_aware_table:
        WORK.mkdir(exist_ok=True)
        report = args.results.read_text() if args.results.exists() else "# dbtflow benchmark results\n"
        sizes = [int(n) for n in args.sizes] if args.sizes else [100, 1000]
        args.results.write_text(_state_aware_table(report, sizes, args.slow_repeats))
        return
    if args.shapes_table or args.scheduler_table:
        tables_only(args)
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
    results = args.results
    if args.with_1000_runs and not args.no_scheduler:
        n1000 = by_key["n1000"]
        load = render_scheduler_load(n1000, scheduler_load(n1000, SCHEDULER_LOAD_TIMEOUT_S))
        report = replace_section(report, "## Scheduler load", load)
    elif results.exists() and "## Scheduler load" in results.read_text():
        # Keep the last scheduler-load measurement (`--scheduler-load` or `--with-1000-runs` redo it).
        old = results.read_text().splitlines()
        start, end = _section(old, "## Scheduler load") or (0, 0)
        report = replace_section(report, "## Scheduler load", old[start:end])
    report = new_tables(report, args)
    print(report)
    results.write_text(report)


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _carry(report: str, old: str, heading: str) -> str:
    """``report`` with the section ``heading`` of ``old`` (its rows are then merged, not lost)."""
    lines = old.splitlines()
    bounds = _section(lines, heading)
    if bounds is None:
        return report
    return replace_section(report, heading, lines[bounds[0] : bounds[1]])


def new_tables(report: str, args: argparse.Namespace) -> str:
    """The shapes table and the scheduler table by project, as ``make bench`` measures them.

    The long rows (chain 500, N=1000) only with ``--with-1000-runs``; ``--quick`` measures the
    smallest project of each. Rows not measured keep their last measurement.
    """
    old = args.results.read_text() if args.results.exists() else ""
    for heading in (shapes.HEADING, scheduler_table.HEADING, state_aware.HEADING, clear.HEADING):
        report = _carry(report, old, heading)
    report = _carry(report, old, assets_cost.HEADING)
    report = _carry(report, old, live_report.HEADING)
    report = live_report.update(report, live_report.measure(args.repeats))
    report = clear.update(report, max(args.slow_repeats, 2))
    n100 = projects([100])["n100"]
    report = assets_cost.update(
        report, n100, assets_cost.measure(n100, 1 if args.quick else max(args.repeats, 3))
    )
    report = _state_aware_table(report, [100, 1000] if args.with_1000_runs else [100], args.slow_repeats)
    if args.quick:
        keys, sizes = ["chain10"], ["14"]
    else:
        keys = args.shapes or [k for k in shapes.SHAPES if args.with_1000_runs or k != "chain500"]
        sizes = args.sizes or [
            t for t in scheduler_table.DEFAULT_SIZES if args.with_1000_runs or t not in ("1000", "chain500")
        ]
    report = shapes.update(report, shapes.measure(keys, args.repeats, args.slow_repeats))
    if not args.no_scheduler:
        measured = scheduler_table.measure(sizes, args.sides, args.slow_repeats)
        report = scheduler_table.update(report, measured)
    return report


def _state_aware_table(report: str, sizes: list[int], repeats: int) -> str:
    by_key = projects(sizes)
    return state_aware.update(report, state_aware.measure([by_key[f"n{n}"] for n in sizes], max(repeats, 2)))


def tables_only(args: argparse.Namespace) -> None:
    """``--shapes-table`` and/or ``--scheduler-table``: measure them, update their rows."""
    WORK.mkdir(exist_ok=True)
    report = args.results.read_text() if args.results.exists() else "# dbtflow benchmark results\n"
    if args.shapes_table:
        measured = shapes.measure(args.shapes or shapes.SHAPES, args.repeats, args.slow_repeats)
        print("\n".join(shapes.rows(measured)))
        report = shapes.update(report, measured)
    if args.scheduler_table:
        if "cosmos_watcher" in args.sides:
            ensure_cosmos()
        sizes = args.sizes or scheduler_table.DEFAULT_SIZES
        measured_runs = scheduler_table.measure(sizes, args.sides, args.slow_repeats, args.metadata)
        print("\n".join(scheduler_table.rows(measured_runs, args.metadata)))
        report = scheduler_table.update(report, measured_runs, args.metadata)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(report)
    log(f"updated {args.results}")


if __name__ == "__main__":
    main()
