"""``dbt_dag(..., docs=True)``: a last task that refreshes the project's dbt docs after each
successful run, and each node task's links to its page in the docs and its row in the report.

Why a task of its own, after the dbt tasks: the docs' catalog (each relation's columns) is read
from the warehouse, so it is right only once the run has built the models; ``dbt docs generate``
queries the catalog of every relation (seconds on a big project), which no node task should wait
for; and its failure must not fail a model. It runs on a worker from dbtflow's cached parse
(``dbtflow.project.docs``) when no dbt task failed (trigger rule ``none_failed``: a state-aware
run whose tasks skipped unchanged models refreshes the docs too), after the DAG's last dbt tasks.

Where: ``$DBTFLOW_HOME/docs/<project>/``, which the plugin serves at ``/dbtflow/docs/<project>/``,
or the folder an Airflow ``ObjectStoragePath`` names (``s3://bucket/docs/shop`` with a
``conn_id``, ``file:///srv/docs/shop``), which gets ``index.html``, ``manifest.json`` and
``catalog.json`` and is not served by the plugin.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from airflow.sdk import BaseOperator, ObjectStoragePath

from dbtflow.errors import DbtflowError
from dbtflow.project.config import DbtProject
from dbtflow.project.docs import generate_docs

#: What ``docs=`` takes: ``True`` (the served folder), a folder's URL or an ``ObjectStoragePath``.
DocsTarget = bool | str | ObjectStoragePath
DOCS_TASK_ID = "dbt_docs"
DOCS_URL = "/dbtflow/docs"
REPORTS_URL = "/dbtflow/reports"


class DbtDocsOperator(BaseOperator):
    """Run ``dbt docs generate`` and keep the site in ``target`` (default the served folder)."""

    ui_color = "#6FA8DC"

    def __init__(
        self, *, project: DbtProject, target: ObjectStoragePath | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("trigger_rule", "none_failed")
        super().__init__(**kwargs)
        self.project = project
        self.target = target

    def execute(self, context: Any) -> str:
        where = str(generate_docs(self.project, self.target))
        served = "" if self.target else f", served at {DOCS_URL}/{self.project.name}/"
        self.log.info("dbt docs of %s refreshed: %s%s", self.project.name, where, served)
        return where


def docs_target(docs: DocsTarget) -> ObjectStoragePath | None:
    """The folder ``docs=`` names (``None``: the served one)."""
    if isinstance(docs, ObjectStoragePath):
        return docs
    if isinstance(docs, str):
        return ObjectStoragePath(docs)
    return None


def docs_storage(url: str, conn_id: str | None = None) -> ObjectStoragePath:
    """The folder at ``url`` (``dbtflow docs --target-path``), its filesystem checked before dbt
    runs: an unknown scheme or a missing provider package is one line, not a traceback."""
    try:
        path = ObjectStoragePath(url, conn_id=conn_id)
        path.fs  # noqa: B018 - attaches the filesystem (and reads the connection)
    except (ImportError, ValueError) as exc:
        raise DbtflowError(
            f"Cannot write dbt docs to {url}: {exc}.",
            "install the Airflow provider of that storage (apache-airflow-providers-amazon for s3://), "
            "or pass a local path or file:// URL.",
        ) from None
    return path


def add_docs_task(
    project: DbtProject | None, dbt_tasks: Iterable[BaseOperator], docs: DocsTarget
) -> DbtDocsOperator:
    """The docs task after the last of ``dbt_tasks`` (in the DAG or task group being defined)."""
    if project is None:
        raise DbtflowError(
            "docs=True needs the dbt project to document.", "pass the DbtProject, or leave docs off."
        )
    tasks = list(dbt_tasks)
    ids = {t.node_id for t in tasks}
    task = DbtDocsOperator(task_id=DOCS_TASK_ID, project=project, target=docs_target(docs))
    for upstream in tasks:
        if not upstream.downstream_task_ids & ids:  # a last task: the others end before it
            # `upstream >> task` hashes the whole DAG per edge (see dbtflow.airflow.dag._link).
            upstream.downstream_task_ids.add(task.node_id)
            task.upstream_task_ids.add(upstream.node_id)
    return task


def node_doc_md(project_name: str, dag_id: str, unique_id: str) -> str:
    """A node task's documentation: links to the node's page in the project's dbt docs and to its
    row in the DAG's run-time report (the report has no row for a test)."""
    kind = unique_id.split(".", 1)[0]
    links = [f"[dbt docs]({DOCS_URL}/{project_name}/#!/{kind}/{unique_id})"]
    if kind != "test":
        links.append(f"[run times]({REPORTS_URL}/{dag_id}/#{unique_id})")
    return f"dbt {kind} `{unique_id}`: " + " · ".join(links)
