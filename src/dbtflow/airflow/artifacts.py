"""Where a task keeps its try's ``run_results.json`` for the next try: Airflow object storage.

A retry may run on another worker, so the document goes to an ``ObjectStoragePath``: by default
a folder under the dbtflow home (one machine, or a shared volume), or any URL Airflow's object
storage understands (``s3://bucket/dbtflow``, ``gs://...``, with an Airflow connection id) given
as ``artifacts_url`` or ``DBTFLOW_ARTIFACTS_URL``. XCom cannot carry it: Airflow clears a task's
XComs when its next try starts.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from airflow.sdk import ObjectStoragePath

from dbtflow.project.config import dbtflow_home

ARTIFACTS_URL_ENV = "DBTFLOW_ARTIFACTS_URL"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=\-]")


def artifacts_root(url: str | None = None, conn_id: str | None = None) -> ObjectStoragePath:
    """The storage root: ``url``, else ``$DBTFLOW_ARTIFACTS_URL``, else the dbtflow home's folder."""
    url = url or os.environ.get(ARTIFACTS_URL_ENV) or (dbtflow_home() / "artifacts").as_uri()
    return ObjectStoragePath(url, conn_id=conn_id)


class TryArtifacts:
    """The ``run_results.json`` of each try of one task instance."""

    def __init__(self, root: ObjectStoragePath, dag_id: str, run_id: str, task_id: str, map_index: int = -1):
        parts = [dag_id, run_id, task_id] + ([str(map_index)] if map_index >= 0 else [])
        self.folder = root.joinpath(*(_UNSAFE.sub("_", p) for p in parts))

    def _file(self, try_number: int) -> ObjectStoragePath:
        return self.folder / f"try_{try_number}" / "run_results.json"

    def save(self, try_number: int, document: dict[str, Any]) -> ObjectStoragePath:
        path = self._file(try_number)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document))
        return path

    def latest_before(self, try_number: int) -> tuple[int, dict[str, Any]] | None:
        """The newest document kept by an earlier try, with its try number."""
        for earlier in range(try_number - 1, 0, -1):
            path = self._file(earlier)
            if path.exists():
                loaded = json.loads(path.read_text())
                if isinstance(loaded, dict):
                    return earlier, loaded
        return None
