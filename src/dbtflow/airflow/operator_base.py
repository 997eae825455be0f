"""``DbtOperatorBase``: what every dbtflow operator that runs dbt holds and does (the project,
its nodes, the state store, one claimed dbt invocation with its log sinks, history, lineage and
event times, and the verdict on its results). Kept apart from the operators themselves
(``dbtflow.airflow.operators``, ``dbtflow.airflow.batch_operator``) so each module has one job.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from airflow.sdk import BaseOperator

from dbtflow.airflow.assets import emit_builds
from dbtflow.airflow.deadlines import model_deadline_watch
from dbtflow.airflow.event_time import event_time_window
from dbtflow.airflow.lineage import node_lineage
from dbtflow.airflow.publish import publish
from dbtflow.monitoring.deadlines import ModelDeadlines
from dbtflow.monitoring.forwarding import EventForwarder
from dbtflow.monitoring.history import results_recorder
from dbtflow.project.config import DbtProject
from dbtflow.project.manifest import load_graph, load_manifest
from dbtflow.project.results import NodeResult
from dbtflow.project.task_results import TaskResults, failed_nodes, missing_nodes
from dbtflow.state.store import StateStore
from dbtflow.state.task_try import TaskTry
from dbtflow.streaming.producer import (
    ClaimedInvocation,
    EventCallback,
    ResultsCallback,
    run_claimed_invocation,
)

DBT_COLOR = "#FF694B"


class DbtOperatorBase(BaseOperator):
    """What every dbtflow operator holds: the project, its nodes, threads and the state store."""

    template_fields: Sequence[str] = ("unique_ids",)
    ui_color = DBT_COLOR
    ui_fgcolor = "#FFFFFF"

    def __init__(
        self,
        *,
        project: DbtProject,
        unique_ids: Sequence[str],
        threads: int | None = None,
        state_url: str | None = None,
        model_deadlines: ModelDeadlines | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.project = project
        self.unique_ids = list(unique_ids)
        self.threads = threads
        self.state_url = state_url
        self.model_deadlines = model_deadlines

    @contextmanager
    def _watched(self, context: Any, on_event: Any) -> Iterator[Any]:
        """``on_event``, watched for models that outlive their expected durations (when set)."""
        if self.model_deadlines is None:
            yield on_event
            return
        watch = model_deadline_watch(self.model_deadlines, context, self.log, on_event)
        try:
            yield watch
        finally:
            watch.close()

    def _store(self) -> StateStore:
        return StateStore(self.state_url)

    def _emit_own_assets(self, context: Any, *, nodes: Sequence[str] | None = None) -> None:
        """Emit the asset events of what this try built (of the newest builds of ``nodes`` in the
        run, when given: a per_model node task) through the task's alias
        (``dbtflow.airflow.assets``), when the task has one (``dbt_dag(assets=True)``) and is about
        to succeed. An error is logged (a single or grouped run's ``dbt_assets`` teardown emits what
        is left) and does not fail the task: the build stands."""
        try:
            emit_builds(
                self.project,
                context,
                state_url=self.state_url,
                log=self.log,
                own_try_only=nodes is None,
                nodes=nodes,
            )
        except Exception as exc:
            self.log.warning("Could not emit asset events: %s", exc)

    def _run_claimed(
        self,
        task: TaskTry,
        nodes: Sequence[str],
        on_event: EventCallback,
        *,
        selection: Sequence[str] | None = None,
        skip_succeeded: bool = False,
        also_on_results: ResultsCallback | None = None,
        context: Any = None,
        earlier: Sequence[NodeResult] = (),
    ) -> ClaimedInvocation:
        """Claim ``nodes`` for ``task`` and run one dbt invocation over them, in this process;
        dbt's events go to ``on_event`` and the configured log sinks, its results to the run-time
        history (and ``also_on_results``), and each node's OpenLineage events when the provider is
        configured (``dbtflow.airflow.lineage``; ``context`` is the Airflow task's). Microbatch
        models build the batches of the DAG run's data interval (``dbtflow.airflow.event_time``)."""
        to_history = results_recorder(task, self.log)
        on_results = to_history if also_on_results is None else _both(to_history, also_on_results)
        graph = load_graph(self.project)
        with (
            EventForwarder(task, also=on_event) as forwarder,
            node_lineage(self.project, context, self.log, on_results, graph=graph) as with_lineage,
        ):
            return run_claimed_invocation(
                self.project,
                graph,
                lambda: load_manifest(self.project),
                self._store(),
                task,
                nodes,
                selection=selection,
                threads=self.threads,
                on_event=forwarder,
                on_results=with_lineage,
                skip_succeeded=skip_succeeded,
                event_time=event_time_window(context, self.log, earlier=earlier),
            )

    def _report(self, results: Sequence[NodeResult]) -> dict[str, Any]:
        """Log a results table; fail when dbt reported an error or failure, or no result for one of
        the task's nodes; return the XCom summary."""
        failure = failed_nodes(results) or missing_nodes(self.unique_ids, results)
        return publish(TaskResults.of(results, failure=failure), self.log)


def _both(first: ResultsCallback, second: ResultsCallback) -> ResultsCallback:
    def both(results: Sequence[NodeResult]) -> None:
        first(results)
        second(results)

    return both
