"""``DuckDBHook``: Airflow's SQL interface (``DbApiHook``) for a DuckDB file, so that
``apache-airflow-providers-common-sql`` checks run on the tables dbt built in the embedded warehouse.

Hand-written: the community DuckDB provider is not maintained for Airflow 3. dbtflow registers it
for the ``duckdb`` connection type (``dbtflow.airflow.provider``); the file is the connection's
``path`` extra or its host, opened read-only.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.common.sql.hooks.sql import DbApiHook


class DuckDBHook(DbApiHook):
    """Read-only SQL access to the DuckDB file of a ``duckdb`` connection."""

    conn_name_attr = "duckdb_conn_id"
    default_conn_name = "duckdb_default"
    conn_type = "duckdb"
    hook_name = "DuckDB"
    supports_autocommit = False

    def _path(self) -> str:
        conn = self.get_connection(self.get_conn_id())
        return str(conn.extra_dejson.get("path") or conn.host)

    def get_conn(self) -> Any:
        import duckdb

        return duckdb.connect(self._path(), read_only=True)

    def get_uri(self) -> str:
        return f"duckdb:///{self._path()}"
