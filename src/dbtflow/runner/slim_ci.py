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
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING

from dbtflow.errors import DbtflowError
from dbtflow.settings import dbtflow_home
from dbtflow.state.manifests import DagManifests

if TYPE_CHECKING:
    from dbtflow.runner.run import RunRequest

#: The selection of a slim CI run when none is given.
MODIFIED_AND_DOWNSTREAM = ("state:modified+",)


def ci_dag_id(defer_to: str) -> str:
    """The DAG id of slim CI runs deferring to ``defer_to`` (never production's own id)."""
    return f"{defer_to}_slim_ci"


def deferred(request: RunRequest, defer_to: str) -> RunRequest:
    """``request`` as a slim CI run against ``defer_to``'s last successful run; sets ``DBT_STATE``
    and ``DBT_DEFER`` in this process's environment (inherited by every dbt invocation)."""
    folder = dbtflow_home() / "defer" / defer_to
    found = DagManifests().write_state_dir(defer_to, folder)
    if found is None:
        raise DbtflowError(
            f"The DAG {defer_to} has no successful run whose manifest dbtflow kept.",
            f"run production once with dbtflow (`dbtflow run PROJECT --dag-id {defer_to}`, or its DAG "
            "under Airflow with the same DBTFLOW_STATE_URL), then retry.",
        )
    _, digest = found
    os.environ["DBT_STATE"] = str(folder)
    os.environ["DBT_DEFER"] = "true"
    plan = (
        request.plan
        if request.plan.select or request.plan.selector
        else replace(request.plan, select=MODIFIED_AND_DOWNSTREAM)
    )
    return replace(
        request,
        plan=plan,
        vars={**request.vars, "dbtflow_deferred_to": digest[:16]},
        dag_id=request.dag_id or ci_dag_id(defer_to),
    )
