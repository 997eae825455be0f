"""Airflow assets for dbt relations: one asset event per node a DAG run built, with the build's facts.

Why one task at the end of the run, and not each node's task: a streamed node task ends in the
triggerer (``TaskSuccessEvent``), and Airflow registers a task's asset events only when it
succeeds on a worker (the execution API's state update carries its outlet events; the
triggerer's path does not, apache/airflow#49347); a single or grouped task with one failed node
fails and would drop the events of the nodes it did build. So ``DbtAssetsOperator`` runs once
every dbt task is done, reads what each node did in this run from the run-time history (every
pattern records it there: streamed and per-task invocations, single and grouped builds, dbt Cloud
jobs), and emits one event per model, seed and snapshot whose newest result is a success,
through an ``AssetAlias`` outlet so that only those get an event. It is a teardown task: it runs
whether dbt succeeded or not, and Airflow leaves teardowns out of the DAG run's state, so the run
is green exactly when ``dbt build`` is. The cost: a downstream DAG starts when the run's dbt tasks
have all ended, not the moment its model was built.

``model_asset`` names a model's asset for ``schedule=``; ``upstream_assets`` is what a selection
waits for when a project is split into several DAGs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from airflow.sdk import Asset, AssetAlias, AssetAll, BaseOperator

from dbtflow.errors import DbtflowError
from dbtflow.monitoring.history import History, node_runs
from dbtflow.plan.options import PlanOptions
from dbtflow.plan.planner import selected_ids
from dbtflow.project.config import DbtProject
from dbtflow.project.graph import DbtGraph, Node
from dbtflow.project.manifest import load_graph
from dbtflow.project.relations import Warehouse, relation_of, warehouse_of
from dbtflow.project.status import NodeStatus
from dbtflow.state.store import StateStore

#: The node kinds that get an asset: what dbt materializes (not ephemeral models, not tests).
ASSET_RESOURCE_TYPES = ("model", "seed", "snapshot")
#: The try artifact key under which the asset task remembers which history rows it emitted.
_EMITTED = "emitted_through_history_id"


def node_asset(warehouse: Warehouse, node: Node) -> Asset | None:
    """The asset of a node's relation (``None`` for a node with no relation)."""
    relation = relation_of(warehouse, node)
    return None if relation is None else Asset(uri=relation.uri)


def _find_node(graph: DbtGraph, name: str) -> Node:
    if name in graph.nodes:
        return graph.nodes[name]
    found = [
        n for n in graph.nodes.values()
        if n.resource_type in ASSET_RESOURCE_TYPES and not n.is_ephemeral and name in (n.name, n.unique_id)
    ]  # fmt: skip
    if len(found) > 1 and all(n.version for n in found):
        # A versioned model: its latest version is the one `ref('name')` reads.
        found = [max(found, key=lambda n: str(n.version))]
    if len(found) == 1:
        return found[0]
    if found:
        listed = ", ".join(sorted(n.unique_id for n in found))
        raise DbtflowError(f"'{name}' names several nodes: {listed}.", "pass the unique id of one of them.")
    raise DbtflowError(
        f"No model, seed or snapshot named '{name}' in dbt project {graph.project_name}.",
        "pass the name of a model that is not ephemeral (`dbt ls --resource-type model` lists them).",
    )


def model_asset(project: DbtProject, name: str) -> Asset:
    """The Airflow asset that a DAG building model (or seed, snapshot) ``name`` emits events for:
    ``schedule=[model_asset(project, "fct_orders")]`` runs a DAG each time it is rebuilt."""
    graph = load_graph(project)
    node = _find_node(graph, name)
    asset = node_asset(warehouse_of(project), node)
    if asset is None:
        raise DbtflowError(
            f"{node.unique_id} has no relation in the warehouse, so it has no asset.",
            "name a model, seed or snapshot that dbt materializes as a table or view.",
        )
    return asset


def read_outside(graph: DbtGraph, selected: Iterable[str]) -> list[str]:
    """The buildable nodes outside ``selected`` that the selected models, seeds, snapshots and data
    tests read, looking through ephemeral models (which are part of their readers' SQL)."""
    chosen = set(selected)
    outside: set[str] = set()
    for uid in chosen:
        node = graph.nodes.get(uid)
        if node is None or node.resource_type == "unit_test":
            continue
        outside.update(p for p in graph.build_parents(uid) if p not in chosen)
    return sorted(outside)


