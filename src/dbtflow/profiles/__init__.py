"""Airflow Connection → dbt target: profile mappings, and profiles read from Kubernetes Secrets.

``DbtProject(path, profile="my_conn")`` builds the target from Airflow connection ``my_conn``
when dbt runs (``ConnectionProfile``); importing this package registers that resolver.
"""

from __future__ import annotations

from dbtflow.profiles.connection import ConnectionProfile
from dbtflow.profiles.kubernetes import KubernetesSecretProfile
from dbtflow.profiles.mappings import MAPPINGS
from dbtflow.profiles.target import Target
from dbtflow.project.profile import register_string_resolver

register_string_resolver(
    lambda conn_id, profile_name, target: ConnectionProfile(
        conn_id, profile_name=profile_name, target=target or "airflow"
    )
)

__all__ = ["MAPPINGS", "ConnectionProfile", "KubernetesSecretProfile", "Target"]
