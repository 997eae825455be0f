"""The dbtflow Airflow plugin: dbtflow's pages in Airflow's API server, behind Airflow's login.

- ``/dbtflow/reports/``: the run-time report of each dbt DAG, rendered live from the history
  (a "dbt run times" entry in the UI's navigation; each dbt DAG's docs link to its page);
- ``/dbtflow/docs/``: each project's dbt docs (``dbtflow docs``), one navigation entry per project
  documented when the API server started, and "dbt docs" for the list.

Every route authenticates with Airflow's own dependencies (``dbtflow.airflow.web.auth``).

Every Airflow process loads plugins (the triggerer, the dag-processor, each task's process,
``dbtflow run``), and only the API server serves these pages: the app is built on its first
request (``LazyApp``), since building it imports Airflow's API app (0.5-1.3 s of CPU in each
process that loaded the plugin, py-spy of ``dbtflow run``, 2026-12-03).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin

from dbtflow.project.docs import documented_projects

if TYPE_CHECKING:
    from fastapi import FastAPI

URL_PREFIX = "/dbtflow"
REPORTS_URL = f"{URL_PREFIX}/reports"
DOCS_URL = f"{URL_PREFIX}/docs"


def dbtflow_app() -> FastAPI:
    """The FastAPI app Airflow mounts at ``/dbtflow``."""
    from fastapi import FastAPI

    from dbtflow.airflow.web import docs, reports

    app = FastAPI(title="dbtflow", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(reports.router)
    app.include_router(docs.router)
    return app


class LazyApp:
    """An ASGI app that builds ``dbtflow_app`` on its first request (see the module docstring)."""

    def __init__(self) -> None:
        self._app: FastAPI | None = None
        self._lock = threading.Lock()

    def built(self) -> FastAPI:
        with self._lock:
            if self._app is None:
                self._app = dbtflow_app()
            return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self._app or self.built()
        await app(scope, receive, send)


def navigation() -> list[dict[str, Any]]:
    """The UI's navigation entries (each opens its page inside the UI)."""
    entries: list[dict[str, Any]] = [
        {
            "name": "dbt run times",
            "href": f"{REPORTS_URL}/",
            "destination": "nav",
            "url_route": "dbtflow-reports",
        },
        {"name": "dbt docs", "href": f"{DOCS_URL}/", "destination": "nav", "url_route": "dbtflow-docs"},
    ]
    for project in documented_projects():
        entries.append(
            {
                "name": f"dbt docs: {project}",
                "href": f"{DOCS_URL}/{project}/",
                "destination": "nav",
                "url_route": f"dbtflow-docs-{project}",
            }
        )
    return entries


class DbtflowPlugin(AirflowPlugin):
    name = "dbtflow"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "dbtflow reports and dbt docs"}]
    external_views = navigation()
