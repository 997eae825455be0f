"""``/dbtflow/reports/``: the run-time report, live from the history, behind Airflow's auth.

- ``/reports/``: the dbt DAGs the caller may read, each with its last run's state and time;
- ``/reports/<dag_id>/`` (also ``index.html``, the address older DAG docs link to), with
  ``?run_id=`` for another run than the newest; its plots at ``/reports/<dag_id>/<plot>.png``
  (each drawn on its first request, so the page does not wait for them); each node's row is
  ``#<unique_id>``, where its task's documentation links (``dbtflow.airflow.docs_operator``);
- before any run, a 200 page that says so and how to start one.

Pages and plots are rendered from the history on request and cached until a newer result lands
(``dbtflow.monitoring.live_report``). Nothing is read from disk by a name from the URL.
"""

from __future__ import annotations

import html
import re
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import HTMLResponse

from dbtflow.airflow.web.auth import MAY_READ_DAG, User, readable_dag_ids
from dbtflow.airflow.web.dag_tasks import dag_tasks
from dbtflow.airflow.web.pages import grid_url, page
from dbtflow.monitoring.live_report import LiveReports, UnknownRun
from dbtflow.monitoring.report import IMAGES, RenderedReport

#: Airflow's DAG id characters; "." and ".." are not DAG ids.
DAG_ID = re.compile(r"^(?!\.{1,2}$)[\w.-]{1,250}$")
NO_RUN_YET = """<p>No run of {what} yet: dbtflow draws this report from the run-time history that
every dbt task records.</p><p>Start one with <code>dbtflow run PROJECT_DIR</code> (or
<code>dbtflow demo</code>), or trigger a dbt DAG in Airflow; then reload this page.</p>"""

router = APIRouter(prefix="/reports")
live = LiveReports()


def _checked(dag_id: str) -> str:
    if not DAG_ID.match(dag_id):
        raise HTTPException(status_code=404, detail="Not Found")
    return dag_id


@router.get("/", response_class=HTMLResponse)
def reports_index(user: User) -> str:
    readable = readable_dag_ids(user)
    dags = [d for d in live.dags() if d.dag_id in readable]
    if not dags:
        return page("dbt run times", NO_RUN_YET.format(what="a dbt DAG you may read"))
    rows = "".join(
        f'<tr><td><a href="{quote(d.dag_id)}/">{html.escape(d.dag_id)}</a></td>'
        f'<td class="{d.last_run.state}">{d.last_run.state}</td>'
        f"<td>{html.escape(d.last_run.run_id)}</td><td>{_when(d.last_run.started_at)}</td>"
        f"<td>{d.last_run.nodes}</td><td>{d.runs}</td></tr>"
        for d in dags
    )
    table = (
        "<table><tr><th>DAG</th><th>last run</th><th>run id</th><th>started</th><th>nodes</th>"
        f"<th>runs</th></tr>{rows}</table>"
    )
    return page("dbt run times", table)


def _when(epoch: float) -> str:
    from datetime import UTC, datetime

    return f"{datetime.fromtimestamp(epoch, UTC):%Y-%m-%d %H:%M:%S} UTC"


def _report(dag_id: str, run_id: str | None) -> RenderedReport | None:
    suffix = f"?run_id={quote(run_id, safe='')}" if run_id else ""
    tasks = None

    def parents() -> dict[str, list[str]]:
        nonlocal tasks
        tasks = tasks or dag_tasks(dag_id)
        return tasks.parents

    def task_url(dag: str, run: str, uid: str) -> str | None:
        task_id = tasks.task_of.get(uid) if tasks else None
        return grid_url(dag, run, task_id) if task_id else grid_url(dag, run)

    try:
        return live.report(
            dag_id,
            run_id,
            parents=parents,
            task_url=task_url,
            run_url=lambda run: f"./?run_id={quote(run, safe='')}",
            image_url=lambda name: f"{name}{suffix}",
        )
    except UnknownRun as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None


@router.get("/{dag_id}/", response_class=HTMLResponse, dependencies=[MAY_READ_DAG])
@router.get("/{dag_id}/index.html", response_class=HTMLResponse, dependencies=[MAY_READ_DAG])
def dag_report(dag_id: str, run_id: str | None = Query(default=None)) -> str:
    report = _report(_checked(dag_id), run_id)
    if report is None:
        return page(f"dbt run times: {dag_id}", NO_RUN_YET.format(what=html.escape(dag_id)))
    return report.page


@router.get("/{dag_id}/{image}", dependencies=[MAY_READ_DAG])
def dag_report_image(dag_id: str, image: str, run_id: str | None = Query(default=None)) -> Response:
    if image not in IMAGES:
        raise HTTPException(status_code=404, detail="Not Found")
    report = _report(_checked(dag_id), run_id)
    if report is None:
        raise HTTPException(status_code=404, detail=f"no run of {dag_id} yet")
    return Response(content=report.images[image], media_type="image/png")
