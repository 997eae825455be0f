"""Where a dbt node's table lives, named the way Airflow assets and OpenLineage name datasets.

Downstream DAGs schedule on a model's Airflow asset and lineage catalogs join on its OpenLineage
dataset, so both names must be stable and computable from the project alone (a DAG file calls
``dbtflow.model_asset`` at parse time, the asset task at run time). The naming follows
OpenLineage's dataset naming (a ``namespace`` for the warehouse, a ``database.schema.table``
name, as OpenLineage's own dbt integration and its ``openlineage.client.naming`` produce them),
and the asset URI is OpenLineage's URI of the same dataset, ``namespace/name``
(``postgres://host:port/database.schema.table``): one name in the asset graph and the lineage
catalog. Airflow's PostgreSQL provider, when installed, accepts only its own AIP-60 form
(``postgres://host:port/database/schema/table``): ``Relation.airflow_uri`` is that form, for
``dbtflow.airflow.assets`` to fall back on. No Airflow here: the warehouse comes from the
project's profile target.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbtflow.errors import DbtflowError
from dbtflow.project.config import DbtProject
from dbtflow.project.graph import Node

_ENV_VAR_CALL = re.compile(r"""\{\{\s*env_var\(\s*['"](\w+)['"]\s*(?:,\s*['"]([^'"]*)['"]\s*)?\)\s*\}\}""")
#: One part of a relation name: "quoted", `quoted`, [quoted] or bare.
_PART = re.compile(r'"((?:[^"]|"")*)"|`([^`]*)`|\[([^\]]*)\]|([^."`\[\]]+)')


@dataclass(frozen=True)
class Warehouse:
    """The warehouse a project's target writes to: its adapter and OpenLineage namespace."""

    adapter: str
    #: OpenLineage namespace: ``postgres://host:5432``, ``duckdb:///abs/file.duckdb``, ``bigquery``.
    namespace: str


@dataclass(frozen=True)
class Relation:
    """One table or view: its warehouse and its three-part name."""

    warehouse: Warehouse
    database: str
    schema: str
    identifier: str

    @property
    def dataset_name(self) -> str:
        """OpenLineage dataset name: ``database.schema.table``."""
        return f"{self.database}.{self.schema}.{self.identifier}"

    @property
    def uri(self) -> str:
        """The asset URI: OpenLineage's ``namespace/name``, ``postgres://host:5432/db.schema.table``
        (``bigquery://project/dataset/table`` for BigQuery, whose namespace has no authority)."""
        if "://" not in self.warehouse.namespace:
            return self.airflow_uri
        return f"{self.warehouse.namespace}/{self.dataset_name}"

    @property
    def airflow_uri(self) -> str:
        """Airflow's AIP-60 form, ``postgres://host:5432/db/schema/table``: what an Airflow provider
        that validates the scheme (apache-airflow-providers-postgres) accepts."""
        if "://" not in self.warehouse.namespace:
            return f"{self.warehouse.namespace}://{self.database}/{self.schema}/{self.identifier}"
        return f"{self.warehouse.namespace}/{self.database}/{self.schema}/{self.identifier}"


def _render(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return _ENV_VAR_CALL.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)


def target_fields(project: DbtProject) -> dict[str, Any]:
    """The plain (non-secret) fields of the project's dbt target, with ``type``."""
    source: Any = project.profile_source
    if hasattr(source, "build_target"):  # an Airflow connection (dbtflow.profiles.ConnectionProfile)
        target = source.build_target()
        return {"type": target.type, **dict(target.fields)}
    if hasattr(source, "secret_keys"):  # dbtflow.profiles.KubernetesSecretProfile
        return {"type": source.type, **dict(source.fields)}
    document = source.document()
    profile = document.get(source.profile_name) or {}
    output = (profile.get("outputs") or {}).get(source.target or _render(profile.get("target"))) or {}
    return {key: _render(value) for key, value in output.items()}


def _duckdb_namespace(path: str) -> str:
    if not path or path == ":memory:" or path.startswith(("md:", "motherduck:")):
        # MotherDuck and in-memory databases have no file: name them by what the profile says.
        return f"duckdb://{path or ':memory:'}"
    return f"duckdb://{Path(path).expanduser().resolve()}"


def namespace_of(fields: dict[str, Any]) -> str:
    """The OpenLineage namespace of a dbt target (as OpenLineage's dbt integration names it)."""
    adapter = str(fields.get("type", ""))
    host, port = fields.get("host"), fields.get("port")
    if adapter == "duckdb":
        return _duckdb_namespace(str(fields.get("path", "")))
    if adapter in ("postgres", "redshift", "trino"):
        default = {"postgres": 5432, "redshift": 5439, "trino": 8080}[adapter]
        return f"{adapter}://{host}:{port or default}"
    if adapter == "sqlserver":
        return f"mssql://{fields.get('server') or host}:{port or 1433}"
    if adapter == "snowflake":
        return f"snowflake://{str(fields.get('account', '')).lower()}"
    if adapter == "bigquery":
        return "bigquery"
    if adapter == "databricks":
        return f"databricks://{host}"
    authority = f"{host}:{port}" if host and port else str(host or "")
    return f"{adapter}://{authority}"


def warehouse_of(project: DbtProject) -> Warehouse:
    """The project's warehouse, from its profile target."""
    fields = target_fields(project)
    if not fields.get("type"):
        raise DbtflowError(
            f"The dbt target of {project.name} names no adapter type: its tables cannot be named.",
            "set `type:` in the target of profiles.yml, or pass assets=False to dbt_dag.",
        )
    return Warehouse(adapter=str(fields["type"]), namespace=namespace_of(fields))


def relation_parts(relation_name: str) -> tuple[str, ...]:
    """The parts of a quoted relation name: ``"db"."main"."orders"`` -> ``("db", "main", "orders")``."""
    parts: list[str] = []
    for match in _PART.finditer(relation_name):
        quoted, backticked, bracketed, bare = match.groups()
        if quoted is not None:
            parts.append(quoted.replace('""', '"'))
        else:
            parts.append((backticked or bracketed or bare or "").strip())
    return tuple(p for p in parts if p)


def relation_of(warehouse: Warehouse, node: Node) -> Relation | None:
    """The node's relation, or ``None`` when it has none (an ephemeral model, a test)."""
    if not node.relation_name:
        return None
    parts = relation_parts(node.relation_name)
    if len(parts) == 2:  # adapters without databases (e.g. MySQL-like): schema.table
        parts = (parts[0], *parts)
    if len(parts) != 3:
        return None
    return Relation(warehouse, *parts)
