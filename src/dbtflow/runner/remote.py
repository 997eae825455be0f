"""``dbtflow retry --api-url``: recovery of a DAG run in an Airflow deployment, through its REST API.

Airflow's own clear does the work (``clearTaskInstances`` of the failed tasks with
``include_downstream``): the failed and upstream-failed tasks of the run, and what depends on them,
go back to the scheduler, which runs them again in the same DAG run; successful tasks are left
alone. dbtflow then follows the run until it ends and reports it as ``dbtflow run`` does, with
each failed task's reason from the log of its failed try (the API has no dbt node results).

Credentials: a token (``DBTFLOW_AIRFLOW_TOKEN``), or a user name and password
(``DBTFLOW_AIRFLOW_USERNAME`` / ``DBTFLOW_AIRFLOW_PASSWORD``: never on the command line, where
other users' ``ps`` would see them), or none where the auth manager hands out tokens freely
(the simple auth manager with ``simple_auth_manager_all_admins``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from dbtflow import settings
from dbtflow.errors import DbtflowError
from dbtflow.runner.display import FINISHED, RunDisplay, TaskRow
from dbtflow.runner.failures import FailureReason, reasons, with_errors
from dbtflow.runner.loop import RunOutcome

_POLL_S = 1.0
_DONE = ("success", "failed")


@dataclass(frozen=True)
class ApiCredentials:
    """How to authenticate to the Airflow API (from the environment by default)."""

    token: str | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_environment(cls) -> ApiCredentials:
        return cls(
            token=settings.airflow_token(),
            username=settings.airflow_username(),
            password=settings.airflow_password(),
        )


class AirflowApi:
    """The few calls of Airflow's public REST API (v2) that a retry needs."""

    def __init__(self, base_url: str, credentials: ApiCredentials, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(base_url=self.base_url, timeout=timeout_s)
        token = credentials.token or self._token(credentials)
        self.client.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self.client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise DbtflowError(
                f"Cannot reach the Airflow API at {self.base_url}: {exc}.",
                "check --api-url (the api-server's base URL) and that the api-server is running.",
            ) from None
        if response.status_code in (401, 403):
            raise DbtflowError(
                f"The Airflow API at {self.base_url} refused the request ({response.status_code}).",
                "set DBTFLOW_AIRFLOW_TOKEN, or DBTFLOW_AIRFLOW_USERNAME and DBTFLOW_AIRFLOW_PASSWORD, "
                "for a user allowed to clear task instances.",
            )
        if response.status_code == 404:
            raise DbtflowError(
                f"The Airflow API at {self.base_url} has no {path}: {_detail(response)}.",
                "check the DAG id and run id (`airflow dags list-runs DAG_ID` lists the runs).",
            )
        if response.is_error:
            raise DbtflowError(
                f"The Airflow API answered {response.status_code} to {method} {path}: {_detail(response)}.",
                "see the api-server's log for the cause.",
            )
        return response.json()

    def _token(self, credentials: ApiCredentials) -> str:
        if credentials.username:
            body = {"username": credentials.username, "password": credentials.password or ""}
            answer = self._call("POST", "/auth/token", json=body)
        else:
            answer = self._call("GET", "/auth/token")
        return str(answer["access_token"])

    def dag_run(self, dag_id: str, run_id: str | None) -> dict[str, Any]:
        """The run ``run_id`` of the DAG, or its newest run."""
        if run_id is not None:
            return dict(self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))
        runs = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"order_by": "-id", "limit": 1})
        if not runs["dag_runs"]:
            raise DbtflowError(f"The DAG {dag_id} has no run to retry.", "trigger one first.")
        return dict(runs["dag_runs"][0])

    def clear_failed(self, dag_id: str, run_id: str) -> list[str]:
        """Clear the failed and upstream-failed tasks of the run and their downstream.

        The failed tasks are named, and cleared with ``include_downstream`` but without
        ``only_failed``: that flag also filters the downstream tasks by state, and the dependants
        of a failed streamed node end ``skipped`` (as dbt skips them), so it would leave them out.
        """
        failed = sorted(
            ti["task_id"]
            for ti in self.task_instances(dag_id, run_id)
            if ti.get("state") in ("failed", "upstream_failed")
        )
        if not failed:
            return []
        answer = self._call(
            "POST",
            f"/api/v2/dags/{dag_id}/clearTaskInstances",
            json={
                "dry_run": False,
                "dag_run_id": run_id,
                "task_ids": failed,
                "only_failed": False,
                "include_downstream": True,
                "reset_dag_runs": True,
            },
        )
        return sorted({ti["task_id"] for ti in answer["task_instances"]})

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        tis: list[dict[str, Any]] = []
        while True:
            page = self._call(
                "GET",
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": len(tis)},
            )
            tis += page["task_instances"]
            if not page["task_instances"] or len(tis) >= page["total_entries"]:
                return tis

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> list[Any]:
        """The records of one try's log (structured entries, or lines of text); none when the
        deployment cannot serve it (remote logging not readable, log gone)."""
        try:
            answer = self._call(
                "GET",
                log_api_path(dag_id, run_id, task_id, try_number),
                params={"full_content": "true"},
                headers={"Accept": "application/json"},
            )
        except DbtflowError:
            return []
        content = answer.get("content") if isinstance(answer, dict) else None
        if isinstance(content, str):
            return content.splitlines()
        return list(content or [])


