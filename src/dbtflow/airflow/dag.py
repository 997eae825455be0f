"""The public API for DAG files: ``dbt_dag`` builds a DAG, ``dbt_task_group`` adds to one.

Both take the same project, pattern and selection arguments. The plan (which tasks, which
nodes, which dependencies) comes from ``dbtflow.plan``; this module only turns it into operators.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, BaseOperator, TaskGroup

from dbtflow.airflow.assets import add_assets_task, add_node_assets
from dbtflow.airflow.batch_operator import DbtBatchOperator
from dbtflow.airflow.docs_operator import DocsTarget, add_docs_task, node_doc_md
from dbtflow.airflow.operators import DbtNodeOperator, DbtProducerOperator
from dbtflow.airflow.slim_ci import NothingModifiedOperator, slim_ci_plan
from dbtflow.errors import DbtflowError
from dbtflow.monitoring.deadlines import ModelDeadlines
from dbtflow.plan.model import TaskKind, TaskPlan
from dbtflow.plan.options import Grouper, Pattern, PlanOptions
from dbtflow.plan.planner import make_plan
from dbtflow.project.config import DbtProject

if TYPE_CHECKING:
    from dbtflow.airflow.cloud import DbtCloudJob

DEFAULT_START = datetime(2024, 1, 1)


def _link(upstream: BaseOperator, downstream: BaseOperator) -> None:
    """Set one dependency between two tasks of the same DAG.

    Equivalent to ``upstream >> downstream``, which in Airflow 3.3 hashes the whole DAG (all task
    ids) for every edge: 2.2 s for the 9,000 edges of a 5,000-model project, against 0.02 s here.
    """
    upstream.downstream_task_ids.add(downstream.node_id)
    downstream.upstream_task_ids.add(upstream.node_id)


def add_plan_tasks(
    plan: TaskPlan,
    project: DbtProject,
    *,
    threads: int | None,
    state_url: str | None,
    operator_kwargs: dict[str, Any],
    build_kwargs: dict[str, Any] | None = None,
    model_deadlines: ModelDeadlines | None = None,
    state_aware: bool = False,
) -> dict[str, BaseOperator]:
    """Create an operator per task of the plan, in the current DAG or task group, and link them."""
    operators: dict[str, BaseOperator] = {}
    produced = set(plan.task(plan.producer).nodes) if plan.producer else set()
    common = {
        "project": project,
        "threads": threads,
        "state_url": state_url,
        "model_deadlines": model_deadlines,
        **operator_kwargs,
    }
    # A profile read from a Kubernetes Secret gives each task the pod override that mounts it.
    executor_config = getattr(project.profile_source, "executor_config", None)
    if executor_config is not None and "executor_config" not in operator_kwargs:
        common["executor_config"] = executor_config()
    for spec in plan.tasks:
        if spec.task_id == plan.producer:
            operators[spec.task_id] = DbtProducerOperator(
                task_id=spec.task_id,
                unique_ids=spec.nodes,
                selection=plan.producer_selection,
                state_aware=state_aware,
                **common,
            )
            continue
        if spec.kind is TaskKind.INVOCATION:
            operators[spec.task_id] = DbtBatchOperator(
                task_id=spec.task_id,
                unique_ids=spec.nodes,
                selection=spec.selection,
                state_aware=state_aware,
                **(build_kwargs or {}),
                **common,
            )
            continue
        # A task follows the producer when the producer builds all of its nodes (the at_end test
        # task does not: it runs its own `dbt test` once every model is built).
        streamed = bool(produced) and produced.issuperset(spec.nodes)
        node_task = operators[spec.task_id] = DbtNodeOperator(
            task_id=spec.task_id,
            unique_ids=spec.nodes,
            main_node=spec.main_node,
            streamed=streamed,
            producer_task_id=plan.producer,
            state_aware=state_aware,
            **common,
        )
        if spec.main_node and "doc_md" not in operator_kwargs:
            node_task.doc_md = node_doc_md(project.name, node_task.dag_id, spec.main_node)
    for spec in plan.tasks:
        for upstream in spec.upstream:
            _link(operators[upstream], operators[spec.task_id])
    if plan.producer:
        # Task ids as Airflow knows them (a task group prefixes them).
        producer = operators[plan.producer]
        assert isinstance(producer, DbtProducerOperator)
        owners = plan.task_of_node()
        # Every node some task owns (the at_end test task's tests are in the producer's build too).
        producer.node_tasks = {uid: operators[task_id].task_id for uid, task_id in owners.items()}
        for op in operators.values():
            if isinstance(op, DbtNodeOperator) and op.streamed:
                op.producer_task_id = producer.task_id
    return operators


def dbt_task_group(
    project: DbtProject | None,
    *,
    group_id: str | None = "dbt",
    pattern: str = "per_model",
    select: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    selector: str | None = None,
    tests: str = "with_model",
    execution: str = "streamed",
    group_by: str | Grouper = "folder",
    state_aware: bool = False,
    command: Sequence[str] = ("build",),
    threads: int | None = None,
    state_url: str | None = None,
    artifacts_url: str | None = None,
    artifacts_conn_id: str | None = None,
    cloud_job: DbtCloudJob | None = None,
    model_deadlines: ModelDeadlines | None = None,
    operator_kwargs: dict[str, Any] | None = None,
    assets: bool = True,
    docs: DocsTarget = False,
) -> TaskGroup | None:
    """Add the project's tasks to the DAG being defined, inside a task group (or not, with ``group_id=None``).

    ``pattern``: ``per_model`` (one task per model, seed and snapshot), ``single`` (one task, one
    dbt invocation; a retry runs ``dbt retry``), ``grouped`` (one task per group of nodes) or
    ``cloud`` (one task that triggers the dbt Cloud job ``cloud_job`` and waits; ``project`` may be
    ``None``, and a selection or ``command`` becomes the run's steps override).
    ``select`` / ``exclude`` / ``selector``: dbt's selection syntax; the nodes are exactly those of
    ``dbt ls`` with the same arguments.
    ``tests``: ``with_model`` (default), ``after_model``, ``at_end`` or ``none``.
    ``execution``: ``streamed`` (one dbt invocation feeds every node task; the default) or
    ``per_task`` (each task runs dbt for its own node, for deployments where every task must run
    on its own worker).
    ``group_by`` (grouped): ``folder`` (the top folder under ``models/``), ``tag`` (a node's first
    tag) or a function from a ``dbtflow.Node`` to a group name.
    ``state_aware`` (per_model streamed or per_task, single, grouped): leave out each model, seed
    and snapshot whose code, upstream nodes and sources' data have not changed since its last
    successful build by this DAG (per_model: its task ends skipped, saying why; single and grouped:
    the task's selection leaves it out; see ``dbtflow.project.state_aware``); a run triggered with
    the conf ``{"full_refresh": true}`` builds everything.
    (These eight are checked together as a ``dbtflow.plan.options.PlanOptions``.)
    ``command`` (single and grouped): the dbt command each task runs, ``("build",)`` by default.
    ``model_deadlines``: a ``dbtflow.monitoring.deadlines.ModelDeadlines``; its notifiers are told
    while a model runs past its expected duration (in any task that runs dbt).
    ``assets``: one Airflow asset event per model, seed and snapshot the run built, from the task
    that reported it (per_model: each node task; single and grouped: the build task, and a
    teardown task ``dbt_assets`` for what a failed one built; ``dbtflow.airflow.assets``);
    ``False`` emits none.
    ``docs``: ``True`` adds a last task ``dbt_docs`` that refreshes the project's dbt docs after
    each successful run, in ``$DBTFLOW_HOME/docs/<project>/`` (served at ``/dbtflow/docs/``), or in
    the folder of an Airflow ``ObjectStoragePath`` (or URL) given instead of ``True``
    (``dbtflow.airflow.docs_operator``).
    ``artifacts_url`` / ``artifacts_conn_id`` (single and grouped): where a try keeps its
    ``run_results.json`` for the next try's ``dbt retry``: dbtflow's state database by default
    (shared by the workers through ``DBTFLOW_STATE_URL``), or this Airflow object storage URL
    (or ``$DBTFLOW_ARTIFACTS_URL``).
    """
    options = PlanOptions.of(
        pattern=pattern,
        select=select,
        exclude=exclude,
        selector=selector,
        tests=tests,
        execution=execution,
        group_by=group_by,
        state_aware=state_aware,
    )
    return add_dbt_tasks(
        project,
        options,
        group_id=group_id,
        command=command,
        threads=threads,
        state_url=state_url,
        artifacts_url=artifacts_url,
        artifacts_conn_id=artifacts_conn_id,
        cloud_job=cloud_job,
        model_deadlines=model_deadlines,
        operator_kwargs=operator_kwargs,
        assets=assets,
        docs=docs,
    )


def add_dbt_tasks(
    project: DbtProject | None,
    options: PlanOptions,
    *,
    group_id: str | None = "dbt",
    plan: TaskPlan | None = None,
    command: Sequence[str] = ("build",),
    threads: int | None = None,
    state_url: str | None = None,
    artifacts_url: str | None = None,
    artifacts_conn_id: str | None = None,
    cloud_job: DbtCloudJob | None = None,
    model_deadlines: ModelDeadlines | None = None,
    operator_kwargs: dict[str, Any] | None = None,
    assets: bool = True,
    docs: DocsTarget = False,
) -> TaskGroup | None:
    """``dbt_task_group`` with its plan choices checked already (and, from ``elt``, the plan
    made already: ``plan`` is ``make_plan(project, options)``)."""

    def add_tasks() -> None:
        if options.pattern is Pattern.CLOUD:
            from dbtflow.airflow.cloud import add_cloud_task

            if cloud_job is None:
                raise DbtflowError(
                    "The cloud pattern needs the dbt Cloud job to run.",
                    "pass cloud_job=DbtCloudJob(job_id=..., conn_id=...).",
                )
            cloud_task = add_cloud_task(
                cloud_job,
                command=command,
                selection=options.selection,
                project=project,
                **dict(operator_kwargs or {}),
            )
            if assets and project is not None:
                add_assets_task(project, [cloud_task], state_url=state_url)
            if docs is not False:
                add_docs_task(project, [cloud_task], docs)
            return
        if project is None:
            raise DbtflowError(
                f"The {options.pattern} pattern needs a dbt project.", "pass DbtProject(path)."
            )
        operators = add_plan_tasks(
            plan or make_plan(project, options),
            project,
            threads=threads,
            state_url=state_url,
            operator_kwargs=dict(operator_kwargs or {}),
            build_kwargs={
                "command": tuple(command),
                "artifacts_url": artifacts_url,
                "artifacts_conn_id": artifacts_conn_id,
            },
            model_deadlines=model_deadlines,
            state_aware=options.state_aware,
        )
        if assets and options.pattern == "per_model":
            add_node_assets(operators.values())
        elif assets:
            add_assets_task(project, operators.values(), state_url=state_url)
        if docs is not False:
            add_docs_task(project, operators.values(), docs)

    if group_id is None:
        add_tasks()
        return None
    name = project.name if project is not None else f"dbt Cloud job {cloud_job.job_id if cloud_job else ''}"
    with TaskGroup(group_id=group_id, tooltip=f"{name} ({options.pattern})") as group:
        add_tasks()
    return group


def new_dag(
    dag_id: str,
    *,
    schedule: Any,
    start_date: datetime | None,
    default_args: dict[str, Any] | None,
    tags: list[str],
    **dag_kwargs: Any,
) -> DAG:
    """An Airflow ``DAG`` with dbtflow's defaults: no catch-up, dbt tags, a fixed start date, and
    one active run at a time (two runs would write the same models; the state store also makes
    a second run's dbt wait for the first, see ``dbtflow.streaming.producer.wait_for_other_runs``)."""
    dag_kwargs.setdefault("catchup", False)
    dag_kwargs.setdefault("max_active_runs", 1)
    dag_kwargs.setdefault("tags", tags)
    if default_args is not None:
        dag_kwargs["default_args"] = default_args
    return DAG(dag_id, schedule=schedule, start_date=start_date or DEFAULT_START, **dag_kwargs)


def dbt_dag(
    project: DbtProject | None,
    *,
    dag_id: str,
    schedule: Any = None,
    start_date: datetime | None = None,
    pattern: str = "per_model",
    select: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    selector: str | None = None,
    tests: str = "with_model",
    execution: str = "streamed",
    group_by: str | Grouper = "folder",
    state_aware: bool = False,
    command: Sequence[str] = ("build",),
    threads: int | None = None,
    state_url: str | None = None,
    artifacts_url: str | None = None,
    artifacts_conn_id: str | None = None,
    cloud_job: DbtCloudJob | None = None,
    model_deadlines: ModelDeadlines | None = None,
    default_args: dict[str, Any] | None = None,
    operator_kwargs: dict[str, Any] | None = None,
    assets: bool = True,
    docs: DocsTarget = False,
    defer_to: str | None = None,
    **dag_kwargs: Any,
) -> DAG:
    """A DAG that runs the dbt project with the given pattern; see ``dbt_task_group`` for the arguments.

    ``defer_to`` (slim CI): build ``state:modified+`` only (or the selection given), reading the
    unchanged upstream relations from those of DAG ``defer_to``'s last successful run, whose
    manifest dbtflow kept in its state database; with nothing modified the DAG is one task,
    ``nothing_modified``, that succeeds (``dbtflow.airflow.slim_ci``).
    Other keyword arguments go to Airflow's ``DAG`` (``catchup``, ``tags``, ``max_active_tasks``...).
    """
    options = PlanOptions.of(
        pattern=pattern,
        select=select,
        exclude=exclude,
        selector=selector,
        tests=tests,
        execution=execution,
        group_by=group_by,
        state_aware=state_aware,
    )
    slim = slim_ci_plan(project, options, defer_to, state_url) if defer_to is not None else None
    if slim is not None:
        project, options = slim.project, slim.options
    dag_kwargs.setdefault("doc_md", _doc(dag_id, project, options))
    dag = new_dag(
        dag_id, schedule=schedule, start_date=start_date, default_args=default_args,
        tags=["dbt", options.pattern.value], **dag_kwargs,
    )  # fmt: skip
    with dag:
        if slim is not None and slim.nothing is not None:
            NothingModifiedOperator(task_id="nothing_modified", message=slim.nothing)
            return dag
        add_dbt_tasks(
            project,
            options,
            group_id=None,
            plan=slim.plan if slim is not None else None,
            command=command,
            threads=threads,
            state_url=state_url,
            artifacts_url=artifacts_url,
            artifacts_conn_id=artifacts_conn_id,
            cloud_job=cloud_job,
            model_deadlines=model_deadlines,
            operator_kwargs=operator_kwargs,
            assets=assets,
            docs=docs,
        )
    return dag


def _doc(dag_id: str, project: DbtProject | None, options: PlanOptions) -> str:
    what = f"dbt project **{project.name}** at `{project.path}`" if project is not None else "A dbt Cloud job"
    lines = [f"{what}, pattern `{options.pattern}`."]
    lines.append(
        "Run times, growth trends and the last run's critical path: "
        f"[dbt run-time report](/dbtflow/reports/{dag_id}/) (live from the run-time history)."
    )
    if project is not None:
        lines.append(f"Models, columns and lineage: [dbt docs](/dbtflow/docs/{project.name}/).")
    if options.select or options.exclude or options.selector:
        lines.append(
            f"Selection: select `{' '.join(options.select)}` exclude `{' '.join(options.exclude)}`"
            f" selector `{options.selector or ''}`."
        )
    return "\n\n".join(lines)
