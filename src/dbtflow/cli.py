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

from dbtflow import settings
from dbtflow.errors import DbtflowError
from dbtflow.plan.model import TestMode
from dbtflow.plan.options import Execution, GroupBy, Pattern, PlanOptions

EXIT_FAILED_RUN = 1
EXIT_BAD_INPUT = 2


_PROFILE_HELP = "the profile's name in profiles.yml, as in dbt (default: `profile:` of dbt_project.yml)"


def _add_project_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("project_dir", type=Path, help="folder holding dbt_project.yml")
    parser.add_argument("--profiles-dir", type=Path, help="folder holding profiles.yml")
    parser.add_argument(
        "--conn-id", help="an Airflow connection to build the dbt target from (instead of profiles.yml)"
    )
    parser.add_argument("--profile", dest="profile_name", help=_PROFILE_HELP)
    parser.add_argument("--target", help="dbt target (default: the profile's)")
    parser.add_argument("--vars", type=_json_object, default={}, help="dbt vars as JSON")
    parser.add_argument("--manifest", type=Path, help="a manifest.json built elsewhere (skips parsing)")
    parser.add_argument("--select", "-s", nargs="+", default=[], help="dbt selection")
    parser.add_argument("--exclude", nargs="+", default=[], help="dbt exclusion")
    parser.add_argument("--selector", help="a selector from selectors.yml")
    parser.add_argument(
        "--pattern",
        default=Pattern.PER_MODEL.value,
        choices=[p.value for p in Pattern.planned()],
        help="task granularity: one task per model, one task, or one task per group",
    )
    parser.add_argument(
        "--group-by",
        default=GroupBy.FOLDER.value,
        choices=[g.value for g in GroupBy],
        help="groups of the grouped pattern",
    )
    parser.add_argument(
        "--tests",
        default=TestMode.WITH_MODEL.value,
        choices=[m.value for m in TestMode],
        help="where a model's tests run",
    )
    parser.add_argument(
        "--execution",
        default=Execution.STREAMED.value,
        choices=[e.value for e in Execution],
        help="one dbt invocation feeding every task (streamed) or one per task",
    )
    parser.add_argument(
        "--state-aware",
        action="store_true",
        help="leave out the models whose code, upstream models and sources' data have not changed "
        "since their last successful build by this DAG",
    )


