"""``dbtflow run``: render a project's DAG and execute one DAG run through the embedded Airflow.

Order matters for speed: the plan is made and dbt forked before Airflow is imported, so that
dbt's import and the manifest load (in the forked process) overlap Airflow's start-up (here).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from dbtflow.airflow.lineage import lineage_enabled, run_parent
from dbtflow.errors import DbtflowError
from dbtflow.plan.model import TaskPlan, TestMode
from dbtflow.plan.options import PLAN_CHOICES, Pattern, PlanOptions
from dbtflow.plan.planner import make_plan
from dbtflow.project.config import DbtProject
from dbtflow.project.event_time import EventTimeWindow
from dbtflow.project.invoke import warm_up
from dbtflow.project.manifest import load_manifest
from dbtflow.runner.dag_ids import choose_dag_id, request_file, requests_lock
from dbtflow.runner.dag_runs import create_run, plan_run, sync_dag
from dbtflow.runner.dagfile import DagFileSpec
from dbtflow.runner.display import RunDisplay
from dbtflow.runner.failures import local_reasons, with_errors
from dbtflow.runner.forked_dbt import ForkedDbt
from dbtflow.runner.home import embedded_airflow
from dbtflow.runner.interrupt import _interruptible
from dbtflow.runner.loop import LocalDagRun, RunOutcome
from dbtflow.runner.owners import (
    fail_abandoned_runs,
    owners_lock,
    record_owner,
)
from dbtflow.runner.resume import clear_for_retry, unreported_successes
from dbtflow.runner.slim_ci import NothingModified, deferred
from dbtflow.runner.timeline import StartUp
from dbtflow.state.manifests import keep_project_manifest
from dbtflow.state.task_try import TaskTry

_log = logging.getLogger(__name__)


@dataclass
class RunRequest:
    """Arguments of ``dbtflow run``."""

    project_dir: Path
    profiles_dir: Path | None = None
    target: str | None = None
    #: An Airflow connection id to build the dbt target from (``--conn-id``).
    profile: str | None = None
    #: The profile's name in profiles.yml (``--profile``), over dbt_project.yml's ``profile:``.
    profile_name: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    manifest_path: Path | None = None
    #: The plan's choices (stored flat in the request's JSON, as ``dbt_dag``'s arguments).
    plan: PlanOptions = field(default_factory=PlanOptions)
    threads: int | None = None
    dag_id: str | None = None
    concurrency: int | None = None
    #: Start the streamed dbt invocation while Airflow starts (see ``dbtflow.runner.forked_dbt``).
    head_start: bool = True
    #: An asset event per node built (``dbt_dag(assets=...)``).
    assets: bool = True
    progress: str = "auto"
    retries: int = 0
    retry_delay_s: float = 60.0
    #: A state-aware DAG builds everything in this run (the run's conf ``{"full_refresh": true}``).
    full_refresh: bool = False
    #: Slim CI: build ``state:modified+`` deferring to this DAG's last successful run
    #: (``dbtflow.runner.slim_ci``).
    defer_to: str | None = None
    #: The DAG's schedule (a cron expression or preset), its runs covering data intervals in UTC;
    #: ``None`` for none. Set by ``dbtflow backfill`` (``dbtflow.runner.backfill``).
    schedule: str | None = None

    def project(self) -> DbtProject:
        return DbtProject(
            self.project_dir,
            profiles_dir=self.profiles_dir,
            target=self.target,
            vars=self.vars,
            profile=self.profile,
            manifest_path=self.manifest_path,
            profile_name=self.profile_name,
        )

    def dag_args(self) -> dict[str, Any]:
        """``dbt_dag``'s arguments for the DAG file: plain values, defaults left out."""
        choices = self.plan.choices()
        args: dict[str, Any] = {"pattern": choices["pattern"]}
        if self.plan.pattern is Pattern.GROUPED:
            args["group_by"] = choices["group_by"]
        for name in ("select", "exclude", "selector"):
            if choices[name]:
                args[name] = choices[name]
        if self.threads:
            args["threads"] = self.threads
        if self.plan.tests is not TestMode.WITH_MODEL:
            args["tests"] = choices["tests"]
        if not self.plan.streamed:
            args["execution"] = choices["execution"]
        if self.plan.state_aware:
            args["state_aware"] = True
        if not self.assets:
            args["assets"] = False
        args["max_active_tasks"] = self.workers()
        if self.retries:
            args["default_args"] = {
                "retries": self.retries,
                "retry_delay": timedelta(seconds=self.retry_delay_s),
            }
        return args

    def workers(self) -> int:
        return self.concurrency or max(2, os.cpu_count() or 2)

    def to_json(self) -> str:
        """The request as JSON (paths as text; it holds no secret: a profile is a connection id).
        The plan's choices are top-level keys, as before they were grouped."""
        document: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, PlanOptions):
                document.update(value.choices())
            else:
                document[f.name] = str(value) if isinstance(value, Path) else value
        return json.dumps(document, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RunRequest:
        document = json.loads(text)
        known = {f.name for f in fields(cls)} - {"plan"}
        values: dict[str, Any] = {k: v for k, v in document.items() if k in known}
        for name in ("project_dir", "profiles_dir", "manifest_path"):
            if values.get(name) is not None:
                values[name] = Path(values[name])
        choices = {k: v for k, v in document.items() if k in PLAN_CHOICES}
        return cls(plan=PlanOptions.of(**choices), **values)


@dataclass
class _Prepared:
    """What both ``run`` and ``retry`` set up before Airflow is imported."""

    project: DbtProject
    plan: TaskPlan
    dag_id: str
    dag_file: Path
    forked_dbt: ForkedDbt | None
    #: How long the parse took; Airflow's start is timed from its end (the final line says both).
    startup: StartUp = field(default_factory=StartUp)


def _prepare(request: RunRequest) -> _Prepared:
    """Activate the embedded Airflow, plan the DAG, write its file, and fork dbt."""
    production_run = None
    if request.defer_to:
        request, production_run = deferred(request, request.defer_to)
    airflow_home = embedded_airflow()
    airflow_home.activate()
    project = request.project()
    parse_started = time.monotonic()
    plan = make_plan(project, request.plan)
    startup = StartUp(parse_s=time.monotonic() - parse_started)
    if not plan.tasks and request.defer_to and production_run:
        selection = " ".join(request.plan.select) or f"selector {request.plan.selector}"
        raise NothingModified(str(request.dag_id), request.defer_to, production_run, selection)
    if not plan.tasks:
        raise DbtflowError(
            f"The selection matches no model, seed, snapshot or test of {project.name}.",
            "widen --select / --exclude (`dbt ls` with the same arguments shows what they match).",
        )
    with requests_lock():
        spec = DagFileSpec(
            dag_id=choose_dag_id(project.path, project.name, request.plan.pattern.value, request.dag_id),
            project_path=project.path,
            profiles_dir=project.profiles_dir,
            target=project.target,
            vars=dict(project.vars),
            profile=request.profile,
            profile_name=request.profile_name,
            manifest_path=project.manifest_path,
            dag_args=request.dag_args(),
            schedule=request.schedule,
        )
        dag_file = spec.write(airflow_home.dags_folder)
        # The request records the project's absolute folder: the DAG id belongs to it from now on.
        recorded = replace(
            request,
            dag_id=spec.dag_id,
            project_dir=project.path,
            profiles_dir=project.profiles_dir,
            manifest_path=project.manifest_path,
        )
        request_file(spec.dag_id).write_text(recorded.to_json())
    forked_dbt = None
    # A state-aware run decides what to build in its producer task (after measuring the sources):
    # no head start, which would build everything.
    if plan.producer is not None and request.head_start and not request.plan.state_aware:
        forked_dbt = ForkedDbt(project=project, threads=request.threads)
        forked_dbt.fork()
    return _Prepared(
        project=project,
        plan=plan,
        dag_id=spec.dag_id,
        dag_file=dag_file,
        forked_dbt=forked_dbt,
        startup=startup,
    )


def _load(prepared: _Prepared) -> tuple[Any, Any]:
    """Load the DAG file through Airflow's loader: the DAG and its DagBag."""
    dag, dagbag = _load_dag(prepared.dag_file, prepared.dag_id)
    if prepared.forked_dbt is not None and prepared.plan.producer is not None:
        dag.task_dict[prepared.plan.producer].start_in_triggerer()
    return dag, dagbag


def _register(dagbag: Any) -> None:
    """Register the loaded DAG in the metadata database (and fail the runs left by dead owners)."""
    embedded_airflow().ensure_database()
    sync_dag(dagbag)
    fail_abandoned_runs()


def _load_and_sync(prepared: _Prepared) -> Any:
    """Load the DAG file through Airflow's loader and register the DAG in the metadata database."""
    dag, dagbag = _load(prepared)
    _register(dagbag)
    return dag


def _drive(
    request: RunRequest, prepared: _Prepared, dag: Any, scheduler_dag: Any, dag_run: Any
) -> RunOutcome:
    def warm_dbt() -> None:
        # Tasks that run dbt are forked from this process: import and warm up dbt once, here.
        warm_up(prepared.project, load_manifest(prepared.project))

    options = request.plan
    mode = options.pattern.value
    if options.pattern is Pattern.PER_MODEL:
        mode += f", {options.execution}"
    title = f"{dag.dag_id} ({mode})"
    live = {"auto": None, "live": True, "plain": False, "none": False}[request.progress]
    prepared.startup.airflow_started()
    quiet = request.progress == "none"
    with RunDisplay(title, len(dag.tasks), live=live, quiet=quiet, startup=prepared.startup) as display:
        outcome = LocalDagRun(
            dag,
            scheduler_dag,
            dag_run,
            concurrency=request.workers(),
            display=display,
            forked_dbt=prepared.forked_dbt,
            warm_up=warm_dbt,
        ).run()
    found = local_reasons(outcome.dag_id, outcome.run_id, outcome.tasks)
    outcome.tasks = with_errors(outcome.tasks, found)
    display.final_table(outcome.tasks, outcome.state, outcome.run_id)
    logs = {task_id: reason.log for task_id, reason in found.items()}
    display.failures(outcome.tasks, logs, f"dbtflow retry {outcome.dag_id}")
    return outcome


def run_project(request: RunRequest) -> RunOutcome:
    """Execute one DAG run of the project and return its outcome (a successful one without a DAG
    run when a slim CI run finds nothing modified)."""
    try:
        prepared = _prepare(request)
    except NothingModified as nothing:
        print(nothing.line)
        return RunOutcome(dag_id=nothing.dag_id, run_id="", state="success", tasks=[])
    try:
        dag, dagbag = _load(prepared)
        planned = plan_run(dag, {"full_refresh": True} if request.full_refresh else None)
        plan = prepared.plan
        head_start = prepared.forked_dbt if plan.producer is not None else None
        producer = TaskTry(dag.dag_id, planned.run_id, str(plan.producer), try_number=1)
        # The lineage parent follows once the run exists: making it imports the OpenLineage
        # provider's adapter (0.5-0.9 s), which Airflow's registration of the DAG loads anyway.
        lineage = lineage_enabled()
        if head_start is not None:
            # dbt starts on the planned run while Airflow registers the DAG and creates the run
            # (0.6-1.3 s at 100 models, 2026-12-04): nothing it does needs either.
            head_start.start(
                producer,
                plan.task(producer.task_id).nodes,
                selection=plan.producer_selection,
                skip_succeeded=True,
                lineage_follows=lineage,
                event_time=EventTimeWindow.of_run(planned),
            )
        try:
            _register(dagbag)
            with owners_lock():
                dag_run, scheduler_dag = create_run(dag, planned)
                record_owner(dag.dag_id, dag_run.run_id)
            if head_start is not None and lineage:
                head_start.send_lineage_parent(run_parent(dag_run, producer))
        except BaseException:
            if head_start is not None:
                head_start.stop()  # dbt is building a run that will not exist
            raise
        with _interruptible(scheduler_dag, dag_run.run_id, prepared.forked_dbt):
            outcome = _drive(request, prepared, dag, scheduler_dag, dag_run)
        if outcome.state == "success":
            # For slim CI runs deferring to this DAG (the producer task keeps it too, unless it
            # ended in the triggerer, attached to the head start).
            keep_project_manifest(prepared.project, dag.dag_id, dag_run.run_id, None, _log)
        return outcome
    finally:
        if prepared.forked_dbt is not None:
            prepared.forked_dbt.finish()


def retry_dag(
    dag_id: str,
    run_id: str | None = None,
    *,
    head_start: bool | None = None,
    progress: str | None = None,
    concurrency: int | None = None,
) -> RunOutcome:
    """``dbtflow retry DAG_ID``: retry a run that ``dbtflow run`` made under this ``$DBTFLOW_HOME``,
    with the arguments of the run that last wrote the DAG (some may be overridden)."""
    path = request_file(dag_id)
    if not path.exists():
        raise DbtflowError(
            f"No DAG {dag_id} has been run by `dbtflow run` under {embedded_airflow().home}.",
            "check the DAG id (the run's summary shows it), set DBTFLOW_HOME to the folder the run "
            "used, or pass --api-url to retry a run of an Airflow deployment.",
        )
    request = RunRequest.from_json(path.read_text())
    if head_start is not None:
        request.head_start = head_start
    if progress is not None:
        request.progress = progress
    if concurrency is not None:
        request.concurrency = concurrency
    return retry_project(request, run_id)


def retry_project(request: RunRequest, run_id: str | None = None) -> RunOutcome:
    """Clear the failed tasks of a DAG run (the last one by default) and their downstream, and
    run them again in the same DAG run. Successful tasks are left alone.

    With the head start, the cleared nodes are rebuilt in one dbt invocation that their tasks
    reflect (as ``dbt retry`` would); without it, each cleared task builds its node alone.
    """
    prepared = _prepare(request)
    try:
        dag = _load_and_sync(prepared)
        dag_run, scheduler_dag, cleared = clear_for_retry(dag, run_id)
        with _interruptible(scheduler_dag, dag_run.run_id, prepared.forked_dbt):
            plan = prepared.plan
            if prepared.forked_dbt is not None and plan.producer is not None:
                produced = set(plan.task(plan.producer).nodes)
                nodes = [
                    uid
                    for spec in plan.tasks
                    if spec.task_id in cleared
                    and spec.task_id != plan.producer
                    and produced.issuperset(spec.nodes)
                    for uid in spec.nodes
                ]
                done = unreported_successes(dag.dag_id, dag_run.run_id, nodes)
                retrying = TaskTry(dag.dag_id, dag_run.run_id, "dbtflow_retry", try_number=1)
                prepared.forked_dbt.start(
                    retrying,
                    [uid for uid in nodes if uid not in done],
                    lineage_parent=run_parent(dag_run, retrying),
                    event_time=EventTimeWindow.of_run(dag_run),
                )
            return _drive(request, prepared, dag, scheduler_dag, dag_run)
    finally:
        if prepared.forked_dbt is not None:
            prepared.forked_dbt.finish()


def _load_dag(dag_file: Path, dag_id: str) -> tuple[Any, Any]:
    from airflow.dag_processing.dagbag import DagBag

    dagbag = DagBag(dag_folder=str(dag_file), safe_mode=False)
    if dagbag.import_errors:
        detail = next(iter(dagbag.import_errors.values())).strip().splitlines()[-1]
        raise DbtflowError(
            f"Airflow could not load the generated DAG file {dag_file}: {detail}",
            "correct the cause above; the DAG file is regenerated on every run.",
        )
    return dagbag.dags[dag_id], dagbag
