"""A local fake of the dbt Cloud v2 API, over HTTPS on 127.0.0.1, for the cloud pattern's tests.

It speaks what ``apache-airflow-providers-dbt-cloud`` calls (``../shared/notes/dbt-cloud-api.md``):
trigger, rerun, poll, list, cancel and artifacts. A job is a list of nodes with their parents; a
run moves through queued, running and then success or error, and its ``run_results.json`` says
which node failed (those listed in ``failing`` for the job's first ``failing_runs`` runs) and which
were skipped because of it. A rerun runs only what failed or was skipped in the job's last run,
as dbt Cloud's "retry from failure" does. The certificate is self-signed and its file is given to
clients through ``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE`` (see ``conftest``), so TLS is verified,
not switched off.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

QUEUED, STARTING, RUNNING, SUCCESS, ERROR, CANCELLED = 1, 2, 3, 10, 20, 30
HUMANIZED = {1: "Queued", 2: "Starting", 3: "Running", 10: "Success", 20: "Error", 30: "Cancelled"}


@dataclass
class FakeJob:
    id: int
    #: (unique id, parents) in the order dbt would run them.
    nodes: list[tuple[str, list[str]]]
    failing: set[str] = field(default_factory=set)
    #: How many of the job's first runs have the ``failing`` nodes fail.
    failing_runs: int = 1_000_000
    seconds_queued: float = 0.3
    seconds_running: float = 0.7


@dataclass
class FakeRun:
    id: int
    job: FakeJob
    created: float
    results: list[tuple[str, str]]
    cause: str = ""
    steps_override: list[str] | None = None
    rerun: bool = False
    cancelled_at: float | None = None

    def status(self) -> int:
        if self.cancelled_at is not None:
            return CANCELLED
        elapsed = time.time() - self.created
        if elapsed < self.job.seconds_queued:
            return QUEUED
        if elapsed < self.job.seconds_queued + self.job.seconds_running:
            return RUNNING
        return ERROR if any(s in ("error", "skipped") for _, s in self.results) else SUCCESS


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat()


class FakeDbtCloud:
    """The server, its state and the requests it received (method, path)."""

    def __init__(
        self, cert_file: Path, key_file: Path, account_id: int = 1, token: str = "fake-dbt-cloud-token"
    ) -> None:
        self.account_id = account_id
        self.token = token
        self.jobs: dict[int, FakeJob] = {}
        self.runs: dict[int, FakeRun] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.cert_file = cert_file
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, key_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def client_env(self, conn_id: str = "dbt_cloud_default") -> dict[str, str]:
        """Environment for Airflow processes: the connection and the trusted certificate."""
        connection = {"conn_type": "dbt_cloud", "login": str(self.account_id), "password": self.token}
        connection["host"] = self.host
        return {
            f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(connection),
            "SSL_CERT_FILE": str(self.cert_file),
            "REQUESTS_CA_BUNDLE": str(self.cert_file),
        }

    def __enter__(self) -> FakeDbtCloud:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_job(self, job: FakeJob) -> FakeJob:
        self.jobs[job.id] = job
        return job

    def runs_of(self, job_id: int) -> list[FakeRun]:
        return sorted((r for r in self.runs.values() if r.job.id == job_id), key=lambda r: r.id)

    # --- behaviour ----------------------------------------------------------------------------

    def start_run(self, job: FakeJob, body: dict[str, Any], rerun: bool) -> FakeRun:
        with self.lock:
            previous = self.runs_of(job.id)
            to_run = [uid for uid, _ in job.nodes]
            if rerun and previous:
                again = {uid for uid, s in previous[-1].results if s in ("error", "skipped")}
                to_run = [uid for uid in to_run if uid in again]
            failing = job.failing if len(previous) < job.failing_runs else set()
            parents = dict(job.nodes)
            status: dict[str, str] = {}
            for uid in to_run:
                if uid in failing:
                    status[uid] = "error"
                elif any(status.get(p) in ("error", "skipped") for p in parents[uid]):
                    status[uid] = "skipped"
                else:
                    status[uid] = "success"
            run = FakeRun(
                id=len(self.runs) + 100,
                job=job,
                created=time.time(),
                results=list(status.items()),
                cause=str(body.get("cause") or ""),
                steps_override=body.get("steps_override"),
                rerun=rerun,
            )
            self.runs[run.id] = run
            return run

    def run_object(self, run: FakeRun) -> dict[str, Any]:
        status = run.status()
        done = status in (SUCCESS, ERROR, CANCELLED)
        steps = [
            {"index": 1, "name": "Clone git repository", "status": SUCCESS, "logs": "cloned"},
            {
                "index": 2,
                "name": "Invoke dbt with `dbt build`",
                "status": status,
                "logs": "\n".join(f"{uid}: {s}" for uid, s in run.results) if done else "",
            },
        ]
        return {
            "id": run.id,
            "job_definition_id": run.job.id,
            "account_id": self.account_id,
            "status": status,
            "status_humanized": HUMANIZED[status],
            "is_complete": done,
            "is_success": status == SUCCESS,
            "is_error": status == ERROR,
            "is_cancelled": status == CANCELLED,
            "created_at": _iso(run.created),
            "started_at": _iso(run.created + run.job.seconds_queued),
            "finished_at": _iso(time.time()) if done else None,
            "href": f"https://{self.host}/deploy/{self.account_id}/runs/{run.id}",
            "run_steps": steps,
        }

    def run_results(self, run: FakeRun) -> dict[str, Any]:
        return {
            "metadata": {
                "dbt_schema_version": "https://schemas.getdbt.com/dbt/run-results/v6.json",
                "dbt_version": "1.11.0",
                "generated_at": _iso(time.time()),
                "invocation_id": f"fake-{run.id}",
                "env": {},
            },
            "results": [
                {
                    "unique_id": uid,
                    "status": status,
                    "execution_time": 0.1,
                    "message": "Database Error: boom" if status == "error" else None,
                    "adapter_response": {"rows_affected": 3} if status == "success" else {},
                    "timing": [],
                    "thread_id": "Thread-1",
                    "failures": None,
                    "compiled": status != "skipped",
                    "compiled_code": None,
                    "relation_name": None,
                    "batch_results": None,
                }
                for uid, status in run.results
            ],
            "elapsed_time": 1.0,
            "args": {"which": "build"},
        }


def _envelope(data: Any, count: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": {"code": 200, "is_success": True, "user_message": "", "developer_message": ""},
        "data": data,
    }
    if count is not None:
        body["extra"] = {
            "filters": {"limit": 100, "offset": 0},
            "pagination": {"count": count, "total_count": count},
        }
    return body


def _handler(cloud: FakeDbtCloud) -> type[BaseHTTPRequestHandler]:
    prefix = f"/api/v2/accounts/{cloud.account_id}/"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, code: int, body: Any) -> None:
            payload = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            cloud.requests.append((method, url.path))
            if self.headers.get("Authorization") != f"Token {cloud.token}":
                return self._send(401, {"status": {"code": 401, "is_success": False}, "data": None})
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw.strip() else {}
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if not url.path.startswith(prefix):
                return self._send(200 if url.path.rstrip("/") == "/api/v2/accounts" else 404, _envelope([]))
            rest = url.path[len(prefix) :]
            if method == "POST" and (m := re.fullmatch(r"jobs/(\d+)/(run|rerun)/", rest)):
                job = cloud.jobs.get(int(m[1]))
                if job is None:
                    return self._send(404, _envelope(None))
                run = cloud.start_run(job, body, rerun=m[2] == "rerun")
                return self._send(200, _envelope(cloud.run_object(run)))
            if method == "POST" and (m := re.fullmatch(r"runs/(\d+)/cancel/", rest)):
                run = cloud.runs[int(m[1])]
                if run.status() not in (SUCCESS, ERROR):
                    run.cancelled_at = time.time()
                return self._send(200, _envelope(cloud.run_object(run)))
            if method == "GET" and rest == "runs/":
                runs = [r for r in cloud.runs.values() if str(r.job.id) == query.get("job_definition_id")]
                runs.sort(key=lambda r: r.id, reverse=query.get("order_by") == "-created_at")
                runs = runs[: int(query.get("limit", 100))]
                return self._send(200, _envelope([cloud.run_object(r) for r in runs], count=len(runs)))
            if method == "GET" and (m := re.fullmatch(r"runs/(\d+)/", rest)):
                return self._send(200, _envelope(cloud.run_object(cloud.runs[int(m[1])])))
            if method == "GET" and (m := re.fullmatch(r"runs/(\d+)/artifacts/(.*)", rest)):
                run = cloud.runs[int(m[1])]
                step = int(query.get("step") or 2)
                available = ["manifest.json", "run_results.json"] if step == 2 and run.results else []
                if run.status() not in (SUCCESS, ERROR) or run.cancelled_at is not None:
                    available = []
                if not m[2]:
                    return self._send(200, _envelope(available))
                if m[2] != "run_results.json" or m[2] not in available:
                    return self._send(404, _envelope(None))
                return self._send(200, cloud.run_results(run))
            return self._send(404, _envelope(None))

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

    return Handler


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake dbt Cloud")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / "fake-dbt-cloud.pem", folder / "fake-dbt-cloud.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file
