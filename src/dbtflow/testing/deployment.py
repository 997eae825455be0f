"""A real Airflow deployment on one machine: api-server, scheduler, dag-processor and triggerer,
each its own process, with the LocalExecutor on SQLite, in a throw-away Airflow home.

``airflow_deployment(home, dags_folder, env)`` starts it and stops it afterwards; ``airflow``
names the Airflow command to use (another virtualenv's, for comparisons).
"""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

COMPONENTS = (["api-server"], ["scheduler"], ["dag-processor"], ["triggerer"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Deployment:
    """A running deployment: its home, environment and Airflow command."""

    home: Path
    env: dict[str, str]
    command: str

    def airflow(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.command, *args], capture_output=True, text=True, env=self.env, timeout=timeout
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.home / "airflow.db", timeout=60) as con:
            return con.execute(sql, params).fetchall()

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.query("select dag_id from dag where dag_id = ?", dag_id):
                return
            time.sleep(1)
        errors = self.query("select filename, stacktrace from import_error")
        raise AssertionError(f"DAG {dag_id} was never parsed; import errors: {errors}")

    def trigger_and_wait(self, dag_id: str, timeout: float = 600) -> tuple[str, str, float]:
        """Trigger a run; return its id, final state, and seconds from trigger to end."""
        self.airflow("dags", "unpause", dag_id)
        started = time.monotonic()
        self.airflow("dags", "trigger", dag_id)
        deadline = started + timeout
        while time.monotonic() < deadline:
            rows = self.query(
                "select run_id, state from dag_run where dag_id = ? order by id desc limit 1", dag_id
            )
            if rows and rows[0][1] in ("success", "failed"):
                return rows[0][0], rows[0][1], time.monotonic() - started
            time.sleep(0.5)
        raise AssertionError(f"the run of {dag_id} did not finish in {timeout}s")


@contextmanager
def airflow_deployment(
    home: Path, dags_folder: Path, extra_env: dict[str, str], airflow: str | None = None
) -> Iterator[Deployment]:
    """Start the four components; stop them afterwards (their logs are in ``home``)."""
    command = airflow or str(Path(sys.executable).parent / "airflow")
    port = _free_port()
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
    home.mkdir(parents=True, exist_ok=True)
    deployment = Deployment(home=home, env=env, command=command)
    deployment.airflow("db", "migrate", timeout=300)
    with sqlite3.connect(home / "airflow.db") as con:
        con.execute("PRAGMA journal_mode=WAL")
    processes = []
    try:
        for component in COMPONENTS:
            log = (home / f"{component[0]}.log").open("w")
            processes.append(
                subprocess.Popen(
                    [command, *component],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            )
        yield deployment
    finally:
        for process in processes:
            os.killpg(process.pid, 15)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
