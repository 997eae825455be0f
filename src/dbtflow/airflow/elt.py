"""The ELT layout: extract and load → source-freshness gate → dbt → quality checks → notifications.

``elt_task_group`` wires the sections, each optional, in that order inside the DAG being defined;
``elt_dag`` builds a DAG around it. dbt never runs on stale sources: the gate sits between
loading and dbt. The success notification waits for everything, checks included; the failure
notification runs once everything is done and names what failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, BaseNotifier, BaseOperator, TaskGroup
from airflow.sdk.definitions._internal.contextmanager import DagContext

from dbtflow.airflow.batch_operator import DbtBatchOperator
from dbtflow.airflow.dag import add_dbt_tasks, new_dag
from dbtflow.airflow.freshness import DbtSourceFreshnessOperator
from dbtflow.airflow.notify import DbtflowNotifyOperator
from dbtflow.errors import DbtflowError
from dbtflow.plan.model import TaskPlan
from dbtflow.plan.naming import safe_id
from dbtflow.plan.options import PLAN_CHOICES, Execution, Pattern, PlanOptions, as_tokens
from dbtflow.plan.planner import make_plan
from dbtflow.project.config import DbtProject
from dbtflow.project.freshness import gated_sources
from dbtflow.project.invoke import selection_args
from dbtflow.project.manifest import load_graph

Task = BaseOperator | TaskGroup


@dataclass(frozen=True)
class FreshnessGate:
    """How the gate checks: ``sources`` (unique ids, ``source:`` selectors' ``name.table``, or
    ``None`` for every source the selected models read), the check interval and the timeout."""

    sources: Sequence[str] | None = None
    warn_is_fresh: bool = True
    poke_interval: float = 300.0
    timeout: float = 3600.0
    #: Skip dbt (instead of failing) when the sources stay stale.
    soft_fail: bool = False
    #: per_model only: one gate per source, in front of the models that read it. Models whose
    #: sources are stale wait, then are skipped (with their dependants), while the others run.
    #: Each model task then runs its own dbt (``execution="per_task"``).
    per_source: bool = False


class _PlanOnce:
    """The dbt section's plan, made on first use and shared by the gates and the dbt tasks."""

    def __init__(self, project: DbtProject, options: PlanOptions) -> None:
        self.project, self.options = project, options
        self._plan: TaskPlan | None = None

    def __call__(self) -> TaskPlan:
        if self._plan is None:
            self._plan = make_plan(self.project, self.options)
        return self._plan


def _gate_sources(project: DbtProject, gate: FreshnessGate, plan: _PlanOnce) -> list[str]:
    graph = load_graph(project)
    if gate.sources is None:
        return gated_sources(graph, sorted(plan().selected))
    by_name = {f"{s.source_name}.{s.name}": uid for uid, s in graph.sources.items()}
    chosen = []
    for name in gate.sources:
        uid = name if name in graph.sources else by_name.get(name.removeprefix("source:"))
        if uid is None:
            raise DbtflowError(
                f"The freshness gate names '{name}', which is not a source of {project.name}.",
                f"use one of: {', '.join(sorted(by_name))}.",
            )
        chosen.append(uid)
    return chosen


def elt_task_group(
    project: DbtProject | None,
    *,
    group_id: str | None = "elt",
    extract: Sequence[Task] | Callable[[], Sequence[Task]] = (),
    freshness: FreshnessGate | bool = True,
    checks: Sequence[BaseOperator] = (),
    dbt_tests: str | Sequence[str] | None = None,
    notify_success: Sequence[BaseNotifier] = (),
    notify_failure: Sequence[BaseNotifier] = (),
    **dbt_kwargs: Any,
) -> dict[str, list[Task]]:
    """Add the sections to the DAG being defined, in task group ``group_id`` (none with ``None``);
    return them by name.

    ``extract``: tasks or task groups that load the sources (or a function that creates them).
    ``freshness``: ``True`` gates on every source the selected models read that has a freshness
    rule; a ``FreshnessGate`` says which and how; ``False`` has no gate.
    ``checks``: quality-check operators (``SQLColumnCheckOperator``, ``SQLTableCheckOperator``...)
    run after dbt; ``dbt_tests``: a dbt selection whose tests run as a check (for example the
    tests left out of the models' tasks with ``tests="none"``).
    ``notify_success`` / ``notify_failure``: Airflow notifiers for consumers and owners.
    Other keyword arguments go to ``dbt_task_group`` (``pattern``, ``select``, ``tests``...); the
    dbt section's plan is made once, for the gates and the dbt tasks.
    """
    dag = DagContext.get_current()
    if dag is None:
        raise DbtflowError("elt_task_group was called outside a DAG.", "call it inside `with DAG(...)`.")
    if group_id is None:
        return _add_sections(
            dag, project, extract, freshness, checks, dbt_tests, notify_success, notify_failure, dbt_kwargs
        )
    with TaskGroup(group_id=group_id, tooltip="extract, freshness gate, dbt, checks, notifications"):
        return _add_sections(
            dag, project, extract, freshness, checks, dbt_tests, notify_success, notify_failure, dbt_kwargs
        )


