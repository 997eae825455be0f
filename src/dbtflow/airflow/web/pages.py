"""The HTML shell of dbtflow's index pages, and the links into Airflow's own UI."""

from __future__ import annotations

import html
from urllib.parse import quote, urlparse

STYLE = """body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 10px;text-align:left}.failed{color:#D32F2F}
.success{color:#2E7D32}code{background:#f4f4f4;padding:1px 4px}"""


def page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def ui_root() -> str:
    """The path the Airflow UI is served under (``[api] base_url``'s path; ``""`` at the root)."""
    from airflow.configuration import conf

    return urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def grid_url(dag_id: str, run_id: str, task_id: str | None = None) -> str:
    """A DAG run (or one of its tasks) in the Airflow UI's grid."""
    url = f"{ui_root()}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    return f"{url}/tasks/{quote(task_id, safe='')}" if task_id else url
