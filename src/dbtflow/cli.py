"""The ``dbtflow`` command line: run, render and demo.

Bad input ends with one line, ``dbtflow: error: <cause> Fix: <fix>``, exit status 2, and no
traceback. ``run`` exits 0 only when every task of the DAG run succeeded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dbtflow.cli_args import build_parser, plan_options
from dbtflow.errors import DbtflowError

EXIT_FAILED_RUN = 1
EXIT_BAD_INPUT = 2


def _request(args: argparse.Namespace) -> Any:
    from dbtflow.runner.run import RunRequest

    return RunRequest(
        project_dir=args.project_dir,
        profiles_dir=args.profiles_dir,
        target=args.target,
        profile=args.conn_id,
        profile_name=args.profile_name,
        vars=args.vars,
        manifest_path=args.manifest,
        plan=plan_options(args),
        threads=args.threads,
        dag_id=args.dag_id,
        concurrency=args.concurrency,
        head_start=not args.no_head_start,
        assets=args.assets,
        progress=args.progress,
        retries=args.retries,
        retry_delay_s=args.retry_delay,
        full_refresh=args.full_refresh,
        defer_to=args.defer_to,
    )


def _run(args: argparse.Namespace) -> int:
    from dbtflow.runner.run import run_project

    return _finish(run_project(_request(args)), args.summary_json)


def _retry(args: argparse.Namespace) -> int:
    if args.api_url:
        from dbtflow.runner.remote import retry_remote

        outcome = retry_remote(
            args.api_url, args.dag_id, args.run_id, progress=args.progress, timeout_s=args.timeout
        )
    else:
        from dbtflow.runner.run import retry_dag

        outcome = retry_dag(
            args.dag_id,
            args.run_id,
            head_start=False if args.no_head_start else None,
            progress=args.progress,
            concurrency=args.concurrency,
        )
    return _finish(outcome, args.summary_json)


def _backfill(args: argparse.Namespace) -> int:
    from dbtflow.runner.backfill import backfill, stored_request

    target = args.project_dir  # a project folder, or the DAG id of an earlier `dbtflow run`
    request = _request(args) if target.is_dir() else stored_request(str(target), args.progress)
    if args.schedule:
        request.schedule = args.schedule
    outcome = backfill(request, args.from_date, args.to_date, reprocess=args.reprocess)
    return _finish(outcome, args.summary_json)


def _finish(outcome: Any, summary_json: Path | None) -> int:
    if summary_json is not None:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(outcome.to_dict(), indent=2) + "\n")
    # A task skipped in a successful run was left out by a state-aware run (a failure's
    # dependants are skipped too, but then the failed task fails the run).
    all_ok = outcome.state == "success" and all(t.state in ("success", "skipped") for t in outcome.tasks)
    return 0 if all_ok else EXIT_FAILED_RUN


def _render(args: argparse.Namespace) -> int:
    from dbtflow.plan.planner import make_plan
    from dbtflow.project.config import DbtProject

    project = DbtProject(
        args.project_dir,
        profiles_dir=args.profiles_dir,
        target=args.target,
        profile=args.conn_id,
        vars=args.vars,
        manifest_path=args.manifest,
        profile_name=args.profile_name,
    )
    plan = make_plan(project, plan_options(args))
    if args.format == "json":
        print(json.dumps({"tasks": [t.to_dict() for t in plan.tasks]}, indent=2))
    else:
        for task in plan.tasks:
            upstream = f"  <- {', '.join(task.upstream)}" if task.upstream else ""
            print(f"{task.task_id} [{len(task.nodes)} node(s)]{upstream}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Copy the bundled example under $DBTFLOW_HOME and run it per model."""
    import os
    from importlib import resources

    from dbtflow.runner.run import RunRequest, run_project
    from dbtflow.settings import dbtflow_home

    source = Path(str(resources.files("dbtflow") / "examples" / "bikeshare"))
    target = dbtflow_home() / "demo" / "bikeshare"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*"))
    database = dbtflow_home() / "demo" / "bikeshare.duckdb"
    database.unlink(missing_ok=True)
    os.environ["BIKESHARE_DUCKDB"] = str(database)
    print(f"Running the bundled example ({target}) per model; warehouse: {database}")
    outcome = run_project(RunRequest(project_dir=target, progress=args.progress))
    print(
        "See this run in Airflow's web UI (its grid, each model's log, the run-time report): "
        "`dbtflow ui` (or `.venv/bin/dbtflow ui`), then open the URL it prints."
    )
    return _finish(outcome, args.summary_json)


