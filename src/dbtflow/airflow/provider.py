"""dbtflow's Airflow provider information: the ``duckdb`` connection type and its hook.

Airflow finds it through the ``apache_airflow_provider`` entry point in ``pyproject.toml``. Every
Airflow command reads it before it runs, which makes it the one place dbtflow's code runs in the
``airflow triggerer`` process itself: there it installs
``triggerer_cache.install_in_supervisor``, ``trigger_workloads``, the ``upstream_failed``
and ``node_assets`` handlers, ``success_callbacks`` and ``triggerer_passes``; in ``airflow
scheduler`` and ``airflow triggerer``, ``dead_jobs``.
"""

from __future__ import annotations

from typing import Any

from dbtflow import __version__


def get_provider_info() -> dict[str, Any]:
    from dbtflow.airflow import (
        dead_jobs,
        node_assets,
        success_callbacks,
        trigger_workloads,
        triggerer_cache,
        triggerer_passes,
        upstream_failed,
    )

    triggerer_cache.install_in_supervisor()
    trigger_workloads.install_in_triggerer()
    upstream_failed.install_in_triggerer()
    success_callbacks.install_in_triggerer()
    node_assets.install_in_triggerer()
    triggerer_passes.install_in_triggerer()
    dead_jobs.install()
    return {
        "package-name": "dbtflow",
        "name": "dbtflow",
        "description": "Run dbt projects on Apache Airflow.",
        "versions": [__version__],
        "connection-types": [
            {"connection-type": "duckdb", "hook-class-name": "dbtflow.airflow.duckdb_hook.DuckDBHook"}
        ],
    }
