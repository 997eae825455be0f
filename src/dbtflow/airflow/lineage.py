"""OpenLineage run events per dbt node, sent through Airflow's OpenLineage provider.

Airflow's provider emits one OpenLineage run per task; a streamed per_model run builds every node
in the producer's one dbt invocation, and a single task builds them all, so the provider alone
would show one job with no datasets. Here each node that ran gets its own run: a START and a
COMPLETE (or FAIL, with dbt's message), with the relations it read as inputs and the one it
wrote as output (named as ``dbtflow.project.relations`` names them, as the assets are), its SQL,
and a parent facet pointing to the Airflow task's OpenLineage run (the provider's own macros
make its ids). They are sent from where a node's result becomes known on the worker (the
producer's results callback, or a build task's results, or the dbt process that ``dbtflow run``
forks for the producer, which has no task context: ``run_parent`` makes the same parent ids from
the DAG run as the provider's macros do), by a process of their own
(``dbtflow.airflow.lineage_sender``), so that neither a slow receiver nor the work of sending
holds up dbt. Nothing happens unless the provider is installed and configured
(``[openlineage] transport``, as for the rest of Airflow).

The forked dbt of ``dbtflow run`` has not imported Airflow, and importing it there for the
provider's adapter cost most of lineage's CPU (py-spy, 2026-12-03: the import took about two
thirds of the lineage thread's samples, on the cores dbt runs on). So the runner resolves the
client configuration as the provider does (``client_config``) and hands it over with the parent
(``run_parent``): that process sends with the OpenLineage client alone.
A task on a worker, where Airflow is loaded anyway, sends through the provider's adapter (which
also redacts the secrets the task registered), made in the task's own process before the sender
starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

from dbtflow.airflow.lineage_sender import SenderProcess, settle_http_session
from dbtflow.project.config import DbtProject
from dbtflow.project.graph import DbtGraph
from dbtflow.project.manifest import load_graph, load_manifest
from dbtflow.project.relations import Relation, Warehouse, relation_of, relation_parts, warehouse_of
from dbtflow.project.results import NodeResult
from dbtflow.state.task_try import TaskTry

ResultsCallback = Callable[[Sequence[NodeResult]], None]
#: What a node lineage's sender is given: ``("parent", dict | None)``, then ``("results", [...])``.
_Item = tuple[str, Any]
PRODUCER = "https://github.com/dbtflow/dbtflow"
#: How long a task waits at its end for events still being sent.
DRAIN_TIMEOUT_S = 30.0


def lineage_enabled() -> bool:
    """Whether Airflow's OpenLineage provider is installed and configured to send events."""
    try:
        from airflow.providers.openlineage import conf
    except ImportError:
        return False
    return not conf.is_disabled()


def task_parent(context: Any) -> dict[str, str]:
    """The parent of a task's node runs: the Airflow task's OpenLineage run (the provider's macros)."""
    from airflow.providers.openlineage.plugins import macros

    ti = context["ti"]
    return {
        "dag_id": str(ti.dag_id),
        "namespace": macros.lineage_job_namespace(),
        "run_id": macros.lineage_run_id(ti),
        "job_name": macros.lineage_job_name(ti),
        "root_run_id": macros.lineage_root_run_id(ti),
        "root_job_name": macros.lineage_root_job_name(ti),
        "root_namespace": macros.lineage_root_job_namespace(ti),
    }


def run_parent(dag_run: Any, task: TaskTry) -> dict[str, Any] | None:
    """The same parent for a task try known only by its DAG run (``dbtflow run``'s forked dbt),
    built as the provider's macros build it, with the provider's client configuration
    (``client_config``) to send with; ``None`` when OpenLineage is not configured."""
    if not lineage_enabled():
        return None
    from airflow.providers.openlineage import conf
    from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter
    from airflow.providers.openlineage.utils.utils import (
        get_parent_information_from_dagrun_conf,
        get_root_information_from_dagrun_conf,
    )

    logical_date = getattr(dag_run, "logical_date", None) or dag_run.run_after
    run_conf = dag_run.conf or {}
    # The DAG run's conf may name the root (a run triggered by another job), else the DAG run is it.
    root = get_root_information_from_dagrun_conf(run_conf) or {
        f"root_{k}": v for k, v in get_parent_information_from_dagrun_conf(run_conf).items()
    }
    namespace = conf.namespace()
    return {
        "dag_id": task.dag_id,
        "namespace": namespace,
        "run_id": OpenLineageAdapter.build_task_instance_run_id(
            dag_id=task.dag_id,
            task_id=task.task_id,
            try_number=task.try_number,
            logical_date=logical_date,
            map_index=task.map_index,
        ),
        "job_name": f"{task.dag_id}.{task.task_id}",
        "root_run_id": root.get("root_parent_run_id")
        or OpenLineageAdapter.build_dag_run_id(
            dag_id=task.dag_id, logical_date=logical_date, clear_number=dag_run.clear_number
        ),
        "root_job_name": root.get("root_parent_job_name") or task.dag_id,
        "root_namespace": root.get("root_parent_job_namespace") or namespace,
        "client_config": client_config(),
    }