def _timings(args: argparse.Namespace) -> int:
    from dbtflow.monitoring.history import History
    from dbtflow.monitoring.trends import trends

    found = trends(History(args.history_url).runs(dag_id=args.dag), last=args.last)
    growing = [t for t in found if t.growing]
    if args.format == "json":
        print(
            json.dumps(
                {"slowest": [vars(t) for t in found[: args.top]], "growing": [vars(t) for t in growing]}
            )
        )
        return 0
    if not found:
        print("No run-time history yet: run a DAG first.")
        return 0
    print(f"Slowest models (median of the last {args.last} successful runs):")
    for t in found[: args.top]:
        print(f"  {t.median_s:8.2f}s  last {t.last_s:7.2f}s  {t.runs:3d} runs  {t.unique_id}")
    print("Growing:" if growing else "Growing: none")
    for t in sorted(growing, key=lambda t: t.slope_per_run_s, reverse=True):
        print(
            f"  {t.unique_id}: +{t.slope_per_run_s:.3f}s per run, +{t.slope_per_week_s:.2f}s per week"
            f" (median {t.median_s:.2f}s over {t.runs} runs)"
        )
    return 0


def _report(args: argparse.Namespace) -> int:
    from dbtflow.monitoring.history import History
    from dbtflow.monitoring.report import reports_folder, write_report
    from dbtflow.project.config import DbtProject
    from dbtflow.project.manifest import load_graph

    project = DbtProject(args.project, profile_name=args.profile_name) if args.project else None
    graph = load_graph(project) if project is not None else None
    history = History(args.history_url).runs(dag_id=args.dag)
    out = args.out or reports_folder() / (args.dag or "all")
    print(write_report(history, out, graph=graph, last=args.last))
    return 0


def _docs(args: argparse.Namespace) -> int:
    from dbtflow.project.config import DbtProject
    from dbtflow.project.docs import generate_docs

    if args.conn_id or args.target_path:  # Airflow's connections (and configuration): the embedded one's
        from dbtflow.runner.home import embedded_airflow

        embedded_airflow().activate()
    if args.target_conn_id and not args.target_path:
        raise DbtflowError(
            "--target-conn-id is the connection of --target-path.", "pass --target-path URL too."
        )
    project = DbtProject(
        args.project_dir,
        profiles_dir=args.profiles_dir,
        target=args.target,
        profile=args.conn_id,
        vars=args.vars,
        profile_name=args.profile_name,
    )
    if args.target_path:
        from dbtflow.airflow.docs_operator import docs_storage

        written = generate_docs(project, docs_storage(args.target_path, args.target_conn_id))
        print(f"dbt docs of {project.name}: {written}")
        return 0
    folder = generate_docs(project)
    print(f"dbt docs of {project.name}: {folder} (`dbtflow ui` serves them at /dbtflow/docs/{project.name}/)")
    return 0


def _ui(args: argparse.Namespace) -> int:
    from dbtflow.runner.ui import serve_ui

    return serve_ui(args.port)


def _airflow(args: argparse.Namespace) -> int:
    """Run Airflow's command line against the embedded Airflow (its database and fernet key)."""
    from dbtflow.runner.home import embedded_airflow

    home = embedded_airflow()
    home.activate()
    home.ensure_database()
    command = Path(sys.executable).parent / "airflow"
    return subprocess.run([str(command), *args.airflow_args], env=os.environ).returncode


def _quiet_semaphore_warnings() -> None:
    """dbt's adapters create multiprocessing locks; when a forked task process exits, Python's
    resource tracker reports them as leaked (they are not: Linux unlinks them at creation). The
    tracker is a separate process that takes its warning filters from this one's options."""
    option = "ignore::UserWarning:multiprocessing.resource_tracker"
    if option not in sys.warnoptions:
        sys.warnoptions.append(option)


def _quiet_third_party_warnings() -> None:
    """Warnings about other packages' use of their dependencies say nothing a dbtflow user can act
    on (Airflow's in-process API client uses Starlette's test client, which warns about httpx)."""
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")


#: Commands that drive a DAG run: Ctrl-C stops it (a second Ctrl-C exits at once).
_RUNS_DBT = frozenset({"run", "retry", "demo", "backfill"})


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_semaphore_warnings()
    _quiet_third_party_warnings()
    args = build_parser().parse_args(argv)
    handlers = {"run": _run, "retry": _retry, "render": _render, "demo": _demo, "timings": _timings}
    handlers["backfill"] = _backfill
    handler = {**handlers, "report": _report, "airflow": _airflow, "ui": _ui, "docs": _docs}[args.command]
    if args.command in _RUNS_DBT and threading.current_thread() is threading.main_thread():
        from dbtflow.runner.processes import exit_on_second_interrupt

        exit_on_second_interrupt()
    try:
        code = handler(args)
    except DbtflowError as exc:
        print(f"dbtflow: error: {exc}", file=sys.stderr)
        code = EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:
        # A run says that it is marked failed and how to resume it (RunInterrupted).
        print(f"dbtflow: {str(exc) or 'interrupted'}", file=sys.stderr)
        code = 130
    if argv is None and args.command in _EXIT_AT_ONCE:
        _exit_now(code)
    return code


#: Commands that load Airflow and dbt into this process: run from the command line, they end
#: without the interpreter's teardown, which took 5-9 s after the run's summary (collecting and
#: finalizing every module's objects on a loaded machine). Everything they write is written by then.
_EXIT_AT_ONCE = frozenset({"run", "retry", "demo", "backfill"})


def _exit_now(code: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
