"""Where a build task keeps each try's ``run_results.json`` for its next try's ``dbt retry``.

A retry may run on another worker, and XCom cannot carry the document (Airflow clears a task's
XComs when its next try starts). By default it goes to dbtflow's state database
(``DBTFLOW_STATE_URL``), which a deployment of several workers shares already for streaming, so
no other storage has to be set up. ``artifacts_url`` or ``DBTFLOW_ARTIFACTS_URL`` (any URL of
Airflow's object storage: ``s3://bucket/dbtflow``, ``gs://...``, with a connection id) keep the
documents there instead, beside the rest of a team's dbt artifacts.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

from airflow.sdk import ObjectStoragePath

from dbtflow import settings
from dbtflow.state.store import StateStore
from dbtflow.state.task_try import TaskTry

ARTIFACTS_URL_ENV = settings.ARTIFACTS_URL
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=\-]")


class TryArtifacts(Protocol):
    """The ``run_results.json`` of each try of one task instance."""

    #: Where the documents are, for the task log.
    where: str

    def save(self, document: dict[str, Any]) -> None:
        """Keep this try's document."""

    def latest_before(self) -> tuple[int, dict[str, Any]] | None:
        """The newest document an earlier try kept, with its try number."""


class StoredTryArtifacts:
    """Documents in dbtflow's state database."""

    def __init__(self, store: StateStore, task: TaskTry) -> None:
        self.store, self.task = store, task
        self.where = f"the state database ({store.engine.url.render_as_string(hide_password=True)})"

    def save(self, document: dict[str, Any]) -> None:
        self.store.save_try_artifact(self.task, document)

    def latest_before(self) -> tuple[int, dict[str, Any]] | None:
        return self.store.try_artifact_before(self.task)


class ObjectStorageTryArtifacts:
    """Documents under ``root/<dag>/<run>/<task>[/<map index>]/try_<n>/run_results.json``."""

    def __init__(self, root: ObjectStoragePath, task: TaskTry) -> None:
        parts = [task.dag_id, task.run_id, task.task_id]
        parts += [str(task.map_index)] if task.map_index >= 0 else []
        self.folder = root.joinpath(*(_UNSAFE.sub("_", p) for p in parts))
        self.try_number = task.try_number
        self.where = str(self.folder)

    def _file(self, try_number: int) -> ObjectStoragePath:
        return self.folder / f"try_{try_number}" / "run_results.json"

    def save(self, document: dict[str, Any]) -> None:
        path = self._file(self.try_number)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document))

    def latest_before(self) -> tuple[int, dict[str, Any]] | None:
        for earlier in range(self.try_number - 1, 0, -1):
            path = self._file(earlier)
            if path.exists():
                loaded = json.loads(path.read_text())
                if isinstance(loaded, dict):
                    return earlier, loaded
        return None


def try_artifacts(
    task: TaskTry, store: StateStore, url: str | None = None, conn_id: str | None = None
) -> TryArtifacts:
    """Object storage at ``url`` (or ``$DBTFLOW_ARTIFACTS_URL``) when given, else the state database."""
    url = url or settings.artifacts_url()
    if url:
        return ObjectStorageTryArtifacts(ObjectStoragePath(url, conn_id=conn_id), task)
    return StoredTryArtifacts(store, task)
