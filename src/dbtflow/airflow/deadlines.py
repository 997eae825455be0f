"""Deadlines in Airflow: the DAG run's (Airflow 3 Deadline Alerts) and each model's (a watch on the
running dbt invocation that tells notifiers while the model still runs).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import httpx
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from dbtflow.monitoring.deadlines import DurationWatch, ModelDeadlines, learned_expectations
from dbtflow.monitoring.history import History


async def post_missed_deadline(url: str, context: dict[str, Any], **_: Any) -> None:
    """Deadline Alert callback (run in the triggerer): post the missed deadline as JSON."""
    run = context.get("dag_run") or {}
    body = {
        "state": "deadline_missed",
        "dag_id": run.get("dag_id"),
        "run_id": run.get("dag_run_id") or run.get("run_id"),
        "deadline_time": str((context.get("deadline") or {}).get("deadline_time")),
    }
    async with httpx.AsyncClient(timeout=30) as client:
        (await client.post(url, json=body)).raise_for_status()


def run_deadline(within: timedelta, webhook_url: str) -> DeadlineAlert:
    """A Deadline Alert for ``DAG(deadline=...)``: when a run is not done ``within`` its queueing,
    post to ``webhook_url`` while it still runs."""
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=within,
        callback=AsyncCallback(post_missed_deadline, kwargs={"url": webhook_url}),
    )


def model_deadline_watch(deadlines: ModelDeadlines, context: Any, log: Any, also: Any) -> DurationWatch:
    """A ``DurationWatch`` for a task's dbt invocation that calls the deadlines' notifiers with
    ``context["dbtflow"]`` describing the late node."""
    ti = context["ti"]
    expected: dict[str, float] = {}
    if deadlines.learn:
        history = History().runs(dag_id=ti.dag_id)
        expected = learned_expectations(
            history, factor=deadlines.factor, floor_s=deadlines.floor_s, last=deadlines.last
        )
    expected.update(deadlines.expected or {})

    def on_late(unique_id: str, running_s: float, expected_s: float) -> None:
        # Rounded up: a node reported late never reads as having run only its expected time.
        running = math.ceil(running_s * 10) / 10
        log.warning("%s has run %.1f s, past its expected %.1f s.", unique_id, running, expected_s)
        late = {**context, "dbtflow": {
            "state": "late", "dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id,
            "unique_id": unique_id, "running_s": running, "expected_s": expected_s,
        }}  # fmt: skip
        for notifier in deadlines.notifiers:
            try:
                notifier(late)  # type: ignore[operator]
            except Exception as exc:  # a failing notifier must not stop dbt
                log.warning("Deadline notifier %r failed: %s", notifier, exc)

    return DurationWatch(expected, on_late, also=also)
