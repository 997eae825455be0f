"""The cloud pattern: trigger a dbt Cloud job from Airflow, wait, and publish its per-node results.

``DbtCloudJobOperator`` is the dbt Cloud provider's ``DbtCloudRunJobOperator`` (deferrable and
retrying from the failure by default) with what the other patterns give on top:

- when the run ends, its ``run_results.json`` artifacts (every step's) are fetched and published
  the same way: a results table in the task log, the compact per-node summary as the XCom
  return value, and the task fails with the list of failed nodes;
- when the task is killed while it waits in the triggerer (marked failed or cleared), the run is
  cancelled in dbt Cloud (the provider's trigger leaves it running);
- with the project given (``dbt_dag(project, pattern="cloud", ...)``) and Airflow's OpenLineage
  provider configured, each node of ``run_results.json`` sends its OpenLineage events, as a
  node built by the other patterns does (``dbtflow.airflow.lineage``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow.providers.dbt.cloud.hooks.dbt import DbtCloudHook, DbtCloudJobRunException
from airflow.providers.dbt.cloud.operators.dbt import DbtCloudRunJobOperator
from airflow.providers.dbt.cloud.triggers.dbt import DbtCloudRunJobTrigger

from dbtflow.airflow.lineage import send_node_lineage
from dbtflow.airflow.publish import publish
from dbtflow.airflow.task_try import task_try
from dbtflow.monitoring.history import record_results
from dbtflow.project.config import DbtProject
from dbtflow.project.results import NodeResult, results_from_run_results
from dbtflow.project.results_table import failure_summary
from dbtflow.project.task_results import TaskResults

RUN_RESULTS = "run_results.json"


@dataclass(frozen=True)
class DbtCloudJob:
    """A dbt Cloud job as ``dbt_dag(..., pattern="cloud", cloud_job=...)`` runs it.

    The Airflow connection (type ``dbt_cloud``) holds the account id, the API token and the tenant
    host; nothing secret is in the DAG file.
    """

    job_id: int
    conn_id: str = DbtCloudHook.default_conn_name
    account_id: int | None = None
    #: Seconds between status checks while waiting.
    check_interval: float = 30.0
    #: Seconds to wait for the run before failing.
    timeout: int = 24 * 3600


class CancellingDbtCloudRunTrigger(DbtCloudRunJobTrigger):
    """The provider's trigger, cancelling the run when a user kills the waiting task."""

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def on_kill(self) -> None:
        hook = DbtCloudHook(self.conn_id, **self.hook_params)
        self.log.info("The task was killed: cancelling dbt Cloud run %s.", self.run_id)
        await asyncio.to_thread(hook.cancel_job_run, run_id=self.run_id, account_id=self.account_id)


class DbtCloudJobOperator(DbtCloudRunJobOperator):
    """Trigger a dbt Cloud job and wait (deferrable); retry from the failure; publish per-node results."""

    ui_color = "#FF694B"
    ui_fgcolor = "#FFFFFF"

    def __init__(
        self,
        *,
        deferrable: bool = True,
        retry_from_failure: bool = True,
        project: DbtProject | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(deferrable=deferrable, retry_from_failure=retry_from_failure, **kwargs)
        #: The job's dbt project, when the DAG has it: the nodes' datasets and SQL for lineage.
        self.project = project

    def defer(self, *, trigger: Any, method_name: str, **kwargs: Any) -> Any:
        if type(trigger) is DbtCloudRunJobTrigger:
            trigger = CancellingDbtCloudRunTrigger(**trigger.serialize()[1])
        return super().defer(trigger=trigger, method_name=method_name, **kwargs)

    def execute(self, context: Any) -> Any:
        return self._published(context, lambda: super(DbtCloudJobOperator, self).execute(context))

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        return self._published(
            context, lambda: super(DbtCloudJobOperator, self).execute_complete(context, event)
        )

    def _published(self, context: Any, wait: Any) -> Any:
        """Run the provider's step; once the run has ended, publish its results."""
        try:
            wait()
        except DbtCloudJobRunException as exc:
            results = self._fetch_results()
            if not results:
                raise
            failed = [r for r in results if r.failed]
            detail = failure_summary(failed) if failed else "no node failed (a step outside dbt did)"
            return self._publish(context, results, failure=f"{exc} Failed nodes:\n{detail}", cause=exc)
        if not self.wait_for_termination:
            return self.run_id
        return self._publish(context, self._fetch_results())

    def _publish(
        self,
        context: Any,
        results: Sequence[NodeResult],
        failure: str | None = None,
        cause: BaseException | None = None,
    ) -> dict[str, Any]:
        """Publish the run's results; a failed run (``failure``) keeps its summary too."""
        published = TaskResults.of(
            results,
            failure=failure,
            summary_on_failure=True,
            job_run_id=self.run_id,
            title=f"dbt Cloud run {self.run_id} results",
        )
        if self.project is not None:
            send_node_lineage(self.project, context, results, self.log)
        return publish(
            published,
            self.log,
            ti=context["ti"],
            history=lambda: record_results(task_try(context), results, self.log),
            cause=cause,
        )

    def _fetch_results(self) -> list[NodeResult]:
        """The newest result of every node over the run's steps (each step has its own artifacts)."""
        if self.run_id is None:
            return []
        run = self.hook.get_job_run(
            run_id=self.run_id, account_id=self.account_id, include_related=["run_steps"]
        ).json()["data"]
        steps = [s.get("index") for s in run.get("run_steps") or () if s.get("index") is not None]
        newest: dict[str, NodeResult] = {}
        for step in steps or [None]:
            listed = self.hook.list_job_run_artifacts(
                run_id=self.run_id, account_id=self.account_id, step=step
            ).json()["data"]
            if RUN_RESULTS not in (listed or ()):
                continue  # a step that ran no dbt command (cloning the repository...)
            document = self.hook.get_job_run_artifact(
                run_id=self.run_id, path=RUN_RESULTS, account_id=self.account_id, step=step
            ).json()
            for result in results_from_run_results(document):
                newest[result.unique_id] = result
        if not newest:
            self.log.warning("dbt Cloud run %s has no %s artifact.", self.run_id, RUN_RESULTS)
        return list(newest.values())


def add_cloud_task(
    job: DbtCloudJob,
    *,
    command: Sequence[str] = ("build",),
    selection: Sequence[str] = (),
    task_id: str = "dbt_cloud_job",
    project: DbtProject | None = None,
    **operator_kwargs: Any,
) -> DbtCloudJobOperator:
    """The task of the cloud pattern, in the DAG or task group being defined. A selection (or a
    command other than ``build``) replaces the job's steps for this run."""
    steps = None
    if selection or list(command) != ["build"]:
        steps = [" ".join(["dbt", *command, *selection])]
    return DbtCloudJobOperator(
        task_id=task_id,
        job_id=job.job_id,
        dbt_cloud_conn_id=job.conn_id,
        account_id=job.account_id,
        check_interval=job.check_interval,
        timeout=job.timeout,
        steps_override=steps,
        project=project,
        **operator_kwargs,
    )