def upstream_assets(
    project: DbtProject,
    *,
    select: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    selector: str | None = None,
) -> AssetAll:
    """The assets a DAG of this selection waits for: every model outside the selection that the
    selected nodes read. ``dbt_dag(project, select=S, schedule=upstream_assets(project, select=S))``
    runs once the DAGs that build them have all rebuilt them."""
    options = PlanOptions.of(pattern="single", select=select, exclude=exclude, selector=selector)
    graph = load_graph(project)
    chosen = selected_ids(project, graph, options.select, options.exclude, options.selector)
    outside = read_outside(graph, chosen)
    if not outside:
        described = " ".join(options.selection) or "(everything)"
        raise DbtflowError(
            f"The selection {described} reads no model outside itself, so it has nothing to wait for.",
            "schedule this DAG on time (schedule='@daily') or on model_asset(project, name); "
            "upstream_assets is for a part of a project that reads models another DAG builds.",
        )
    warehouse = warehouse_of(project)
    assets = [a for uid in outside if (a := node_asset(warehouse, graph.nodes[uid])) is not None]
    return AssetAll(*assets)


def _newest_results(dag_id: str, run_id: str, after_id: int) -> dict[str, Any]:
    """The newest history row of each node of the run (rows with an id above ``after_id`` only)."""
    history = History()
    with history.engine.connect() as conn:
        rows = conn.execute(
            sa.select(node_runs)
            .where(node_runs.c.dag_id == dag_id, node_runs.c.run_id == run_id, node_runs.c.id > after_id)
            .order_by(node_runs.c.id)
        ).all()
    return {row.unique_id: row for row in rows}


class DbtAssetsOperator(BaseOperator):
    """Emit one asset event per model, seed and snapshot that this DAG run built successfully.

    Made a teardown by ``add_assets_task``: it runs once the dbt tasks are done, whatever their
    state, and does not count in the DAG run's state. A later try (the run cleared and run again)
    emits only for what was built since the previous try emitted.
    """

    ui_color = "#6FA8DC"

    def __init__(self, *, project: DbtProject, state_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.project = project
        self.state_url = state_url
        self.outlets = [AssetAlias(name=f"dbtflow:{self.dag_id}:{self.task_id}")]

    def execute(self, context: Any) -> int:
        from dbtflow.airflow.task_try import task_try

        this_try = task_try(context)
        store = StateStore(self.state_url)
        before = store.try_artifact_before(this_try) if this_try.try_number > 1 else None
        after_id = int(before[1].get(_EMITTED, 0)) if before else 0
        newest = _newest_results(this_try.dag_id, this_try.run_id, after_id)
        graph = load_graph(self.project)
        warehouse = warehouse_of(self.project)
        invocations = {
            (info.task_id, info.try_number): info.id
            for info in store.invocations_of_run(this_try.dag_id, this_try.run_id)
        }
        alias = self.outlets[0]
        emitted = 0
        for uid, row in sorted(newest.items()):
            node = graph.nodes.get(uid)
            if (
                node is None
                or node.resource_type not in ASSET_RESOURCE_TYPES
                or row.status != NodeStatus.SUCCESS
            ):
                continue
            asset = node_asset(warehouse, node)
            if asset is None:
                continue
            extra: dict[str, Any] = {
                "unique_id": uid,
                "status": row.status,
                "execution_time_s": round(float(row.execution_s), 3),
                "invocation_id": invocations.get((row.task_id, row.try_number)),
                "dag_id": row.dag_id,
                "run_id": row.run_id,
                "task_id": row.task_id,
                "try_number": row.try_number,
            }
            if row.rows_affected is not None:
                extra["rows_affected"] = int(row.rows_affected)
            context["outlet_events"][alias].add(asset, extra=extra)
            emitted += 1
        if newest:
            store.save_try_artifact(this_try, {_EMITTED: max(row.id for row in newest.values())})
        self.log.info("Emitted %d asset event(s), one per model, seed and snapshot built.", emitted)
        return emitted


def add_assets_task(
    project: DbtProject, dbt_tasks: Iterable[BaseOperator], *, state_url: str | None = None
) -> DbtAssetsOperator:
    """The asset task after ``dbt_tasks`` (in the DAG or task group being defined), as a teardown."""
    task = DbtAssetsOperator(task_id="dbt_assets", project=project, state_url=state_url)
    for upstream in dbt_tasks:
        # `upstream >> task` hashes the whole DAG per edge (see dbtflow.airflow.dag._link).
        upstream.downstream_task_ids.add(task.node_id)
        task.upstream_task_ids.add(upstream.node_id)
    task.as_teardown()
    return task
