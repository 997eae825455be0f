"""Airflow's own authentication and authorization for dbtflow's routes; no login of dbtflow's.

``get_user`` (from ``airflow.api_fastapi.core_api.security``) takes the caller from a bearer
token or the UI's ``_token`` cookie and answers 401 without one; ``requires_access_dag`` asks the
configured auth manager whether the user may read a DAG (the ``dag_id`` path parameter), or DAGs
at all when the route names none. ``dbtflow ui``'s all-admins middleware gives every request an
admin token, so local use needs no login.
"""

from __future__ import annotations

from typing import Annotated

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
from fastapi import Depends

#: The authenticated caller (401 without a valid token or cookie).
User = Annotated[BaseUser, Depends(get_user)]
#: The caller may read the DAG of the route's ``dag_id`` (403 otherwise).
MAY_READ_DAG = Depends(requires_access_dag("GET"))
#: The caller may read DAGs (the dbt docs describe the projects the DAGs run).
MAY_READ_DAGS = Depends(requires_access_dag("GET"))


def readable_dag_ids(user: BaseUser) -> set[str]:
    """The DAGs the auth manager lets ``user`` read."""
    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))
