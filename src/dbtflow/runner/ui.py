"""``dbtflow ui``: the embedded Airflow's web UI, where the runs of ``dbtflow run`` are seen.

It starts Airflow's own api-server on the embedded Airflow home (the metadata database, logs and
dags folder that ``dbtflow run`` uses), so each run shows its per-model grid, task logs, XCom
summaries and dbtflow's pages (the run-time report and the projects' dbt docs).

Local use needs no password: the simple auth manager with every user an admin, bound to
127.0.0.1 only, so nobody else on the network reaches it. The JWT secret is kept in the home
(readable by its owner only), so a browser's login survives a restart of ``dbtflow ui``.
Ctrl-C stops the api-server and every process it started.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from dbtflow.runner.home import EmbeddedAirflow, embedded_airflow
from dbtflow.runner.owners import fail_abandoned_runs

HOST = "127.0.0.1"
DEFAULT_PORT = 8080
START_TIMEOUT_S = 120.0
#: How often the UI looks for runs whose `dbtflow run` process is gone (to show them failed).
SWEEP_EVERY_S = 10.0


def free_port_or(preferred: int) -> int:
    """``preferred`` when it is free on 127.0.0.1, else any free port."""
    for candidate in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind((HOST, candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port on 127.0.0.1")


def _jwt_secret(home: EmbeddedAirflow) -> str:
    path = home.airflow_home / "api_jwt_secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def ui_environment(home: EmbeddedAirflow, port: int) -> dict[str, str]:
    """The api-server's environment: the embedded Airflow, localhost only, everyone an admin."""
    url = f"http://{HOST}:{port}"
    return {
        **os.environ,
        **home.environment(),
        "AIRFLOW__CORE__FERNET_KEY": os.environ["AIRFLOW__CORE__FERNET_KEY"],
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": _jwt_secret(home),
        # The UI links task logs to this address; the logs are read from the local folder.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
    }


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout_s: float = START_TIMEOUT_S) -> None:
    """Wait for the api-server's health endpoint; fail when the process ends first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the api-server exited with status {process.returncode} before it answered")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"the api-server did not answer at {url} within {timeout_s:.0f}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the api-server's process group (its workers too), politely first."""
    if process.poll() is not None:
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave it running
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve_ui(port: int | None = None) -> int:
    """Run the api-server until Ctrl-C or SIGTERM (exit 130) or until it stops by itself (its
    status). The server runs in a session of its own, so it is always stopped from here."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (`cmd &`)
    home = embedded_airflow()
    home.activate()
    home.ensure_database()
    chosen = port or free_port_or(DEFAULT_PORT)
    env = ui_environment(home, chosen)
    url = f"http://{HOST}:{chosen}"
    log_path = home.airflow_home / "api-server.log"
    airflow = Path(sys.executable).parent / "airflow"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(airflow), "api-server", "--host", HOST, "--port", str(chosen)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches dbtflow only; it stops the server in order
        )
    try:
        print(f"Starting the Airflow UI of {home.home} (log: {log_path})...", flush=True)
        wait_until_up(url, process)
        print(f"Airflow UI: {url}  (no login needed: local only; Ctrl-C stops it)", flush=True)
        print(f"  dbt run-time reports: {url}/dbtflow/reports/", flush=True)
        print(f"  dbt docs:             {url}/dbtflow/docs/", flush=True)
        while process.poll() is None:
            # A run whose `dbtflow run` process was killed meanwhile is shown failed, not running.
            try:
                fail_abandoned_runs()
            except Exception as exc:  # a busy database: the next look will do
                print(f"dbtflow: could not look for abandoned runs now: {exc}", file=sys.stderr, flush=True)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=SWEEP_EVERY_S)
        return process.returncode
    except KeyboardInterrupt:
        print("\nStopping the Airflow UI.", file=sys.stderr, flush=True)
        return 130
    except RuntimeError as exc:
        print(f"dbtflow: error: {exc}; see {log_path}", file=sys.stderr)
        return 1
    finally:
        _stop(process)
