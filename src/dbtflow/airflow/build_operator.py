"""``DbtBuildOperator``: many nodes in one dbt invocation (the single and grouped patterns).

The first try runs ``dbt build`` (or the chosen command) for its nodes. Its ``run_results.json``
is kept where every worker finds it (``dbtflow.airflow.artifacts``); a later try of the same task
instance (an Airflow retry, or a clear), on any worker, runs ``dbt retry`` against it, so only
what failed or was skipped runs again. The log ends with a table of every node's newest
result, and the XCom return value is a compact per-node summary (with ``ran``: what this try's
invocation ran), pushed for failed tries too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowException

from dbtflow.airflow.artifacts import try_artifacts
from dbtflow.airflow.operators import DbtOperatorBase, run_key
from dbtflow.airflow.task_log import DbtEventLogger
from dbtflow.monitoring.forwarding import EventForwarder, RunContext
from dbtflow.monitoring.history import record_task_results
from dbtflow.project.batch import run_batch
from dbtflow.project.manifest import load_graph
from dbtflow.project.report import failure_summary, results_table
from dbtflow.project.results import summarize
from dbtflow.project.selection import exact_selection
from dbtflow.streaming.producer import exclusive_invocation
from dbtflow.streaming.store import TaskTry


class DbtBuildOperator(DbtOperatorBase):
    """Run ``command`` over the task's nodes in one dbt invocation; retry only what failed.

    ``selection``: the dbt selection flags to run (the single pattern passes the DAG's own
    selection); ``None`` selects exactly ``unique_ids`` (a group). ``command``: ``("build",)`` by
    default, or another node-running dbt command (``("run",)``, ``("test",)``...).
    """

    template_fields: Sequence[str] = ("unique_ids", "command")

    def __init__(
        self,
        *,
        selection: Sequence[str] | None = None,
        command: Sequence[str] = ("build",),
        artifacts_url: str | None = None,
        artifacts_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.selection = None if selection is None else list(selection)
        self.command = list(command)
        self.artifacts_url = artifacts_url
        self.artifacts_conn_id = artifacts_conn_id

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        try_number = int(ti.try_number)
        this_try = TaskTry(ti.dag_id, ti.run_id, ti.task_id, _map_index(ti), try_number)
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
        if selection is None:
            selection = exact_selection(load_graph(self.project), self.unique_ids)
        forwarder = EventForwarder(
            RunContext(ti.dag_id, ti.run_id, ti.task_id, try_number), also=DbtEventLogger(self.log)
        )
        try:
            with (
                exclusive_invocation(self._store(), run_key(context), self.log),
                self._watched(context, forwarder) as on_event,
            ):
                outcome = run_batch(
                    self.project,
                    [*self.command, *selection],
                    previous=previous[1] if previous else None,
                    threads=self.threads,
                    on_event=on_event,
                )
        finally:
            forwarder.close()
        if outcome.mode == "retry":
            self.log.info("dbt retry ran %d node(s) that failed or were skipped.", len(outcome.retried))
        if outcome.document is not None:
            kept.save(outcome.document)
        if outcome.run.error is not None:
            raise AirflowException(f"dbt failed: {outcome.run.error}")
        results = outcome.results
        record_task_results(context, outcome.run.results, self.log)
        self.log.info("dbt results:\n%s", results_table(results))
        # What this try's dbt invocation ran (everything, or what `dbt retry` picked).
        summary = {**summarize(results), "ran": sorted(r.unique_id for r in outcome.run.results)}
        failed = [r for r in results if r.failed]
        missing = set(self.unique_ids) - {r.unique_id for r in results}
        if missing and self.selection is None:
            not_run = ", ".join(sorted(missing))
            raise AirflowException(f"dbt returned no result for {not_run}: it did not run them.")
        if failed:
            ti.xcom_push(key="return_value", value=summary)
            raise AirflowException(f"dbt reported {len(failed)} failure(s):\n{failure_summary(failed)}")
        return summary


def _map_index(ti: Any) -> int:
    index = getattr(ti, "map_index", None)
    return -1 if index is None else int(index)
