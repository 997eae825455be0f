"""State-aware single and grouped tasks: the selection that leaves out the unchanged nodes.

The streamed producer leaves nodes out for their own tasks (``DbtProducerOperator``); a single or
grouped task runs one dbt invocation over many nodes, so its selection simply lists the nodes
to build, and the left-out ones appear in its results table as ``unchanged``, with the reason.
The decision is ``dbtflow.monitoring.builds.prepare_state_aware``'s; a run triggered with the conf
``{"full_refresh": true}`` builds everything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dbtflow.monitoring.builds import builds_recorder, prepare_state_aware
from dbtflow.project.config import DbtProject
from dbtflow.project.manifest import load_graph
from dbtflow.project.results import NodeResult
from dbtflow.project.selection import exact_selection
from dbtflow.project.status import UNCHANGED
from dbtflow.state.task_try import TaskTry


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
