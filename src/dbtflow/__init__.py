"""dbtflow: run dbt projects on Apache Airflow.

Public API for DAG files::

    from dbtflow import DbtProject, dbt_dag

    dag = dbt_dag(DbtProject("/path/to/project"), dag_id="my_dbt", pattern="per_model")

Airflow is imported only when ``dbt_dag`` / ``dbt_task_group`` (or ``model_asset`` /
``upstream_assets``, the Airflow assets of a project's models) are first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dbtflow.profiles  # noqa: F401  (registers profile="<connection id>")
from dbtflow.errors import DbtflowError
from dbtflow.project.config import DbtProject
from dbtflow.project.graph import Node
from dbtflow.project.profile import ProfilesDir

if TYPE_CHECKING:
    from dbtflow.airflow.assets import model_asset, upstream_assets
    from dbtflow.airflow.dag import dbt_dag, dbt_task_group

__all__ = [
    "DbtProject",
    "DbtflowError",
    "Node",
    "ProfilesDir",
    "dbt_dag",
    "dbt_task_group",
    "model_asset",
    "upstream_assets",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("dbt_dag", "dbt_task_group"):
        from dbtflow.airflow import dag

        return getattr(dag, name)
    if name in ("model_asset", "upstream_assets"):
        from dbtflow.airflow import assets

        return getattr(assets, name)
    raise AttributeError(name)
