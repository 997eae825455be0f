"""The ``manifest.json`` of each DAG's last successful run, kept for slim CI's deferral.

Slim CI (``dbtflow run PROJECT --target ci --defer-to DAG_ID``) builds ``state:modified+`` only
and reads the unchanged parents from production, with dbt's own ``--state`` and ``--defer``: both
need the manifest that production last ran. dbtflow keeps it here, in the state database, when a
run of the DAG succeeds, so no artifact is copied by hand. One row per DAG, replaced only when the
manifest changed (a digest says so).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dbtflow.files import write_atomic
from dbtflow.project.cache import cache_entry
from dbtflow.project.config import DbtProject
from dbtflow.state.engine import Pooling, sql_engine

metadata = sa.MetaData()
dag_manifests = sa.Table(
    "dbtflow_dag_manifests",
    metadata,
    sa.Column("dag_id", sa.String(250), primary_key=True),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("saved_at", sa.Float, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("document", sa.LargeBinary, nullable=False),
)


class DagManifests:
    """The kept manifests in the state database at ``url`` (``DBTFLOW_STATE_URL`` by default)."""

    def __init__(self, url: str | None = None) -> None:
        from dbtflow.state.store import default_url

        self.url = url or default_url()
        self.engine = sql_engine(self.url, metadata, Pooling.PER_USE)

    def keep(self, dag_id: str, run_id: str, document: bytes) -> bool:
        """Keep ``document`` as the manifest of ``dag_id``'s last successful run (``run_id``);
        False when the same manifest was kept already (only the run id is updated)."""
        digest = hashlib.sha256(document).hexdigest()
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(dag_manifests.c.digest).where(dag_manifests.c.dag_id == dag_id)
            ).first()
            if row is not None and row.digest == digest:
                conn.execute(
                    dag_manifests.update()
                    .where(dag_manifests.c.dag_id == dag_id)
                    .values(run_id=run_id, saved_at=time.time())
                )
                return False
            conn.execute(dag_manifests.delete().where(dag_manifests.c.dag_id == dag_id))
            conn.execute(
                dag_manifests.insert().values(
                    dag_id=dag_id, run_id=run_id, saved_at=time.time(), digest=digest, document=document
                )
            )
        return True

    def kept(self, dag_id: str) -> tuple[str, str, bytes] | None:
        """``(run_id, digest, manifest.json bytes)`` of ``dag_id``'s last successful run, if kept."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(dag_manifests).where(dag_manifests.c.dag_id == dag_id)).first()
        return None if row is None else (row.run_id, row.digest, bytes(row.document))

    def write_state_dir(self, dag_id: str, folder: Path) -> tuple[str, str] | None:
        """Write the kept manifest as ``folder/manifest.json`` (a dbt ``--state`` folder); return
        ``(run_id, digest)``, or ``None`` when ``dag_id`` has none."""
        found = self.kept(dag_id)
        if found is None:
            return None
        run_id, digest, document = found
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "manifest.json", document)
        return run_id, digest


def keep_project_manifest(project: DbtProject, dag_id: str, run_id: str, url: str | None, log: Any) -> None:
    """Keep the project's parsed ``manifest.json`` as that of ``dag_id``'s last successful run
    (``run_id``); a failure to keep it is logged and never fails the run."""
    try:
        document = (project.manifest_path or cache_entry(project).manifest_json).read_bytes()
        DagManifests(url).keep(dag_id, run_id, document)
    except Exception as exc:
        log.warning("Could not keep the run's manifest for slim CI's deferral: %s", exc)
