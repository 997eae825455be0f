"""Running task instances of ``dbtflow run`` in parallel, one forked process per task try.

Each task runs through Airflow's own task runner (``run_task_in_process``, the path of
``dag.test()``) in a child forked from the runner. The runner has already imported Airflow,
warmed up the in-process Execution API and, where tasks build dbt nodes, imported dbt, so a
child starts in milliseconds and none of it is paid again per task. The child writes the task
log to Airflow's log folder and reports to the metadata database through the Execution API.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbtflow.runner.processes import die_with_parent


@dataclass
class Worker:
    """A forked child running one task try."""

    pid: int
    task_id: str
    map_index: int
    try_number: int
    started: float


def warm_up_execution_api() -> None:
    """Build Airflow's in-process Execution API once, in this process, leaving no thread behind.

    The first request to the API app builds its versioned routes (about 3 s); children forked
    afterwards inherit the built app.
    """
    import asyncio

    import httpx
    from airflow.sdk.execution_time.supervisor import in_process_api_server

    with warnings.catch_warnings():
        # fastapi's test client module (imported by the app) warns about its own httpx use.
        warnings.simplefilter("ignore", DeprecationWarning)
        # Starlette's own deprecation category is a UserWarning.
        warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
        api = in_process_api_server()
        api.app  # noqa: B018  (builds the app)

    async def ping() -> None:
        transport = httpx.ASGITransport(app=api.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://in-process.invalid./") as client:
            await client.get("/execution/health")

    asyncio.run(ping())


class BackgroundWarmUp:
    """A warm-up run on a thread from now on, so that it overlaps the run instead of delaying the
    first task forked; ``wait()`` for it before forking (a fork must not copy a thread mid-work)."""

    def __init__(self, warm_up: Callable[[], None]) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(warm_up,), name="dbtflow-warm-up", daemon=True)
        self.thread.start()

    def _run(self, warm_up: Callable[[], None]) -> None:
        try:
            warm_up()
        except BaseException as exc:  # raised again by wait(), in the thread that forks
            self.error = exc

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def wait(self) -> None:
        self.thread.join()
        if self.error is not None:
            error, self.error = self.error, None
            raise error


class WorkerPool:
    """Forks children for task instances and reaps them."""

    def __init__(self, dag: Any, concurrency: int, log_path: Any) -> None:
        self.dag = dag
        self.concurrency = max(1, concurrency)
        self.log_path = log_path
        self.running: dict[int, Worker] = {}

    @property
    def free(self) -> int:
        return self.concurrency - len(self.running)

    def launch(self, ti: Any) -> None:
        """Run a QUEUED task instance in a new child process."""
        task = self.dag.task_dict[ti.task_id]
        fields = {
            "id": str(ti.id),
            "task_id": ti.task_id,
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "try_number": ti.try_number,
            "map_index": ti.map_index,
            "dag_version_id": str(ti.dag_version_id),
        }
        log_file = Path(self.log_path(ti))
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            die_with_parent(parent)
            code = 0
            try:
                _child_main(fields, task, log_file)
            except BaseException:
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
        self.running[pid] = Worker(pid, ti.task_id, ti.map_index, ti.try_number, time.monotonic())

    def reap(self) -> list[tuple[Worker, int]]:
        """Children that ended since the last call, with their exit codes."""
        ended: list[tuple[Worker, int]] = []
        for pid in list(self.running):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                ended.append((self.running.pop(pid), os.waitstatus_to_exitcode(status)))
        return ended

    def terminate(self, grace_s: float = 10.0) -> None:
        """Stop every child: SIGTERM (Airflow's task runner then calls the task's ``on_kill``),
        and SIGKILL for those still running after ``grace_s``."""
        for pid in list(self.running):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while self.running and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        for pid in list(self.running):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            del self.running[pid]


def _child_main(fields: dict[str, Any], task: Any, log_file: Path) -> None:  # pragma: no cover - child
    """Run one task try with Airflow's in-process task runner, logging to the task's log file."""
    from uuid import UUID

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from airflow import settings

    # The parent's pooled connections must not be shared with the child.
    if settings.engine is not None:
        settings.engine.dispose(close=False)

    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o664)
    # Whatever the task or dbt prints goes to the task log too.
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    from airflow.sdk.log import configure_logging

    # Task logs keep info lines (the runner's own console shows warnings only).
    configure_logging(json_output=True, log_level="INFO", output=os.fdopen(os.dup(log_fd), "ab", buffering=0))

    from airflow.sdk.api.datamodels._generated import TaskInstance as TaskInstanceSDK
    from airflow.sdk.execution_time.supervisor import run_task_in_process

    ti = TaskInstanceSDK(
        id=UUID(fields["id"]),
        task_id=fields["task_id"],
        dag_id=fields["dag_id"],
        run_id=fields["run_id"],
        try_number=fields["try_number"],
        map_index=fields["map_index"],
        dag_version_id=UUID(fields["dag_version_id"]),
    )
    run_task_in_process(ti=ti, task=task)
