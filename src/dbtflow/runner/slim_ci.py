"""Slim CI for ``dbtflow run``: build only what changed, reading unchanged parents from production.

``dbtflow run PROJECT --target ci --defer-to DAG_ID`` runs dbt's own slim CI: the selection is
``state:modified+`` (unless one is given) and dbt defers the unchanged upstream relations to
those of ``DAG_ID``'s last successful run, with ``--state`` and ``--defer``. The ``--state``
manifest is the one that run kept in dbtflow's state database (``dbtflow.state.manifests``), so no
artifact is copied by hand. dbt reads both flags from its environment (``DBT_STATE``,
``DBT_DEFER``), which every dbt invocation of the run inherits: the ``dbt ls`` that selects the
tasks, the parse, and each task's build.

The selection depends on the production manifest as much as on the project: the manifest's digest
goes into the run's vars (``dbtflow_deferred_to``), which key dbtflow's parse cache, so a cached
selection never outlives the manifest it was made against.

When nothing is modified there is nothing to run: ``NothingModified`` says so, and the command
ends successfully without starting a DAG run.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING

from dbtflow.errors import DbtflowError
from dbtflow.state.manifests import MODIFIED_AND_DOWNSTREAM, defer_project, nothing_modified

if TYPE_CHECKING:
    from dbtflow.runner.run import RunRequest


class NothingModified(DbtflowError):
    """A slim CI run's selection matched no node: nothing differs from production's manifest.

    ``dbtflow run`` ends successfully on it (``line`` is its output); a ``dbtflow retry`` of an
    older slim CI run reports it as an error (there is nothing to retry against)."""

    def __init__(self, dag_id: str, defer_to: str, production_run: str, selection: str) -> None:
        self.dag_id, self.defer_to, self.production_run = dag_id, defer_to, production_run
        self.line = nothing_modified(defer_to, production_run, selection)
        super().__init__(self.line, "nothing to do; modify a model, or run without --defer-to.")


def ci_dag_id(defer_to: str) -> str:
    """The DAG id of slim CI runs deferring to ``defer_to`` (never production's own id)."""
    return f"{defer_to}_slim_ci"


def deferred(request: RunRequest, defer_to: str) -> tuple[RunRequest, str]:
    """``request`` as a slim CI run against ``defer_to``'s last successful run, and that run's id;
    sets ``DBT_STATE`` and ``DBT_DEFER`` in this process's environment (inherited by every dbt
    invocation)."""
    deferral = defer_project(request.project(), defer_to)
    os.environ["DBT_STATE"] = str(deferral.project.defer_state)
    os.environ["DBT_DEFER"] = "true"
    plan = (
        request.plan
        if request.plan.select or request.plan.selector
        else replace(request.plan, select=MODIFIED_AND_DOWNSTREAM)
    )
    deferred_request = replace(
        request,
        plan=plan,
        vars=dict(deferral.project.vars),
        dag_id=request.dag_id or ci_dag_id(defer_to),
    )
    return deferred_request, deferral.run_id
