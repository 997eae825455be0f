"""Profile mappings: an Airflow Connection's fields and extras as a dbt target, one per adapter.

Each mapping takes the connection (anything with Airflow's ``Connection`` attributes) and returns
a ``Target`` whose secrets are kept apart. The mapping is picked from the connection type
(``MAPPINGS``); extras named like the dbt field (``sslmode``, ``warehouse``, ``http_path``...) are
passed through, and the DAG can override or add any field.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from dbtflow.errors import DbtflowError
from dbtflow.profiles.target import Target


class ConnectionLike(Protocol):
    conn_id: str
    conn_type: str
    host: str | None
    port: int | None
    login: str | None
    password: str | None
    schema: str | None

    @property
    def extra_dejson(self) -> dict[str, Any]: ...


ProfileMapping = Callable[[ConnectionLike], Target]


def _extras(conn: ConnectionLike, *names: str) -> dict[str, Any]:
    """The extras among ``names`` that are set (provider-prefixed keys like
    ``extra__snowflake__role`` are accepted too)."""
    extra = conn.extra_dejson
    out: dict[str, Any] = {}
    for name in names:
        for key in (name, f"extra__{conn.conn_type}__{name}"):
            if extra.get(key) not in (None, ""):
                out[name] = extra[key]
                break
    return out


def _require(conn: ConnectionLike, what: str, value: Any) -> Any:
    if value in (None, ""):
        raise DbtflowError(
            f"Airflow connection '{conn.conn_id}' ({conn.conn_type}) has no {what}.",
            f"set the connection's {what}, or pass it in the DAG's profile overrides.",
        )
    return value


def _secrets(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v not in (None, "")}


def postgres(conn: ConnectionLike) -> Target:
    """``postgres``: host, port, login, password; the connection's schema is the database; the dbt
    schema comes from the ``schema`` extra (default ``public``)."""
    fields = {
        "host": _require(conn, "host", conn.host),
        "port": conn.port or 5432,
        "user": _require(conn, "login", conn.login),
        "dbname": _require(conn, "database (the connection's schema field)", conn.schema),
        "schema": conn.extra_dejson.get("schema", "public"),
        **_extras(conn, "sslmode", "connect_timeout", "keepalives_idle", "search_path", "role"),
    }
    return Target("postgres", fields, _secrets(password=conn.password))


def redshift(conn: ConnectionLike) -> Target:
    """``redshift``: like PostgreSQL (port 5439); with the ``iam_profile`` or ``cluster_id`` extra,
    IAM authentication instead of a password."""
    fields = {
        "host": _require(conn, "host", conn.host),
        "port": conn.port or 5439,
        "user": _require(conn, "login", conn.login),
        "dbname": _require(conn, "database (the connection's schema field)", conn.schema),
        "schema": conn.extra_dejson.get("schema", "public"),
        **_extras(conn, "sslmode", "cluster_id", "iam_profile", "region", "ra3_node", "autocreate"),
    }
    if "cluster_id" in fields or "iam_profile" in fields:
        fields["method"] = "iam"
        return Target("redshift", fields)
    return Target("redshift", fields, _secrets(password=conn.password))


def snowflake(conn: ConnectionLike) -> Target:
    """``snowflake``: the ``account``, ``warehouse``, ``database``, ``role`` extras; a password, or
    a key pair (``private_key_content`` or ``private_key_file`` extra, the password then being
    the key's passphrase)."""
    names = ("account", "warehouse", "database", "role", "authenticator")
    extra = _extras(conn, *names, "private_key_content", "private_key_file")
    fields: dict[str, Any] = {
        "account": _require(conn, "account extra", extra.get("account") or conn.host),
        "user": _require(conn, "login", conn.login),
        "database": _require(conn, "database extra", extra.get("database")),
        "schema": _require(conn, "schema", conn.schema),
        **{k: extra[k] for k in ("warehouse", "role", "authenticator") if k in extra},
    }
    if "private_key_content" in extra or "private_key_file" in extra:
        if "private_key_file" in extra:
            fields["private_key_path"] = extra["private_key_file"]
        secrets = _secrets(private_key=extra.get("private_key_content"), private_key_passphrase=conn.password)
        return Target("snowflake", fields, secrets)
    return Target("snowflake", fields, _secrets(password=conn.password))


def bigquery(conn: ConnectionLike) -> Target:
    """``google_cloud_platform``: the ``project`` and ``dataset`` extras; credentials from a key file
    (``key_path``), the key itself as JSON (``keyfile_dict``, a secret), or, with neither,
    Google's application default credentials."""
    extra = _extras(conn, "project", "dataset", "key_path", "keyfile_dict", "location", "priority")
    fields: dict[str, Any] = {
        "project": _require(conn, "project extra", extra.get("project")),
        "dataset": _require(conn, "dataset extra", extra.get("dataset") or conn.schema),
        **{k: extra[k] for k in ("location", "priority") if k in extra},
    }
    if "keyfile_dict" in extra:
        key = extra["keyfile_dict"]
        fields["method"] = "service-account-json"
        return Target("bigquery", fields, {"keyfile_json": json.loads(key) if isinstance(key, str) else key})
    if "key_path" in extra:
        fields.update(method="service-account", keyfile=extra["key_path"])
        return Target("bigquery", fields)
    fields["method"] = "oauth"
    return Target("bigquery", fields)


def databricks(conn: ConnectionLike) -> Target:
    """``databricks``: host, the ``http_path`` extra, a personal access token (the password or the
    ``token`` extra), the schema and the optional ``catalog`` extra."""
    extra = _extras(conn, "http_path", "token", "catalog")
    host = _require(conn, "host", conn.host)
    fields: dict[str, Any] = {
        "host": str(host).removeprefix("https://").rstrip("/"),
        "http_path": _require(conn, "http_path extra", extra.get("http_path")),
        "schema": _require(conn, "schema", conn.schema),
        **({"catalog": extra["catalog"]} if "catalog" in extra else {}),
    }
    token = _require(conn, "token (password or token extra)", conn.password or extra.get("token"))
    return Target("databricks", fields, {"token": token})


def trino(conn: ConnectionLike) -> Target:
    """``trino``: host, port, login; the ``catalog`` extra is the database; LDAP with a password."""
    extra = _extras(conn, "catalog", "http_scheme", "session_properties")
    fields: dict[str, Any] = {
        "host": _require(conn, "host", conn.host),
        "port": conn.port or 8080,
        "user": _require(conn, "login", conn.login),
        "database": _require(conn, "catalog extra", extra.get("catalog")),
        "schema": _require(conn, "schema", conn.schema),
        "method": "ldap" if conn.password else "none",
        **{k: extra[k] for k in ("http_scheme", "session_properties") if k in extra},
    }
    return Target("trino", fields, _secrets(password=conn.password))


def sqlserver(conn: ConnectionLike) -> Target:
    """``mssql``: host, port, login, password; the connection's schema is the database; the dbt
    schema from the ``schema`` extra (default ``dbo``); the ODBC ``driver`` extra."""
    extra = _extras(conn, "driver", "encrypt", "trust_cert")
    fields: dict[str, Any] = {
        "driver": extra.get("driver", "ODBC Driver 18 for SQL Server"),
        "server": _require(conn, "host", conn.host),
        "port": conn.port or 1433,
        "user": _require(conn, "login", conn.login),
        "database": _require(conn, "database (the connection's schema field)", conn.schema),
        "schema": conn.extra_dejson.get("schema", "dbo"),
        **{k: extra[k] for k in ("encrypt", "trust_cert") if k in extra},
    }
    return Target("sqlserver", fields, _secrets(password=conn.password))


def duckdb(conn: ConnectionLike) -> Target:
    """``duckdb``: the database file from the ``path`` extra or the host; ``extensions`` and
    ``settings`` extras; a MotherDuck token (``motherduck_token`` extra or password) as a secret."""
    extra = _extras(conn, "path", "extensions", "settings", "motherduck_token")
    path = _require(conn, "path extra (or host)", extra.get("path") or conn.host)
    fields: dict[str, Any] = {"path": path, **{k: extra[k] for k in ("extensions", "settings") if k in extra}}
    if conn.schema:
        fields["schema"] = conn.schema
    token = extra.get("motherduck_token") or conn.password
    return Target("duckdb", fields, _secrets(motherduck_token=token))


#: Connection type -> mapping.
MAPPINGS: dict[str, ProfileMapping] = {
    "postgres": postgres,
    "redshift": redshift,
    "snowflake": snowflake,
    "google_cloud_platform": bigquery,
    "gcpbigquery": bigquery,
    "databricks": databricks,
    "trino": trino,
    "mssql": sqlserver,
    "duckdb": duckdb,
}


def mapping_for(conn: ConnectionLike) -> ProfileMapping:
    """The mapping for the connection's type, or a clear error naming the supported types."""
    try:
        return MAPPINGS[conn.conn_type]
    except KeyError:
        raise DbtflowError(
            f"Airflow connection '{conn.conn_id}' has type '{conn.conn_type}', which has no dbt profile "
            "mapping.",
            f"use a connection of type {', '.join(sorted(MAPPINGS))}, or pass mapping= (a function from the "
            "connection to dbtflow.profiles.Target).",
        ) from None
