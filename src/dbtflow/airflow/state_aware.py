"""State-aware tasks that decide for their own nodes: what they leave out, and why.

The streamed producer leaves nodes out for their own tasks (``DbtProducerOperator``); a single or
grouped task runs one dbt invocation over many nodes, so its selection simply lists the nodes
to build, and the left-out ones appear in its results table as ``unchanged``, with the reason.
A per_model task with one dbt invocation per task (``execution="per_task"``) decides for its own
node and tests when it starts, knowing what the run's tasks upstream of it have built already
(``node_task_selection``); with nothing to build it ends skipped, saying why.

These tasks run under the trigger rule ``none_failed`` (``STATE_AWARE_TRIGGER_RULE``): a task
upstream that was left out (skipped) must not skip them, since their own code or sources may have
changed; a failed one still stops them (``upstream_failed``).

The decision is ``dbtflow.monitoring.builds.prepare_state_aware``'s; a run triggered with the conf
``{"full_refresh": true}`` builds everything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dbtflow.monitoring.builds import builds_recorder, prepare_state_aware, rebuilt_in_run, record_unchanged
from dbtflow.project.config import DbtProject
from dbtflow.project.manifest import load_graph
from dbtflow.project.results import NodeResult
from dbtflow.project.selection import exact_selection
from dbtflow.project.status import UNCHANGED
from dbtflow.state.store import StateStore
from dbtflow.state.task_try import TaskTry

#: The trigger rule of a state-aware task that decides for itself (see the module docstring).
STATE_AWARE_TRIGGER_RULE = "none_failed"


def full_refresh(context: Any) -> bool:
    """The DAG run was triggered with ``{"full_refresh": true}``: a state-aware DAG builds everything."""
    dag_run = context.get("dag_run")
    conf = getattr(dag_run, "conf", None) or {}
    return bool(conf.get("full_refresh"))


@dataclass(frozen=True)
class StateAwareSelection:
    """What a state-aware batch task leaves out, and how it selects the rest."""

    #: An ``unchanged`` result (with its reason) per left-out node.
    results: list[NodeResult] = field(default_factory=list)
    #: dbt flags selecting exactly the nodes to build; ``None`` when nothing is left out.
    selection: list[str] | None = None
    #: Keeps the successful builds of this run (their fingerprints and sources' load times).
    record_builds: Callable[[Sequence[NodeResult]], None] = lambda results: None

    @classmethod
    def none(cls) -> StateAwareSelection:
        """Nothing left out, nothing recorded (a task that is not state-aware, or a retry)."""
        return cls()

    def everything(self, unique_ids: Sequence[str]) -> bool:
        """Every one of ``unique_ids`` is left out: there is nothing for dbt to run."""
        return bool(unique_ids) and len(self.results) == len(unique_ids)

    @property
    def left_out(self) -> set[str]:
        return {r.unique_id for r in self.results}

    def skip_message(self, main_node: str | None) -> str:
        """Why a task that builds nothing ends skipped: its main node's reason (else its first's)."""
        reasons = {r.unique_id: r.message for r in self.results}
        key = main_node if main_node in reasons else self.results[0].unique_id
        return f"Not built: {reasons[key]}."


def state_aware_selection(
    project: DbtProject, task: TaskTry, unique_ids: Sequence[str], context: Any, log: Any
) -> StateAwareSelection:
    """Decide which of the task's nodes to build; log why each other one is left out."""
    graph = load_graph(project)
    plan = prepare_state_aware(
        project, graph, task.dag_id, unique_ids, log, full_refresh=full_refresh(context)
    )
    left_out = [uid for uid in unique_ids if uid in plan.skipped]
    for uid in left_out:
        log.info("Not built: %s: %s.", uid, plan.skipped[uid])
    kept = [uid for uid in unique_ids if uid not in plan.skipped]
    return StateAwareSelection(
        results=[NodeResult(unique_id=uid, status=UNCHANGED, message=plan.skipped[uid]) for uid in left_out],
        selection=exact_selection(graph, kept) if left_out and kept else None,
        record_builds=builds_recorder(task, graph, plan, log),
    )


def node_task_selection(
    project: DbtProject, store: StateStore, task: TaskTry, unique_ids: Sequence[str], context: Any, log: Any
) -> StateAwareSelection:
    """Decide which of a per_task node task's nodes to build, knowing what the run has built
    already (an upstream node rebuilt in this run rebuilds its children; a test runs only with a
    node it tests). Each left-out node gets a result ``unchanged`` in the state store, with the
    reason, as the streamed producer records them. A retry leaves nothing out (its first try
    decided to build; a model built before its test failed must not hide the failure) and records
    what it builds."""
    graph = load_graph(project)
    retry = task.try_number > 1
    plan = prepare_state_aware(
        project,
        graph,
        task.dag_id,
        unique_ids,
        log,
        full_refresh=full_refresh(context) or retry,
        rebuilt=rebuilt_in_run(store, graph, task.dag_id, task.run_id),
        why_all=f"try {task.try_number}: a retry leaves nothing out" if retry else "full refresh",
    )
    record_unchanged(store, task, plan, unique_ids)
    left_out = [uid for uid in unique_ids if uid in plan.skipped]
    for uid in left_out:
        log.info("Not built: %s: %s.", uid, plan.skipped[uid])
    return StateAwareSelection(
        results=[NodeResult(unique_id=uid, status=UNCHANGED, message=plan.skipped[uid]) for uid in left_out],
        record_builds=builds_recorder(task, graph, plan, log),
    )
