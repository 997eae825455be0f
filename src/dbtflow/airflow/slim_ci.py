"""Slim CI as a DAG: ``dbt_dag(project, dag_id="shop_ci", defer_to="shop_prod")``.

The DAG builds ``state:modified+`` only (unless it is given a selection), and dbt defers the
unchanged upstream relations to those of ``shop_prod``'s last successful run, whose
``manifest.json`` dbtflow kept in its state database (``dbtflow.state.manifests``): no artifact
is copied by hand, but the CI deployment needs production's ``DBTFLOW_STATE_URL``.

Each parse of the DAG file reads that manifest's digest from the state database and fetches the
manifest only when it changed, into ``$DBTFLOW_HOME/defer/<defer_to>/``; the project carries it as
``DbtProject.defer_state``, so every dbt invocation of the DAG (the ``dbt ls`` that makes its
tasks, and each task's build on its worker) runs with ``--state`` and ``--defer``. A worker parses
the DAG file too, so it reads the same manifest as long as production has not succeeded again in
between (then the tasks may differ from the scheduler's: the next run is consistent again).

With nothing modified the DAG is one task, ``nothing_modified``, that logs why and succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from airflow.sdk import BaseOperator

from dbtflow.errors import DbtflowError
from dbtflow.plan.model import TaskPlan
from dbtflow.plan.options import Pattern, PlanOptions
from dbtflow.plan.planner import make_plan
from dbtflow.project.config import DbtProject
from dbtflow.state.manifests import MODIFIED_AND_DOWNSTREAM, defer_project, nothing_modified


@dataclass(frozen=True)
class SlimCi:
    """The deferring project, its options and its plan."""

    project: DbtProject
    options: PlanOptions
    plan: TaskPlan
    #: ``nothing_modified``'s line when the plan has no task, else ``None``.
    nothing: str | None


def slim_ci_plan(
    project: DbtProject | None, options: PlanOptions, defer_to: str, state_url: str | None
) -> SlimCi:
    """Plan a DAG that builds what differs from ``defer_to``'s last successful run."""
    if project is None or options.pattern is Pattern.CLOUD:
        raise DbtflowError(
            "defer_to needs a dbt project run by dbtflow (not the cloud pattern).",
            "pass DbtProject(path) with pattern per_model, single or grouped, or leave defer_to out.",
        )
    deferral = defer_project(project, defer_to, state_url)
    if not options.select and not options.selector:
        options = replace(options, select=MODIFIED_AND_DOWNSTREAM)
    plan = make_plan(deferral.project, options)
    selection = " ".join(options.select) or f"selector {options.selector}"
    nothing = None if plan.tasks else nothing_modified(defer_to, deferral.run_id, selection)
    return SlimCi(project=deferral.project, options=options, plan=plan, nothing=nothing)


class NothingModifiedOperator(BaseOperator):
    """The only task of a slim CI DAG with nothing modified: it logs so, and succeeds."""

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message

    def execute(self, context: Any) -> None:
        self.log.info("%s", self.message)