def _plan_options(args: argparse.Namespace) -> PlanOptions:
    """The plan's choices of ``run`` and ``render``."""
    return PlanOptions.of(
        pattern=args.pattern,
        select=args.select,
        exclude=args.exclude,
        selector=args.selector,
        tests=args.tests,
        execution=args.execution,
        group_by=args.group_by,
        state_aware=args.state_aware,
    )


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _add_report_args(parser: argparse.ArgumentParser) -> None:
    """How a run is shown and summarized (``run`` and ``retry``)."""
    parser.add_argument(
        "--summary-json",
        type=Path,
        help="write the run's outcome as JSON to this file (each task's state, try, duration, nodes, "
        "and a failed task's error)",
    )
    parser.add_argument(
        "--progress", default="auto", choices=["auto", "live", "plain", "none"], help="progress display"
    )


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="dbt threads")
    parser.add_argument(
        "--concurrency", type=int, help="tasks running at once (default: CPU count, at least 2)"
    )
    parser.add_argument(
        "--dag-id",
        help="DAG id (default: dbtflow_<project>[_<pattern>], plus a hash of the folder when another "
        "folder under $DBTFLOW_HOME already has that id)",
    )
    _add_report_args(parser)
    parser.add_argument(
        "--no-head-start",
        action="store_true",
        help="start dbt only when a task asks for it, not while Airflow starts (slower; for comparison)",
    )
    parser.add_argument(
        "--no-assets",
        action="store_true",
        help="emit no Airflow asset event per node built (dbt_dag(assets=False): no dbt_assets task)",
    )
    parser.add_argument(
        "--full-refresh",
        action="store_true",
        help="with --state-aware: build every model this run, changed or not",
    )
    parser.add_argument(
        "--defer-to",
        metavar="DAG_ID",
        help="slim CI: build state:modified+ only (or the selection given), reading unchanged parents "
        "from DAG_ID's last successful run (dbt's --state and --defer, with the manifest dbtflow kept)",
    )
    parser.add_argument("--retries", type=int, default=0, help="Airflow retries of each task")
    parser.add_argument("--retry-delay", type=float, default=60.0, help="seconds between tries")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbtflow", description="Run dbt projects on Apache Airflow.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="execute one DAG run of a project through an embedded Airflow")
    _add_project_args(run)
    _add_run_args(run)

    retry = commands.add_parser(
        "retry",
        help="clear the failed tasks of a DAG run and their downstream, run them again in that run, report",
    )
    retry.add_argument("dag_id", help="the DAG (as `dbtflow run` printed it, or a deployment's DAG id)")
    retry.add_argument("--run-id", help="the DAG run to retry (default: the newest one)")
    _add_report_args(retry)
    retry.add_argument(
        "--api-url",
        default=settings.airflow_api_url(),
        help="an Airflow deployment's api-server URL (default: $DBTFLOW_AIRFLOW_API_URL; without it, "
        "the runs of `dbtflow run` under $DBTFLOW_HOME). Credentials come from the environment: "
        "DBTFLOW_AIRFLOW_TOKEN, or DBTFLOW_AIRFLOW_USERNAME and DBTFLOW_AIRFLOW_PASSWORD",
    )
    retry.add_argument("--timeout", type=float, help="seconds to wait for the run to end (deployment)")
    retry.add_argument("--concurrency", type=int, help="tasks running at once (`dbtflow run` runs)")
    retry.add_argument(
        "--no-head-start",
        action="store_true",
        help="rebuild each cleared task's nodes in the task, not in one invocation (`dbtflow run` runs)",
    )

    timings = commands.add_parser(
        "timings", help="the slowest models and those whose run time grows, from the run-time history"
    )
    timings.add_argument("--dag", help="only this DAG")
    timings.add_argument("--last", type=int, default=20, help="runs per model to consider")
    timings.add_argument("--top", type=int, default=15, help="how many of the slowest models to list")
    timings.add_argument("--history-url", help="SQLAlchemy URL of the history (default: under DBTFLOW_HOME)")
    timings.add_argument("--format", default="text", choices=["text", "json"])

    report = commands.add_parser("report", help="an HTML report of run times with plots")
    report.add_argument(
        "--out", type=Path, help="folder for index.html (default: DBTFLOW_HOME/reports/<dag>)"
    )
    report.add_argument("--dag", help="only this DAG")
    report.add_argument("--project", type=Path, help="the dbt project, to mark the last run's critical path")
    report.add_argument("--profile", dest="profile_name", help=_PROFILE_HELP)
    report.add_argument("--last", type=int, default=20, help="runs per model to consider")
    report.add_argument("--history-url", help="SQLAlchemy URL of the history (default: under DBTFLOW_HOME)")

    docs = commands.add_parser(
        "docs", help="generate a project's dbt docs into DBTFLOW_HOME/docs/<project>, served by `dbtflow ui`"
    )
    docs.add_argument("project_dir", type=Path, help="folder holding dbt_project.yml")
    docs.add_argument("--profiles-dir", type=Path, help="folder holding profiles.yml")
    docs.add_argument("--conn-id", help="an Airflow connection to build the dbt target from")
    docs.add_argument("--profile", dest="profile_name", help=_PROFILE_HELP)
    docs.add_argument("--target", help="dbt target (default: the profile's)")
    docs.add_argument("--vars", type=_json_object, default={}, help="dbt vars as JSON")

    ui = commands.add_parser(
        "ui", help="the embedded Airflow's web UI on 127.0.0.1 (runs, logs, reports, dbt docs); no login"
    )
    ui.add_argument("--port", type=int, help="port (default: 8080 when free, else any free port)")

    airflow = commands.add_parser(
        "airflow",
        help="Airflow's command line on the embedded Airflow (`dbtflow airflow connections add ...`)",
    )
    airflow.add_argument("airflow_args", nargs=argparse.REMAINDER, help="arguments for `airflow`")

    render = commands.add_parser("render", help="print the task graph of a project; runs nothing")
    _add_project_args(render)
    render.add_argument("--format", default="json", choices=["json", "text"])

    demo = commands.add_parser("demo", help="run the bundled example project")
    demo.add_argument("--progress", default="auto", choices=["auto", "live", "plain", "none"])
    demo.add_argument("--summary-json", type=Path)
    return parser


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
        plan=_plan_options(args),
        threads=args.threads,
        dag_id=args.dag_id,
        concurrency=args.concurrency,
        head_start=not args.no_head_start,
        assets=not args.no_assets,
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
    plan = make_plan(project, _plan_options(args))
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

    if args.conn_id:  # the connection is read from the embedded Airflow's database
        from dbtflow.runner.home import embedded_airflow

        embedded_airflow().activate()
    project = DbtProject(
        args.project_dir,
        profiles_dir=args.profiles_dir,
        target=args.target,
        profile=args.conn_id,
        vars=args.vars,
        profile_name=args.profile_name,
    )
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
_RUNS_DBT = frozenset({"run", "retry", "demo"})


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_semaphore_warnings()
    _quiet_third_party_warnings()
    args = build_parser().parse_args(argv)
    handlers = {"run": _run, "retry": _retry, "render": _render, "demo": _demo, "timings": _timings}
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
_EXIT_AT_ONCE = frozenset({"run", "retry", "demo"})


def _exit_now(code: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
