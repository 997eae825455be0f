"""A real Airflow deployment on one machine, for end-to-end tests and benchmarks.

Two set-ups:

- ``LocalExecutor`` on SQLite: api-server, scheduler, dag-processor and triggerer, each its own
  process, in a throw-away Airflow home.
- ``CeleryExecutor``: the same components on a PostgreSQL metadata database, a Redis broker, and
  Celery workers in separate processes, each in its own working folder (its own ``$DBTFLOW_HOME``,
  temporary files and log folder), so nothing is shared through the local disk but the dbt
  project.

Runs are triggered and followed through Airflow's REST API, as a user or an orchestrator would.
``airflow`` names the Airflow command to use (another virtualenv's, for comparisons).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from cryptography.fernet import Fernet

COMPONENTS = (["api-server"], ["scheduler"], ["dag-processor"], ["triggerer"])
FINISHED_RUN = ("success", "failed")
#: ``extra_env`` for tests whose DAG files keep their DAGs' shape while the deployment runs (a
#: model's SQL may change; each task parses the DAG file again anyway): each file is parsed
#: once. Airflow parses every file again every 30 s, a second or more of CPU per file on a
#: loaded machine, taken from dbt and the other components (not for benchmarks: production
#: re-parses).
PARSE_ONCE = {"AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Celery:
    """A CeleryExecutor set-up: its metadata database, broker and number of workers."""

    metadata_url: str
    broker_url: str
    workers: int = 2
    concurrency: int = 2


@dataclass
class Deployment:
    """A running deployment: its home, environment, Airflow command and processes."""

    home: Path
    env: dict[str, str]
    command: str
    api_url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: How each component is started: its arguments, environment and working folder.
    commands: dict[str, tuple[list[str], dict[str, str], Path]] = field(default_factory=dict)
    _client: httpx.Client | None = None
    #: One change through the API at a time from this process (tests follow runs on threads).
    _writes: threading.Lock = field(default_factory=threading.Lock)

    def start(self, name: str) -> None:
        """Start a component (again, after ``kill``: a worker machine coming back)."""
        args, env, cwd = self.commands[name]
        log = (self.home / f"{name}.log").open("a")
        self.processes[name] = subprocess.Popen(
            [self.command, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    def airflow(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.command, *args], capture_output=True, text=True, env=self.env, timeout=timeout
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    # --- the metadata database, for what the API does not show -----------------------------

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        """Run SQL on the metadata database (``?`` placeholders on SQLite, ``%s`` on PostgreSQL)."""
        url = self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as con:
                return [tuple(row) for row in con.exec_driver_sql(sql, tuple(params)).fetchall()]
        finally:
            engine.dispose()

    # --- the REST API ----------------------------------------------------------------------

    @property
    def api(self) -> httpx.Client:
        """A client of the api-server, with a token (the simple auth manager hands one out)."""
        if self._client is None:
            deadline = time.monotonic() + 120
            while True:
                try:
                    token = httpx.get(f"{self.api_url}/auth/token", timeout=10).json()["access_token"]
                    break
                except (httpx.TransportError, ValueError, KeyError):
                    assert time.monotonic() < deadline, "the api-server did not start"
                    time.sleep(1)
            self._client = httpx.Client(
                base_url=self.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=120
            )
        return self._client

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.api.request(method, path, **kwargs)
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def write(self, method: str, path: str, *, made: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        """A request that changes something. On SQLite metadata the api-server answers 500 (503
        for a backfill) when the database is locked by another component's write (for longer
        than SQLite waits, on a loaded machine): ask again, unless ``made`` (which returns what
        the request would have, or None) finds that the change was made after all."""
        with self._writes:
            for attempt in range(5):
                response = self.api.request(method, path, **kwargs)
                locked = (response.status_code == 500 and "Database error" in response.text) or (
                    response.status_code == 503 and "locked" in response.text
                )
                if not locked or attempt == 4:
                    break
                if made is not None and (done := made()) is not None:
                    return done
                time.sleep(1 + attempt)
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def unpause(self, dag_id: str) -> None:
        self.write("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api.get(f"/api/v2/dags/{dag_id}").is_success:
                return
            time.sleep(1)
        errors = self._json("GET", "/api/v2/importErrors")
        raise AssertionError(f"DAG {dag_id} was never parsed; import errors: {errors}")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Unpause the DAG and trigger a run through the REST API; return its run id."""
        self.unpause(dag_id)
        body = {"logical_date": None, "conf": conf or {}}
        before = self._manual_runs(dag_id)

        def made() -> dict[str, Any] | None:
            new = self._manual_runs(dag_id) - before
            return {"dag_run_id": new.pop()} if new else None

        run = self.write("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body, made=made)
        return str(run["dag_run_id"])

    def _manual_runs(self, dag_id: str) -> set[str]:
        params = {"limit": 100, "run_type": "manual"}
        runs = self._json("GET", f"/api/v2/dags/{dag_id}/dagRuns", params=params)
        return {str(run["dag_run_id"]) for run in runs["dag_runs"] if run["run_type"] == "manual"}

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self._json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in FINISHED_RUN:
                return state
            time.sleep(0.5)
        tasks = self.tasks(dag_id, run_id)
        raise AssertionError(f"run {run_id} of {dag_id} did not finish in {timeout}s: {tasks}")

    def trigger_and_wait(self, dag_id: str, timeout: float = 600) -> tuple[str, str, float]:
        """Trigger a run; return its id, final state, and seconds from trigger to end."""
        started = time.monotonic()
        run_id = self.trigger(dag_id)
        state = self.wait_for_run(dag_id, run_id, timeout)
        return run_id, state, time.monotonic() - started

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run (the API serves them 100 at a time)."""
        found: list[dict[str, Any]] = []
        while True:
            page = self._json(
                "GET",
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": len(found), "order_by": "id"},
            )
            found += page["task_instances"]
            if not page["task_instances"] or len(found) >= page["total_entries"]:
                return found

    def tasks(self, dag_id: str, run_id: str) -> dict[str, tuple[str | None, int]]:
        """task id -> (state, try number)."""
        return {ti["task_id"]: (ti["state"], ti["try_number"]) for ti in self.task_instances(dag_id, run_id)}

    # --- faults ----------------------------------------------------------------------------

    def kill_component_of(self, pid: int) -> str:
        """SIGKILL the component (a Celery worker) that started ``pid``, with every process it
        started (task supervisors run in sessions of their own), as if its machine died; return
        the component's name."""
        import psutil

        owners = {process.pid: name for name, process in self.processes.items()}
        ancestor: psutil.Process | None = psutil.Process(pid)
        while ancestor is not None and ancestor.pid not in owners:
            ancestor = ancestor.parent()
        assert ancestor is not None, f"pid {pid} belongs to no component of this deployment"
        self.kill(owners[ancestor.pid])
        return owners[ancestor.pid]

    def kill(self, name: str) -> None:
        """SIGKILL a component with every process it started."""
        import psutil

        component = psutil.Process(self.processes[name].pid)
        doomed = [component, *component.children(recursive=True)]
        for process in doomed:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        psutil.wait_procs(doomed, timeout=30)
        self.processes[name].wait(timeout=30)

    def worker_that_ran(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """The Celery worker that ran a try of a task: the one whose log folder holds its log."""
        name = f"dag_id={dag_id}/run_id={run_id}/task_id={task_id}/attempt={try_number}.log"
        workers = [w for w in self.processes if w.startswith("worker")]
        found = [w for w in workers if (self.home / w / "logs" / name).exists()]
        assert len(found) == 1, f"the log of try {try_number} of {task_id} is in the folders of {found}"
        return found[0]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _base_env(home: Path, dags_folder: Path, extra_env: dict[str, str], port: int) -> dict[str, str]:
    env = {
        **os.environ,
        **extra_env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    }
    env.pop("AIRFLOW__LOGGING__LOGGING_LEVEL", None)
    return env


def _celery_env(env: dict[str, str], celery: Celery) -> dict[str, str]:
    return {
        **env,
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": celery.metadata_url,
        "AIRFLOW__CELERY__BROKER_URL": celery.broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + celery.metadata_url,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(celery.concurrency),
    }


def _worker_env(env: dict[str, str], folder: Path) -> dict[str, str]:
    """A worker's own folders: dbtflow home (caches, default state), temporary files, task logs."""
    for sub in ("dbtflow", "tmp", "logs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {
        **env,
        "DBTFLOW_HOME": str(folder / "dbtflow"),
        "TMPDIR": str(folder / "tmp"),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(folder / "logs"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
    }


@contextmanager
def airflow_deployment(
    home: Path,
    dags_folder: Path,
    extra_env: dict[str, str],
    airflow: str | None = None,
    *,
    celery: Celery | None = None,
    metadata_url: str | None = None,
) -> Iterator[Deployment]:
    """Start the components (and Celery workers); stop them afterwards (logs are in ``home``).

    ``metadata_url``: the LocalExecutor's metadata database (an empty PostgreSQL database, say),
    instead of SQLite in ``home``.
    """
    command = airflow or str(Path(sys.executable).parent / "airflow")
    port = free_port()
    env = _base_env(home, dags_folder, extra_env, port)
    if metadata_url is not None:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = metadata_url
    if celery is not None:
        env = _celery_env(env, celery)
    if not env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite"):
        # Connect arguments from this process's environment (the embedded Airflow's, for SQLite:
        # psycopg2 refuses its "timeout") are not for this database.
        for key in ("SQL_ALCHEMY_CONNECT_ARGS", "SQL_ALCHEMY_CONNECT_ARGS_ASYNC"):
            key = f"AIRFLOW__DATABASE__{key}"
            if key not in extra_env:
                env.pop(key, None)
    home.mkdir(parents=True, exist_ok=True)
    deployment = Deployment(home=home, env=env, command=command, api_url=f"http://127.0.0.1:{port}")
    deployment.airflow("db", "migrate", timeout=300)
    if env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite"):
        deployment.query("PRAGMA journal_mode=WAL")
    deployment.commands = {name[0]: (list(name), env, home) for name in COMPONENTS}
    for i in range(1, (celery.workers if celery else 0) + 1):
        folder = home / f"worker{i}"
        args = ["celery", "worker", "--celery-hostname", f"worker{i}@%h"]
        args += ["--without-mingle", "--without-gossip"]
        deployment.commands[f"worker{i}"] = (args, _worker_env(env, folder), folder)
    try:
        for name in deployment.commands:
            deployment.start(name)
        yield deployment
    finally:
        deployment.close()
        for process in deployment.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in deployment.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
