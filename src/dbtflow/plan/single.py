"""The single pattern: the whole selection in one task, one dbt invocation."""

from __future__ import annotations

from collections.abc import Sequence

from dbtflow.plan.model import TaskKind, TaskPlan, TaskSpec
from dbtflow.project.graph import DbtGraph

SINGLE_TASK_ID = "dbt_build"


def plan_single(graph: DbtGraph, selected: frozenset[str], selection: Sequence[str]) -> TaskPlan:
    """One task that runs the DAG's own selection (``selection`` holds its dbt flags); its nodes
    are those dbt reports a result for (not ephemeral models)."""
    nodes = tuple(sorted(uid for uid in selected if not graph.nodes[uid].is_ephemeral))
    task = TaskSpec(task_id=SINGLE_TASK_ID, kind=TaskKind.INVOCATION, nodes=nodes, selection=tuple(selection))
    return TaskPlan(pattern="single", tasks=(task,), selected=selected)