def client_config() -> dict[str, Any]:
    """The OpenLineage client configuration the provider's adapter would use (its Airflow
    connection, YAML file or ``[openlineage] transport``); ``{}`` leaves it to the client's own
    environment variables, as the adapter does when Airflow configures none."""
    from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter

    return OpenLineageAdapter().get_openlineage_config() or {}


def stop_listeners(component: Any) -> None:
    """Call Airflow's listeners' ``before_stopping`` hook, as Airflow's own components do when they
    stop: the OpenLineage listener sends a DAG run's last event from a process pool, whose process
    would otherwise outlive ``dbtflow run`` (holding its output open) with the event unsent."""
    from airflow.listeners.listener import get_listener_manager

    try:
        get_listener_manager().hook.before_stopping(component=component)
    except Exception as exc:  # a listener's failure is no reason to fail the run
        logging.getLogger(__name__).warning("An Airflow listener failed while stopping: %s", exc)


class NodeLineage:
    """Sends the START and COMPLETE/FAIL events of each node result it is given: with the
    OpenLineage client alone when the parent carries a ``client_config`` (``run_parent``), else
    through the provider's adapter.

    The parent may follow (``parent=None``, then ``set_parent``): ``dbtflow run`` starts dbt before
    the DAG run exists, and the parent is made from the run once Airflow has created it. Results
    given before it are held by the sender; ``set_parent(None)`` drops them."""

    def __init__(
        self,
        project: DbtProject,
        parent: dict[str, Any] | None,
        log: Any,
        *,
        graph: DbtGraph | None = None,
        manifest: Any = None,
    ) -> None:
        self.project = project
        self.log = log
        self.parent: dict[str, Any] = {}
        self.dag_id = self.namespace = ""
        # What the caller has loaded already is inherited by the sender, which loads the rest.
        self._graph: DbtGraph | None = graph
        self._warehouse: Warehouse | None = None
        self._manifest: Any = manifest
        # The provider's adapter may read an Airflow connection, which a task does through its
        # supervisor's channel: that happens here, in the task's process, never in the sender. A
        # parent that follows comes from ``run_parent``, with a client configuration.
        adapter = None if parent is None or "client_config" in parent else self._adapter()
        self.sender: SenderProcess[_Item] | None = None
        if parent is None or adapter is not None or "client_config" in parent:
            self.sender = SenderProcess(lambda: self._sender(adapter), log, name="lineage")
        if parent is not None:
            self.set_parent(parent)

    def set_parent(self, parent: dict[str, Any] | None) -> None:
        """The parent of the node runs (``None``: none will come; what is held is dropped)."""
        if self.sender is not None:
            self.sender.put(("parent", parent))

    def __call__(self, results: Sequence[NodeResult]) -> None:
        ran = [r for r in results if not r.skipped]
        if ran and self.sender is not None:
            self.sender.put(("results", ran))

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close(DRAIN_TIMEOUT_S)

    def _adapter(self) -> Any:
        from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter

        adapter = OpenLineageAdapter()
        try:
            settle_http_session(adapter.get_or_create_openlineage_client())
        except Exception as exc:  # lineage is a by-product: the run's outcome stands
            self.log.warning("Could not start sending OpenLineage events: %s", exc)
            return None
        return adapter

    def _sender(self, adapter: Any) -> Callable[[_Item], None]:
        """In the sender process: the function that takes the parent, then sends each batch of
        results' events (holding the batches that come before the parent)."""
        emit: Callable[[Any], Any] | None = None
        held: list[list[NodeResult]] | None = []

        def handle(item: _Item) -> None:
            nonlocal emit, held
            kind, value = item
            if kind == "parent":
                if value is None or held is None:
                    held = None  # no parent: nothing is sent
                    return
                self._take_parent(value)
                emit = self._emitter(adapter)
                for batch in held:
                    send(emit, batch)
                held = None
            elif emit is not None:
                send(emit, value)
            elif held is not None:
                held.append(value)

        def send(emit: Callable[[Any], Any], batch: list[NodeResult]) -> None:
            for result in batch:
                try:
                    for event in self.events(result):
                        emit(event)
                except Exception as exc:  # lineage is a by-product: the run's outcome stands
                    self.log.warning("Could not send OpenLineage events for %s: %s", result.unique_id, exc)

        return handle

    def _take_parent(self, parent: dict[str, Any]) -> None:
        self.parent = parent
        self.dag_id = parent["dag_id"]
        self.namespace = parent["namespace"]

    def _emitter(self, adapter: Any) -> Callable[[Any], Any]:
        if adapter is not None:
            return cast(Callable[[Any], Any], adapter.emit)
        from openlineage.client import OpenLineageClient

        client = OpenLineageClient(config=self.parent.get("client_config") or None)
        settle_http_session(client)
        return client.emit

    def _relations(self, uid: str) -> tuple[list[Relation], Relation | None]:
        if self._graph is None:
            self._graph = load_graph(self.project)
        if self._warehouse is None:
            self._warehouse = warehouse_of(self.project)
        graph, warehouse = self._graph, self._warehouse
        node = graph.nodes.get(uid)
        if node is None:
            return [], None
        inputs = [r for p in graph.build_parents(uid) if (r := relation_of(warehouse, graph.nodes[p]))]
        for source_id in graph.direct_sources(uid):
            parts = relation_parts(graph.sources[source_id].relation_name or "")
            if len(parts) == 3:
                inputs.append(Relation(warehouse, *parts))
        output = relation_of(warehouse, node) if node.resource_type in ("model", "seed", "snapshot") else None
        return inputs, output

    def _sql(self, uid: str) -> str | None:
        if self._manifest is None:
            self._manifest = load_manifest(self.project)
        node = getattr(self._manifest, "nodes", {}).get(uid)
        return (getattr(node, "compiled_code", None) or getattr(node, "raw_code", None)) if node else None

    def events(self, result: NodeResult) -> list[Any]:
        """The START and COMPLETE (or FAIL) run events of one node result."""
        from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
        from openlineage.client.facet_v2 import error_message_run, job_type_job, parent_run, sql_job
        from openlineage.client.uuid import generate_new_uuid

        inputs, output = self._relations(result.unique_id)
        job_facets: dict[str, Any] = {
            "jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH", integration="DBT", jobType=result.unique_id.split(".", 1)[0].upper()
            )
        }
        sql = self._sql(result.unique_id)
        if sql:
            job_facets["sql"] = sql_job.SQLJobFacet(
                query=sql, dialect=self._warehouse.adapter if self._warehouse else None
            )
        job = Job(namespace=self.namespace, name=f"{self.dag_id}.{result.unique_id}", facets=job_facets)
        # The provider's parent facet (utils._get_parent_run_facet), built without importing it.
        root = parent_run.Root(
            run=parent_run.RootRun(runId=self.parent["root_run_id"] or self.parent["run_id"]),
            job=parent_run.RootJob(
                namespace=self.parent["root_namespace"] or self.namespace,
                name=self.parent["root_job_name"] or self.parent["job_name"],
            ),
        )
        run_facets: dict[str, Any] = {
            "parent": parent_run.ParentRunFacet(
                run=parent_run.Run(runId=self.parent["run_id"]),
                job=parent_run.Job(namespace=self.namespace, name=self.parent["job_name"]),
                root=root,
            )
        }
        run_id = str(generate_new_uuid())
        ins = [InputDataset(namespace=r.warehouse.namespace, name=r.dataset_name) for r in inputs]
        outs = (
            [OutputDataset(namespace=output.warehouse.namespace, name=output.dataset_name)] if output else []
        )
        now = datetime.now(UTC).isoformat()
        end_facets = dict(run_facets)
        if result.failed:
            end_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=str(result.message or result.status), programmingLanguage="SQL"
            )

        def event(state: RunState, at: str | None, facets: dict[str, Any]) -> RunEvent:
            return RunEvent(
                eventType=state,
                eventTime=at or now,
                run=Run(runId=run_id, facets=facets),
                job=job,
                inputs=ins,
                outputs=outs,
                producer=PRODUCER,
            )

        end = RunState.FAIL if result.failed else RunState.COMPLETE
        return [
            event(RunState.START, result.started_at, run_facets),
            event(end, result.completed_at, end_facets),
        ]


@contextmanager
def node_lineage(
    project: DbtProject,
    context: Any,
    log: Any,
    also: ResultsCallback | None = None,
    *,
    parent: dict[str, Any] | None = None,
    graph: DbtGraph | None = None,
    manifest: Any = None,
) -> Iterator[ResultsCallback | None]:
    """A results callback that sends each node's events (and passes the results to ``also``), or
    ``also`` alone when OpenLineage is not configured or there is no task context. ``parent``
    (from ``run_parent``) stands for the context where there is none; ``graph`` and
    ``manifest``, when the caller has them, spare the sender loading them again."""
    if parent is None:
        if context is None or not lineage_enabled():
            yield also
            return
        parent = task_parent(context)
    lineage = NodeLineage(project, parent, log, graph=graph, manifest=manifest)

    def callback(results: Sequence[NodeResult]) -> None:
        if also is not None:
            also(results)
        lineage(results)

    try:
        yield callback
    finally:
        lineage.close()


def send_node_lineage(project: DbtProject, context: Any, results: Sequence[NodeResult], log: Any) -> None:
    """Send the events of the results of one finished dbt invocation (a single or grouped task)."""
    with node_lineage(project, context, log) as callback:
        if callback is not None:
            callback(results)
