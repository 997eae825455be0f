"""``DbtBatchOperator``: many nodes in one dbt invocation (the single and grouped patterns).

The first try runs ``dbt build`` (or the chosen command) for its nodes. Its ``run_results.json``
is kept where every worker finds it (``dbtflow.airflow.artifact_storage``); a later try of the
same task instance (an Airflow retry, or a clear), on any worker, runs ``dbt retry`` against it,
so only what failed or was skipped runs again. The log ends with a table of every node's newest
result, and the XCom return value is a compact per-node summary (with ``ran``: what this try's
invocation ran), pushed for failed tries too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from dbtflow.airflow.artifact_storage import try_artifacts
from dbtflow.airflow.event_time import event_time_window
from dbtflow.airflow.lineage import send_node_lineage
from dbtflow.airflow.operator_base import DbtOperatorBase
from dbtflow.airflow.publish import publish
from dbtflow.airflow.state_aware import STATE_AWARE_TRIGGER_RULE, StateAwareSelection, state_aware_selection
from dbtflow.airflow.task_log import DbtEventLogger
from dbtflow.airflow.task_try import task_try
from dbtflow.monitoring.forwarding import EventForwarder
from dbtflow.monitoring.history import record_results
from dbtflow.project.batch import run_batch
from dbtflow.project.manifest import load_graph
from dbtflow.project.results import NodeResult
from dbtflow.project.selection import exact_selection
from dbtflow.project.task_results import TaskResults, failed_nodes, missing_nodes
from dbtflow.state.manifests import keep_project_manifest
from dbtflow.state.task_try import TaskTry
from dbtflow.streaming.producer import exclusive_invocation


class DbtBatchOperator(DbtOperatorBase):
    """Run ``command`` over the task's nodes in one dbt invocation; retry only what failed.

    ``selection``: the dbt selection flags to run (the single pattern passes the DAG's own
    selection); ``None`` selects exactly ``unique_ids`` (a group). ``command``: ``("build",)`` by
    default, or another node-running dbt command (``("run",)``, ``("test",)``...).
    """

    template_fields: Sequence[str] = ("unique_ids", "command")
    #: A try that succeeds emits the asset events of what it built (``dbtflow.airflow.assets``).
    emits_own_assets = True

    def __init__(
        self,
        *,
        selection: Sequence[str] | None = None,
        command: Sequence[str] = ("build",),
        artifacts_url: str | None = None,
        artifacts_conn_id: str | None = None,
        state_aware: bool = False,
        **kwargs: Any,
    ) -> None:
        if state_aware:
            # A group upstream that was left out (skipped) must not skip this one.
            kwargs.setdefault("trigger_rule", STATE_AWARE_TRIGGER_RULE)
        super().__init__(**kwargs)
        #: A first try leaves out the unchanged nodes (``dbtflow.project.state_aware``).
        self.state_aware = state_aware
        self.selection = None if selection is None else list(selection)
        self.command = list(command)
        self.artifacts_url = artifacts_url
        self.artifacts_conn_id = artifacts_conn_id

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        try_number = int(ti.try_number)
        this_try = task_try(context)
        kept = try_artifacts(this_try, self._store(), self.artifacts_url, self.artifacts_conn_id)
        previous = kept.latest_before() if try_number > 1 else None
        if previous is not None:
            self.log.info("Try %d: previous results from try %d in %s.", try_number, previous[0], kept.where)
        elif try_number > 1:
            self.log.warning(
                "Try %d: no earlier try left its results in %s, so this try builds everything again.",
                try_number,
                kept.where,
            )
        selection = self.selection
        left_out = StateAwareSelection.none()
        if self.state_aware and previous is None:
            left_out = state_aware_selection(self.project, this_try, self.unique_ids, context, self.log)
            if left_out.everything(self.unique_ids):
                publish(TaskResults.of(left_out.results), self.log, ti=ti)
                raise AirflowSkipException("Not built: every node is unchanged since its last build.")
            selection = left_out.selection or selection
        if selection is None:
            selection = exact_selection(load_graph(self.project), self.unique_ids)
        forwarder = EventForwarder(this_try, also=DbtEventLogger(self.log))
        try:
            with (
                exclusive_invocation(self._store(), this_try, self.log),
                self._watched(context, forwarder) as on_event,
            ):
                outcome = run_batch(
                    self.project,
                    [*self.command, *selection],
                    previous=previous[1] if previous else None,
                    threads=self.threads,
                    on_event=on_event,
                    event_time=event_time_window(context, self.log),
                )
        finally:
            forwarder.close()
        if outcome.mode == "retry":
            self.log.info("dbt retry ran %d node(s) that failed or were skipped.", len(outcome.retried))
        if outcome.document is not None:
            kept.save(outcome.document)
        if outcome.run.error is not None:
            raise AirflowException(f"dbt failed: {outcome.run.error}")
        results = [*left_out.results, *outcome.results]
        left_out.record_builds(outcome.run.results)
        # A group must have a result for each of its nodes; a try that did not run some of them
        # fails without a summary. A try whose nodes failed keeps its summary.
        missing = missing_nodes(self.unique_ids, results) if self.selection is None else None
        published = TaskResults.of(
            results,
            failure=missing or failed_nodes(results),
            summary_on_failure=missing is None,
            # What this try's dbt invocation ran (everything, or what `dbt retry` picked).
            ran=[r.unique_id for r in outcome.run.results],
        )
        if published.failure is None:
            keep_project_manifest(self.project, this_try.dag_id, this_try.run_id, self.state_url, self.log)
        value = publish(
            published,
            self.log,
            ti=ti,
            history=lambda: self._keep(context, this_try, outcome.run.results),
        )
        self._emit_own_assets(context)
        return value

    def _keep(self, context: Any, this_try: TaskTry, results: Sequence[NodeResult]) -> None:
        """Keep the results in the run-time history and send each node's OpenLineage events."""
        record_results(this_try, results, self.log)
        send_node_lineage(self.project, context, results, self.log)
