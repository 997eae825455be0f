"""The dbtflow Airflow plugin: the run-time reports (``dbtflow report``) served by Airflow's API
server under ``/dbtflow/reports/``, with a "dbt run times" entry in the UI's navigation.

Each dbt DAG's documentation links to its report (``/dbtflow/reports/<dag_id>/``).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from dbtflow.monitoring.report import reports_folder

REPORTS_URL = "/dbtflow/reports"


def reports_app() -> FastAPI:
    """A FastAPI app serving the reports folder (created when missing)."""
    folder = reports_folder()
    folder.mkdir(parents=True, exist_ok=True)
    app = FastAPI(title="dbtflow reports")
    app.mount("/", StaticFiles(directory=folder, html=True), name="reports")
    return app


class DbtflowPlugin(AirflowPlugin):
    name = "dbtflow"
    fastapi_apps = [{"app": reports_app(), "url_prefix": REPORTS_URL, "name": "dbtflow run-time reports"}]
    external_views = [
        {
            "name": "dbt run times",
            "href": f"{REPORTS_URL}/all/index.html",
            "destination": "nav",
            "url_route": "dbtflow-reports",
        }
    ]
