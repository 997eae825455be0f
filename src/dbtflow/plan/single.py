"""The single pattern: the whole selection in one task, one dbt invocation."""

from __future__ import annotations

from collections.abc import Sequence

from dbtflow.plan.model import TaskKind, TaskPlan, TaskSpec

SINGLE_TASK_ID = "dbt_build"


def plan_single(selected: frozenset[str], selection: Sequence[str]) -> TaskPlan:
    """One task that runs the DAG's own selection (``selection`` holds its dbt flags)."""
    task = TaskSpec(
        task_id=SINGLE_TASK_ID, kind=TaskKind.BUILD, nodes=tuple(sorted(selected)), selection=tuple(selection)
    )
    return TaskPlan(pattern="single", tasks=(task,), selected=selected)
