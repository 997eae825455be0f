"""``ConnectionProfile``: the dbt target built from an Airflow Connection when dbt runs.

The connection is looked up through Airflow (so any secrets backend works: environment
variables, the metadata database, a local file, Vault...) each time a profile is prepared; the
generated ``profiles.yml`` holds only ``env_var()`` references for its secrets
(``dbtflow.profiles.target``). Its identity for the parse cache holds the connection's plain
fields only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbtflow.errors import DbtflowError
from dbtflow.profiles.mappings import ConnectionLike, ProfileMapping, mapping_for
from dbtflow.profiles.target import Target, render
from dbtflow.project.profile import PreparedProfile, duckdb_lock_key

DEFAULT_TARGET = "airflow"


def get_connection(conn_id: str) -> ConnectionLike:
    """The Airflow connection, from whichever secrets backend holds it.

    In a task, Airflow's task SDK asks the API server (which reads every backend, the metadata
    database included). Outside a task (the ``dbtflow`` command, which owns its metadata
    database) the SDK reads only the configured backends, so Airflow's core lookup, which also
    reads the metadata database, is tried next.
    """
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        pass
    try:
        from airflow.models.connection import Connection as CoreConnection

        return CoreConnection.get_connection_from_secrets(conn_id)
    except Exception:  # not found, or no metadata database reachable from here
        raise DbtflowError(
            f"Airflow connection '{conn_id}' is not defined.",
            f"create it (Admin > Connections, `airflow connections add {conn_id} ...`, an "
            f"AIRFLOW_CONN_{conn_id.upper()} environment variable, or your secrets backend).",
        ) from None


@dataclass(frozen=True)
class ConnectionProfile:
    """A dbt profile whose one target comes from Airflow connection ``conn_id``.

    ``mapping``: a function from the connection to a ``Target`` (default: chosen by connection
    type). ``overrides``: target fields to replace or add (``schema``, ``threads``...).
    """

    conn_id: str
    profile_name: str = "dbtflow"
    target: str | None = DEFAULT_TARGET
    overrides: Mapping[str, Any] = field(default_factory=dict)
    mapping: ProfileMapping | None = None

    def build_target(self) -> Target:
        conn = get_connection(self.conn_id)
        mapping = self.mapping or mapping_for(conn)
        return mapping(conn).with_overrides(self.overrides)

    def identity(self) -> str:
        public = json.dumps(self.build_target().public(), sort_keys=True, default=str)
        return f"connection:{self.conn_id}\nprofile:{self.profile_name}\ntarget:{self.target}\n{public}"

    def prepare(self, workdir: Path, *, for_parse: bool = False) -> PreparedProfile:
        target_name = self.target or DEFAULT_TARGET
        text, env = render(self.profile_name, target_name, self.build_target(), with_secrets=not for_parse)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "profiles.yml").write_text(text)
        return PreparedProfile(
            profiles_dir=workdir, profile_name=self.profile_name, target=target_name, env=env
        )

    def writer_lock_key(self) -> str | None:
        target = self.build_target()
        return duckdb_lock_key(str(target.fields.get("path", ""))) if target.type == "duckdb" else None
