"""PostgreSQL for tests: the machine's server (trust auth; started when down), roles with
passwords on it, and a throw-away cluster with real password authentication (SCRAM)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LOCAL = ("127.0.0.1", 5432)
BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/usr/lib/postgresql/bin"))


def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def ensure_local_server() -> None:
    """Start the machine's PostgreSQL if it is down; fail loudly if it cannot be started."""
    if _listening(*LOCAL):
        return
    versions = os.listdir("/etc/postgresql") if Path("/etc/postgresql").is_dir() else []
    assert versions, "PostgreSQL is not installed here (no /etc/postgresql)"
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", "start"], check=False)
    deadline = time.monotonic() + 30
    while not _listening(*LOCAL):
        assert time.monotonic() < deadline, "PostgreSQL at 127.0.0.1:5432 did not start"
        time.sleep(0.5)


def psql(
    sql: str,
    *,
    port: int = 5432,
    user: str = "postgres",
    password: str | None = None,
    database: str = "postgres",
) -> str:
    env = {**os.environ, **({"PGPASSWORD": password} if password else {})}
    done = subprocess.run(
        [str(BIN / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", database,
         "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def create_role_and_database(
    name: str, password: str, *, port: int = 5432, superuser_password: str | None = None
) -> None:
    """A login role with a password, owning a database of the same name (dropped first)."""
    for sql in (
        f"drop database if exists {name}",
        f"drop role if exists {name}",
        f"create role {name} login password '{password}'",
        f"create database {name} owner {name}",
    ):
        psql(sql, port=port, password=superuser_password)


@dataclass(frozen=True)
class Cluster:
    port: int
    superuser_password: str


@contextmanager
def scram_cluster(superuser_password: str) -> Iterator[Cluster]:
    """A new PostgreSQL cluster that checks passwords (SCRAM), on a free port; removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="dbtflow-pg-"))
    data = folder / "data"
    pwfile = folder / "pw"
    pwfile.write_text(superuser_password + "\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(folder, "postgres")
        shutil.chown(pwfile, "postgres")
    try:
        subprocess.run(
            [*as_postgres, str(BIN / "initdb"), "-D", str(data), "-U", "postgres",
             "--auth=scram-sha-256", f"--pwfile={pwfile}"],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [*as_postgres, str(BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "log"),
             "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
            check=True, capture_output=True,
        )  # fmt: skip
        yield Cluster(port=port, superuser_password=superuser_password)
    finally:
        subprocess.run(
            [*as_postgres, str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)
