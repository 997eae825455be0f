"""``/dbtflow/docs/``: each project's dbt docs (``dbtflow docs``), behind Airflow's auth.

``/docs/`` lists the projects; ``/docs/<project>/`` is dbt's docs site, which loads
``manifest.json`` and ``catalog.json`` from beside it. Only those three files are served, from
``$DBTFLOW_HOME/docs/<project>/``, and only for a project name that is a dbt identifier: no name
from the URL becomes a path of its own.
"""

from __future__ import annotations

import html

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from dbtflow.airflow.web.auth import MAY_READ_DAGS
from dbtflow.airflow.web.pages import page
from dbtflow.project.docs import DOCS_FILES, PROJECT_NAME, docs_folder, documented_projects

router = APIRouter(prefix="/docs", dependencies=[MAY_READ_DAGS])
MEDIA_TYPES = {
    "index.html": "text/html",
    "manifest.json": "application/json",
    "catalog.json": "application/json",
}


@router.get("/", response_class=HTMLResponse)
def docs_index() -> str:
    projects = documented_projects()
    if not projects:
        return page(
            "dbt docs",
            "<p>No project's docs yet. Generate them with <code>dbtflow docs PROJECT_DIR</code> "
            "(or <code>dbt_dag(..., docs=True)</code>), then reload this page.</p>",
        )
    items = "".join(f'<li><a href="{p}/">{html.escape(p)}</a></li>' for p in projects)
    return page("dbt docs", f"<ul>{items}</ul>")


@router.get("/{project}/")
@router.get("/{project}/{file}")
def docs_file(project: str, file: str = "index.html") -> FileResponse:
    if not PROJECT_NAME.match(project) or file not in DOCS_FILES:
        raise HTTPException(status_code=404, detail="Not Found")
    path = docs_folder() / project / file
    if not path.is_file():
        raise HTTPException(status_code=404, detail=f"no dbt docs of {project}: run `dbtflow docs`")
    return FileResponse(path, media_type=MEDIA_TYPES[file])