def _add_sections(
    dag: DAG,
    project: DbtProject | None,
    extract: Sequence[Task] | Callable[[], Sequence[Task]],
    freshness: FreshnessGate | bool,
    checks: Sequence[BaseOperator],
    dbt_tests: str | Sequence[str] | None,
    notify_success: Sequence[BaseNotifier],
    notify_failure: Sequence[BaseNotifier],
    dbt_kwargs: dict[str, Any],
) -> dict[str, list[Task]]:
    existing = set(dag.task_ids)
    sections: dict[str, list[Task]] = {}
    loaded = list(extract() if callable(extract) else extract)
    for task in loaded:
        if isinstance(task, BaseOperator) and not task.has_dag():
            dag.add_task(task)
    sections["extract"] = loaded
    last: list[Task] = loaded

    gate = FreshnessGate() if freshness is True else freshness or None
    options = PlanOptions.of(**{k: v for k, v in dbt_kwargs.items() if k in PLAN_CHOICES})
    dbt_kwargs = {k: v for k, v in dbt_kwargs.items() if k not in PLAN_CHOICES}
    per_source = bool(gate and gate.per_source and options.pattern is Pattern.PER_MODEL)
    if per_source:
        options = replace(options, execution=Execution.PER_TASK)
    plan = _PlanOnce(project, options) if project is not None else None
    if gate is not None and plan is not None and project is not None and not per_source:
        sources = _gate_sources(project, gate, plan)
        if sources:
            sensor = DbtSourceFreshnessOperator(
                task_id="source_freshness",
                project=project,
                sources=sources,
                warn_is_fresh=gate.warn_is_fresh,
                poke_interval=gate.poke_interval,
                timeout=gate.timeout,
                soft_fail=gate.soft_fail,
            )
            _chain(last, [sensor])
            sections["freshness"] = last = [sensor]

    planned = plan() if plan is not None and options.pattern is not Pattern.CLOUD else None
    group = add_dbt_tasks(project, options, group_id="dbt", plan=planned, **dbt_kwargs)
    if group is not None:
        _chain(last, [group])
        if per_source and gate is not None and plan is not None and project is not None:
            sections["freshness"] = _gate_each_source(dag, project, gate, group, last, plan)
        sections["dbt"] = last = [group]

    quality: list[Task] = list(checks)
    if dbt_tests is not None and project is not None:
        quality.insert(
            0,
            DbtBatchOperator(
                task_id="dbt_tests",
                project=project,
                unique_ids=[],
                command=("test",),
                selection=selection_args(as_tokens(dbt_tests)),
            ),
        )
    for task in quality:
        if isinstance(task, BaseOperator) and not task.has_dag():
            dag.add_task(task)
    if quality:
        _chain(last, quality)
        sections["checks"] = last = quality

    extracted = {t.task_id for t in loaded if isinstance(t, BaseOperator)}
    pipeline = [t.task_id for t in dag.tasks if t.task_id not in existing or t.task_id in extracted]
    notifiers: list[Task] = []
    # The success task also keeps the DAG run's state honest: with only a failure notifier, that
    # notifier (which succeeds) would be the only leaf and a failed run would look successful.
    if notify_success or notify_failure:
        success = DbtflowNotifyOperator(task_id="notify_success", notifiers=notify_success, on="success")
        # Everything upstream, checks included, must succeed: the last section gates it.
        _chain(last, [success])
        notifiers.append(success)
    if notify_failure:
        failure = DbtflowNotifyOperator(task_id="notify_failure", notifiers=notify_failure, on="failure")
        for task_id in pipeline:
            dag.task_dict[task_id].downstream_task_ids.add(failure.task_id)
            failure.upstream_task_ids.add(task_id)
        notifiers.append(failure)
    sections["notify"] = notifiers
    return sections


def _gate_each_source(
    dag: DAG,
    project: DbtProject,
    gate: FreshnessGate,
    group: TaskGroup,
    loaders: Sequence[Task],
    plan: _PlanOnce,
) -> list[Task]:
    """One soft-failing gate per source, upstream of the model tasks that read it."""
    graph = load_graph(project)
    wanted = set(_gate_sources(project, gate, plan))
    sensors: dict[str, DbtSourceFreshnessOperator] = {}
    for spec in plan().tasks:
        if spec.main_node is None:
            continue
        task = dag.task_dict[f"{group.group_id}.{spec.task_id}"]
        for uid in graph.direct_sources(spec.main_node):
            if uid not in wanted:
                continue
            if uid not in sensors:
                source = graph.sources[uid]
                sensors[uid] = DbtSourceFreshnessOperator(
                    task_id=safe_id(f"fresh__{source.source_name}__{source.name}"),
                    project=project,
                    sources=[uid],
                    warn_is_fresh=gate.warn_is_fresh,
                    poke_interval=gate.poke_interval,
                    timeout=gate.timeout,
                    soft_fail=True,
                )
                _chain(loaders, [sensors[uid]])
            sensors[uid] >> task
    return list(sensors.values())


def _chain(upstream: Sequence[Task], downstream: Sequence[Task]) -> None:
    for up in upstream:
        for down in downstream:
            up >> down


def elt_dag(
    dag_id: str,
    project: DbtProject | None,
    *,
    schedule: Any = None,
    start_date: datetime | None = None,
    default_args: dict[str, Any] | None = None,
    extract: Sequence[Task] | Callable[[], Sequence[Task]] = (),
    freshness: FreshnessGate | bool = True,
    checks: Sequence[BaseOperator] = (),
    dbt_tests: str | Sequence[str] | None = None,
    notify_success: Sequence[BaseNotifier] = (),
    notify_failure: Sequence[BaseNotifier] = (),
    dag_kwargs: dict[str, Any] | None = None,
    **dbt_kwargs: Any,
) -> DAG:
    """A DAG with the ELT layout; see ``elt_task_group`` for the sections."""
    dag = new_dag(
        dag_id,
        schedule=schedule,
        start_date=start_date,
        default_args=default_args,
        tags=["dbt", "elt"],
        **dict(dag_kwargs or {}),
    )
    with dag:
        elt_task_group(
            project,
            group_id=None,
            extract=extract,
            freshness=freshness,
            checks=checks,
            dbt_tests=dbt_tests,
            notify_success=notify_success,
            notify_failure=notify_failure,
            **dbt_kwargs,
        )
    return dag
