"""The ``dbtflow`` command line's arguments: one parser, the plan options read from it once.

``cli.py`` runs the commands; this module only says what each accepts, so the choices come from
the plan's enums (``dbtflow.plan.options``) and are not repeated.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path
from typing import Any

from dbtflow import settings
from dbtflow.plan.model import TestMode
from dbtflow.plan.options import Execution, GroupBy, Pattern, PlanOptions

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


def plan_options(args: argparse.Namespace) -> PlanOptions:
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


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


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
        "--assets",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="emit an Airflow asset event per node built (as dbt_dag's default). Off by default "
        "here: the embedded Airflow has no scheduler to start DAGs on them",
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

    backfill = commands.add_parser(
        "backfill",
        help="one DAG run per data interval between two dates (Airflow's backfill), on the embedded "
        "Airflow; microbatch models build each run's interval",
    )
    _add_project_args(backfill)  # PROJECT_DIR may be a DAG id that `dbtflow run` ran instead
    _add_run_args(backfill)
    backfill.add_argument(
        "--from", dest="from_date", type=_date, required=True, help="first logical date (UTC)"
    )
    backfill.add_argument("--to", dest="to_date", type=_date, required=True, help="last logical date (UTC)")
    backfill.add_argument(
        "--schedule",
        help="cron expression or preset whose data intervals the runs cover, in UTC (default: the DAG's "
        "last backfill's, else @daily)",
    )
    backfill.add_argument(
        "--reprocess",
        default="none",
        choices=["none", "failed", "completed"],
        help="intervals that already have a run: leave them (none), run the failed ones again, or all",
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
    docs.add_argument(
        "--target-path",
        help="write the docs into this folder instead: a path or an Airflow object storage URL "
        "(s3://bucket/docs/shop, file:///srv/docs/shop); not served by `dbtflow ui`",
    )
    docs.add_argument("--target-conn-id", help="the Airflow connection of --target-path's storage")

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