def log_api_path(dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
    return f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:300]


def _rows(tis: list[dict[str, Any]]) -> list[TaskRow]:
    rows = []
    for ti in sorted(
        tis, key=lambda t: (t.get("start_date") is None, t.get("start_date") or "", t["task_id"])
    ):
        state = ti.get("state") or "none"
        duration = ti.get("duration") if state in FINISHED else None
        rows.append(
            TaskRow(
                task_id=ti["task_id"],
                state=state,
                try_number=int(ti.get("try_number") or 0),
                duration_s=None if duration is None else float(duration),
                nodes=(),
            )
        )
    return rows


def retry_remote(
    api_url: str,
    dag_id: str,
    run_id: str | None,
    *,
    credentials: ApiCredentials | None = None,
    progress: str = "auto",
    timeout_s: float | None = None,
) -> RunOutcome:
    """Clear the failed tasks of a run of an Airflow deployment, wait for the run, report it."""
    api = AirflowApi(api_url, credentials or ApiCredentials.from_environment())
    try:
        dag_run = api.dag_run(dag_id, run_id)
        run_id = str(dag_run["dag_run_id"])
        if dag_run["state"] not in _DONE:
            raise DbtflowError(
                f"Run {run_id} of {dag_id} is still {dag_run['state']}.",
                "wait for it to end; a retry re-runs the failed tasks of a finished run.",
            )
        cleared = api.clear_failed(dag_id, run_id)
        if not cleared:
            raise DbtflowError(
                f"Run {run_id} of {dag_id} has no failed task to retry.",
                "nothing to do; trigger a new run for fresh data.",
            )
        live = {"auto": None, "live": True, "plain": False, "none": False}[progress]
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        title = f"{dag_id}: retrying {len(cleared)} task(s) at {api.base_url}"
        tis = api.task_instances(dag_id, run_id)
        with RunDisplay(title, len(tis), live=live, quiet=progress == "none") as display:
            state = _wait(api, dag_id, run_id, cleared, display, deadline)
            rows = _rows(api.task_instances(dag_id, run_id))
        found = remote_reasons(api, dag_id, run_id, rows)
        rows = with_errors(rows, found)
        display.final_table(rows, state, run_id)
        logs = {task_id: reason.log for task_id, reason in found.items()}
        display.failures(rows, logs, f"dbtflow retry {dag_id} --api-url {api.base_url}")
        return RunOutcome(dag_id=dag_id, run_id=run_id, state=state, tasks=rows)
    finally:
        api.close()


def remote_reasons(
    api: AirflowApi, dag_id: str, run_id: str, rows: list[TaskRow]
) -> dict[str, FailureReason]:
    """Each failed task's reason, from the log of its failed try (the API serves no node results)."""
    tries = {row.task_id: row.try_number for row in rows if row.state == "failed"}
    logs: dict[str, str | None] = {
        task_id: api.base_url + log_api_path(dag_id, run_id, task_id, number)
        for task_id, number in tries.items()
    }
    return reasons(rows, [], logs, lambda task_id: api.task_log(dag_id, run_id, task_id, tries[task_id]))


def _wait(
    api: AirflowApi, dag_id: str, run_id: str, cleared: list[str], display: RunDisplay, deadline: float | None
) -> str:
    """Poll until the run has ended again. (The clear put it back in the queue at once, so a
    finished state with every cleared task finished is the new outcome, not the old one.)"""
    while True:
        dag_run = api.dag_run(dag_id, run_id)
        rows = _rows(api.task_instances(dag_id, run_id))
        display.update(rows)
        again = {row.task_id: row.state for row in rows if row.task_id in cleared}
        if dag_run["state"] in _DONE and all(state in FINISHED for state in again.values()):
            return str(dag_run["state"])
        if deadline is not None and time.monotonic() > deadline:
            raise DbtflowError(
                f"Run {run_id} of {dag_id} did not end in time (it is {dag_run['state']}).",
                "follow it in the Airflow UI, or retry with a larger --timeout.",
            )
        time.sleep(_POLL_S)
