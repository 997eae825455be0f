"""Airflow assets for dbt relations: one asset event per node a DAG run built, with the build's facts.

Who emits: the task that reported the build, when it succeeds.
- **per_model**: each node task emits its own node's event, through the DAG's node alias
  (``node_alias_name``). A streamed node task that ends in the triggerer emits it there
  (``dbtflow.airflow.node_assets``: Airflow itself registers events only from a task that succeeds
  on a worker, apache/airflow#49347); one that ends on a worker (built alone, or resumed) emits it
  as its outlet event. A node that failed or was skipped has a task that did not succeed, and no
  event, so the pattern needs no task after dbt: a green run ends as its last node task does
  (the ``dbt_assets`` teardown it had cost 2.9-5.0 s after dbt under a real scheduler, a
  scheduler pass, a deferral and a triggerer loop for a task with nothing to do, 2026-12-03).
- **single, grouped**: a build task that succeeds emits its own builds' events as its outlet
  events, through an ``AssetAlias`` so that only the nodes it built get one. What it cannot emit
  is left to ``DbtAssetsOperator``, a teardown at the end of the run: a failed task built some
  nodes, but Airflow drops its events; dbt Cloud jobs run elsewhere. The teardown reads what each
  node did in this run from the run-time history (every pattern records it there) and emits one
  event per successful build not emitted yet (``dbtflow.monitoring.asset_emissions``). It starts
  in the triggerer and ends there when nothing is owed. It runs whether dbt succeeded or not, and
  Airflow leaves teardowns out of the DAG run's state, so the run is green exactly when
  ``dbt build`` is.

``model_asset`` names a model's asset for ``schedule=``; ``upstream_assets`` is what a selection
waits for when a project is split into several DAGs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

from airflow.sdk import Asset, AssetAlias, AssetAll, BaseOperator
from airflow.triggers.base import StartTriggerArgs

from dbtflow.airflow.triggers import AssetsOwedTrigger
from dbtflow.errors import DbtflowError
from dbtflow.monitoring.asset_emissions import (
    ASSET_RESOURCE_TYPES,
    event_extra,
    mark_emitted,
    unemitted_builds,
)
from dbtflow.monitoring.history import History
from dbtflow.plan.options import PlanOptions
from dbtflow.plan.planner import selected_ids
from dbtflow.project.config import DbtProject
from dbtflow.project.graph import DbtGraph, Node
from dbtflow.project.manifest import load_graph
from dbtflow.project.relations import Warehouse, relation_of, warehouse_of
from dbtflow.state.store import StateStore

#: The names of dbtflow's asset aliases (``dbtflow:<dag id>:<task id>``).
_ALIAS_PREFIX = "dbtflow:"


def node_asset(warehouse: Warehouse, node: Node) -> Asset | None:
    """The asset of a node's relation (``None`` for a node with no relation): named by its
    OpenLineage dataset URI, or by Airflow's AIP-60 URI where an installed Airflow provider
    refuses any other form for the scheme (apache-airflow-providers-postgres does)."""
    relation = relation_of(warehouse, node)
    if relation is None:
        return None
    try:
        return Asset(uri=relation.uri)
    except ValueError:
        return Asset(uri=relation.airflow_uri)


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


def own_alias(task: BaseOperator) -> AssetAlias | None:
    """The asset alias through which ``task`` emits its builds' events, when it has one."""
    return next(
        (o for o in task.outlets if isinstance(o, AssetAlias) and o.name.startswith(_ALIAS_PREFIX)), None
    )


