"""The embedded Airflow of ``dbtflow run``: its home, metadata database and dags folder.

Everything lives under ``$DBTFLOW_HOME`` (default ``~/.dbtflow``): Airflow's SQLite metadata
database and logs in ``airflow/``, generated DAG files in ``dags/``. The settings are applied
through Airflow's environment variables before Airflow is imported, so a user's own Airflow
configuration (which may point at a production database) is never touched.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dbtflow import settings
from dbtflow.files import write_atomic
from dbtflow.settings import dbtflow_home

#: How long a connection to the metadata database waits for SQLite's write lock before failing
#: with "database is locked". Airflow passes SQLite no timeout, so Python's default of 5 s applied:
#: under load, one write transaction over many task instances (a scheduling pass deferring 1000
#: tasks; another ``dbtflow run`` in the same home) outlasted it, and the task that waited failed
#: (a state-aware run's ``dbt_build`` could not record its start at N=1000).
SQLITE_LOCK_WAIT_S = 120
#: Airflow's ``[database] sql_alchemy_connect_args`` (and ``_async``) for the embedded home.
SQLITE_CONNECT_ARGS: dict[str, object] = {"timeout": SQLITE_LOCK_WAIT_S}
SQLITE_ASYNC_CONNECT_ARGS: dict[str, object] = {"timeout": SQLITE_LOCK_WAIT_S}


@dataclass(frozen=True)
class EmbeddedAirflow:
    """Paths of the embedded Airflow."""

    home: Path

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def dags_folder(self) -> Path:
        return self.home / "dags"

    @property
    def database(self) -> Path:
        return self.airflow_home / "airflow.db"

    @property
    def log_folder(self) -> Path:
        return self.airflow_home / "logs"

    def environment(self) -> dict[str, str]:
        return {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.database}",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{__name__}.SQLITE_CONNECT_ARGS",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": f"{__name__}.SQLITE_ASYNC_CONNECT_ARGS",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.log_folder),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": settings.airflow_log_level(),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            # Every run re-registers its DAG file, which may have changed seconds ago.
            "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "0",
        }

    def activate(self) -> None:
        """Point Airflow at this home. Must run before Airflow is imported."""
        for folder in (self.airflow_home, self.dags_folder, self.log_folder):
            folder.mkdir(parents=True, exist_ok=True)
        os.environ.update(self.environment())
        os.environ.setdefault("AIRFLOW__CORE__FERNET_KEY", self._fernet_key())
        # The first load of a DAG file parses its project with dbt (then cached): on a busy
        # machine, or for a big project, longer than Airflow's 30 s default import timeout.
        os.environ.setdefault("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "300")

    def _fernet_key(self) -> str:
        """The key Airflow encrypts connection secrets and trigger arguments with in this home's
        database; created once, readable by the owner only (as Airflow does in airflow.cfg)."""
        path = self.airflow_home / "fernet.key"
        if not path.exists():
            from cryptography.fernet import Fernet

            fd, tmp = tempfile.mkstemp(dir=self.airflow_home, prefix=".fernet.")
            with os.fdopen(fd, "w") as fh:
                fh.write(Fernet.generate_key().decode())
            with contextlib.suppress(FileExistsError):  # another process was first: use its key
                os.link(tmp, path)
            os.unlink(tmp)
        return path.read_text().strip()

    def ensure_database(self) -> None:
        """Create or upgrade the metadata database once per Airflow version (about 4 s the first time)."""
        from airflow import __version__ as airflow_version
        from airflow.utils import db

        marker = self.airflow_home / f".dbtflow-db-{airflow_version}"
        if not (marker.exists() and self.database.exists()):
            db.initdb()
            write_atomic(marker, b"ok\n")
        # Task processes, the trigger loop and the runner write at once: SQLite's write-ahead log
        # lets readers go on while one of them writes (the setting is kept in the file).
        with sqlite3.connect(self.database, timeout=60) as con:
            con.execute("PRAGMA journal_mode=WAL")


def embedded_airflow() -> EmbeddedAirflow:
    return EmbeddedAirflow(home=dbtflow_home())
