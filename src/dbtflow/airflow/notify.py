"""Notifications at the end of a pipeline: what ran, what failed, which sources were stale.

``DbtflowNotifyOperator`` gathers the run's outcome from its tasks (the per-node summaries that
dbt tasks return, the freshness gate's stale list, the failed tasks) and hands it to Airflow
notifiers (``BaseNotifier``) as ``context["dbtflow"]``; templated notifiers (the smtp provider's
``SmtpNotifier``) can use ``{{ dbtflow.failed_models }}``. ``WebhookNotifier`` posts it as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
from airflow.sdk import BaseNotifier, BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from dbtflow.project.status import FAILED_STATUSES, NodeStatus
from dbtflow.project.task_summary import TaskSummary


class WebhookNotifier(BaseNotifier):
    """POST the pipeline's outcome as JSON to ``url`` (headers may carry a token)."""

    template_fields: Sequence[str] = ("url",)

    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout: float = 30.0) -> None:
        super().__init__()
        self.url = url
        self.headers = headers or {}
        self.timeout = timeout

    def notify(self, context: Any) -> None:
        response = httpx.post(self.url, json=context["dbtflow"], headers=self.headers, timeout=self.timeout)
        response.raise_for_status()


class DbtflowNotifyOperator(BaseOperator):
    """Send ``notifiers`` the outcome of the tasks upstream of this one.

    ``on="success"`` runs when everything upstream succeeded; ``on="failure"`` runs once everything
    upstream is done and is skipped when nothing failed and no source was stale.
    """

    ui_color = "#F2D398"

    def __init__(self, *, notifiers: Sequence[BaseNotifier], on: str, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_success" if on == "success" else "all_done")
        super().__init__(**kwargs)
        self.notifiers = list(notifiers)
        self.on = on

    def execute(self, context: Any) -> dict[str, Any]:
        outcome = self._outcome(context)
        trouble = outcome["failed_tasks"] or outcome["not_run_tasks"] or outcome["stale_sources"]
        if self.on == "failure" and not trouble:
            raise AirflowSkipException("Nothing failed: no failure notification.")
        context["dbtflow"] = outcome
        for notifier in self.notifiers:
            notifier(context)
        return outcome

    def _state(self, states: dict[str, str]) -> str:
        """``success``; ``failed`` when a task failed or did not run because of one; ``stale``
        when the only trouble is stale sources whose models were skipped."""
        if self.on == "success":
            return "success"
        return "failed" if any(s in ("failed", "upstream_failed") for s in states.values()) else "stale"

    def _outcome(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        upstream = sorted(self.get_flat_relative_ids(upstream=True))
        runs = ti.get_task_states(dag_id=ti.dag_id, task_ids=upstream, run_ids=[ti.run_id])
        states = {task_id: str(state) for task_id, state in runs.get(ti.run_id, {}).items()}
        built: list[str] = []
        failed: list[str] = []
        stale: list[str] = []
        for task_id in upstream:
            returned = ti.xcom_pull(task_ids=task_id, key="return_value")
            if not isinstance(returned, dict):
                continue
            # A dbt task's TaskSummary; the freshness gate returns its stale sources instead.
            summary = TaskSummary.from_xcom(returned)
            built += summary.models({NodeStatus.SUCCESS})
            failed += summary.models(FAILED_STATUSES)
            stale += returned.get("stale") or []
        return {
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "state": self._state(states),
            "models_built": sorted(set(built)),
            "failed_models": sorted(set(failed)),
            "stale_sources": sorted(set(stale)),
            "failed_tasks": sorted(t for t, s in states.items() if s == "failed"),
            # Tasks that never ran because something upstream failed.
            "not_run_tasks": sorted(t for t, s in states.items() if s == "upstream_failed"),
        }