def emit_builds(
    project: DbtProject,
    context: Any,
    *,
    state_url: str | None,
    log: Any,
    own_try_only: bool,
    nodes: Collection[str] | None = None,
) -> int:
    """Emit one event per successful build of the run not emitted yet (of this task try's own
    invocations when ``own_try_only``; of ``nodes`` only when given), through the task's alias;
    record them; return how many.

    A task that does not emit asset events (no alias) emits nothing.
    """
    task = context["task"]
    alias = own_alias(task)
    if alias is None:
        return 0
    ti = context["ti"]
    history = History()
    builds = unemitted_builds(
        history,
        ti.dag_id,
        ti.run_id,
        task_id=ti.task_id if own_try_only else None,
        try_number=int(ti.try_number) if own_try_only else None,
    )
    if nodes is not None:
        builds = {uid: row for uid, row in builds.items() if uid in nodes}
    if not builds:
        return 0
    graph = load_graph(project)
    warehouse = warehouse_of(project)
    invocations = {
        (info.task_id, info.try_number): info.id
        for info in StateStore(state_url).invocations_of_run(ti.dag_id, ti.run_id)
    }
    emitted: list[int] = []
    for uid, row in sorted(builds.items()):
        node = graph.nodes.get(uid)
        asset = None if node is None else node_asset(warehouse, node)
        if asset is None:
            continue
        build = {
            "dag_id": row.dag_id,
            "run_id": row.run_id,
            "task_id": row.task_id,
            "try_number": row.try_number,
        }
        invocation = invocations.get((row.task_id, row.try_number))
        extra = event_extra(uid, row.status, row.execution_s, row.rows_affected, invocation, build)
        context["outlet_events"][alias].add(asset, extra=extra)
        emitted.append(row.id)
    mark_emitted(history, ti.dag_id, ti.run_id, ti.task_id, emitted)
    if nodes is None:
        log.info("Emitted %d asset event(s), one per model, seed and snapshot built.", len(emitted))
    elif emitted:
        log.info("Emitted the asset event of %s.", ", ".join(uid for uid in sorted(builds)))
    return len(emitted)


class DbtAssetsOperator(BaseOperator):
    """Emit one asset event per model, seed and snapshot that this DAG run built successfully and
    whose event the task that built it did not emit (it failed, or ended in the triggerer).

    Made a teardown by ``add_assets_task``: it runs once the dbt tasks are done, whatever their
    state, and does not count in the DAG run's state. It starts in the triggerer
    (``AssetsOwedTrigger``): when every build's event was emitted already (every task that built
    succeeded on a worker), it ends there, without a worker; else it resumes on a worker to emit.
    A later try (the run cleared and run again) emits only for what was built since.
    """

    ui_color = "#6FA8DC"

    def __init__(self, *, project: DbtProject, state_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.project = project
        self.state_url = state_url
        self.outlets = [AssetAlias(name=alias_name(self.dag_id, self.task_id))]
        self.start_from_trigger = True
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=f"{AssetsOwedTrigger.__module__}.{AssetsOwedTrigger.__qualname__}",
            trigger_kwargs={},
            next_method="execute_complete",
            timeout=None,
        )

    def execute(self, context: Any) -> int:
        return emit_builds(self.project, context, state_url=self.state_url, log=self.log, own_try_only=False)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> int:
        return self.execute(context)


def alias_name(dag_id: str, task_id: str) -> str:
    return f"{_ALIAS_PREFIX}{dag_id}:{task_id}"


def add_assets_task(
    project: DbtProject, dbt_tasks: Iterable[BaseOperator], *, state_url: str | None = None
) -> DbtAssetsOperator:
    """The asset task after ``dbt_tasks`` (in the DAG or task group being defined), as a teardown;
    each of them that builds on a worker emits its own builds' events when it succeeds."""
    task = DbtAssetsOperator(task_id="dbt_assets", project=project, state_url=state_url)
    for upstream in dbt_tasks:
        # `upstream >> task` hashes the whole DAG per edge (see dbtflow.airflow.dag._link).
        upstream.downstream_task_ids.add(task.node_id)
        task.upstream_task_ids.add(upstream.node_id)
        if getattr(upstream, "emits_own_assets", False):
            upstream.outlets = [
                *upstream.outlets,
                AssetAlias(name=alias_name(upstream.dag_id, upstream.task_id)),
            ]
    task.as_teardown()
    return task


def add_node_assets(node_tasks: Iterable[BaseOperator]) -> None:
    """per_model: each node task emits its own node's event (see the module docstring), through
    one alias of the DAG; the producer emits none."""
    for node_task in node_tasks:
        if not hasattr(node_task, "asset_alias"):
            continue  # the producer: its builds are its node tasks' to emit
        alias = AssetAlias(name=node_alias_name(node_task.dag_id))
        node_task.outlets = [*node_task.outlets, alias]
        node_task.asset_alias = alias.name


def node_alias_name(dag_id: str) -> str:
    """The alias through which a per_model DAG's node tasks emit their nodes' events."""
    return f"{_ALIAS_PREFIX}{dag_id}:nodes"
