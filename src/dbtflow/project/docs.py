"""``dbtflow docs``: a project's dbt docs (the lineage graph, column descriptions), generated with
``dbt docs generate`` and kept under ``$DBTFLOW_HOME/docs/<project name>/``, where dbtflow's
Airflow plugin serves them (``/dbtflow/docs/<project name>/``).

dbt is given dbtflow's cached parse of the project (so it does not parse again) and its own
temporary target folder; only the three files the docs site needs are kept: ``index.html``,
``manifest.json`` and ``catalog.json``. They describe the project and the warehouse's columns and
never the profile: the target's credentials stay in the process environment while dbt runs
(``dbtflow.project.invoke``). The destination may be any path-like object with ``/``, ``mkdir``
and ``write_bytes``: an Airflow ``ObjectStoragePath`` such as ``s3://bucket/docs`` on a deployment
(``dbtflow docs --target-path``, ``dbt_dag(docs=...)``), which the plugin does not serve.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from dbtflow.errors import DbtflowError
from dbtflow.files import write_atomic
from dbtflow.project.config import DbtProject
from dbtflow.project.invoke import run_dbt, tmp_root
from dbtflow.project.manifest import load_manifest
from dbtflow.settings import dbtflow_home

DOCS_FILES = ("index.html", "manifest.json", "catalog.json")
#: dbt project names are identifiers: a served folder name is never a path.
PROJECT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def docs_folder() -> Path:
    """Where the docs of every project live (and where the plugin serves them from)."""
    return dbtflow_home() / "docs"


def documented_projects(folder: Path | None = None) -> list[str]:
    """The projects whose docs were generated, by name."""
    root = folder or docs_folder()
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if PROJECT_NAME.match(p.name) and (p / "index.html").is_file()
    )


def generate_docs(project: DbtProject, out: Any = None) -> Any:
    """Run ``dbt docs generate`` for the project and keep its site in ``out`` (default
    ``$DBTFLOW_HOME/docs/<project name>``); return that destination."""
    name = project.name
    if not PROJECT_NAME.match(name):
        raise DbtflowError(f"The dbt project name {name!r} is not a dbt identifier.", "rename the project.")
    destination = out if out is not None else docs_folder() / name
    manifest = load_manifest(project)
    with tempfile.TemporaryDirectory(prefix="dbtflow-docs-", dir=tmp_root()) as work:
        target = Path(work) / "target"
        run = run_dbt(project, ["docs", "generate"], manifest=manifest, target_dir=target, write_json=True)
        missing = [f for f in DOCS_FILES if not (target / f).is_file()]
        if not run.success or missing:
            raise DbtflowError(
                f"dbt docs generate failed for {name}: {run.error or 'no ' + ', '.join(missing)}.",
                "run `dbt docs generate` in the project to see dbt's message.",
            )
        if isinstance(destination, Path):
            # The plugin may serve the folder meanwhile: a reader sees the old file or the new one.
            for file in DOCS_FILES:
                write_atomic(destination / file, (target / file).read_bytes())
            return destination
        destination.mkdir(parents=True, exist_ok=True)  # a local file:// path needs its folder
        for file in DOCS_FILES:
            (destination / file).write_bytes((target / file).read_bytes())
    return destination
