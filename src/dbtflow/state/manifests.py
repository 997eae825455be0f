"""The ``manifest.json`` of each DAG's last successful run, kept for slim CI's deferral.

Slim CI (``dbtflow run PROJECT --target ci --defer-to DAG_ID``) builds ``state:modified+`` only
and reads the unchanged parents from production, with dbt's own ``--state`` and ``--defer``: both
need the manifest that production last ran. dbtflow keeps it here, in the state database, when a
run of the DAG succeeds, so no artifact is copied by hand. One row per DAG, replaced only when the
manifest changed (a digest says so).

``defer_project`` turns a project into its slim CI form (``dbt_dag(defer_to=...)`` and
``dbtflow run --defer-to``): the kept manifest written as a ``--state`` folder on this machine
(fetched again only when its digest changed), and that digest in the project's vars
(``dbtflow_deferred_to``), which key dbtflow's parse cache, so a cached ``state:modified+``
selection never outlives the production manifest it was made against.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dbtflow.errors import DbtflowError
from dbtflow.files import write_atomic
from dbtflow.project.cache import cache_entry
from dbtflow.project.config import DbtProject
from dbtflow.settings import dbtflow_home
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

    def kept_digest(self, dag_id: str) -> tuple[str, str] | None:
        """``(run_id, digest)`` of ``dag_id``'s kept manifest, without the document."""
        query = sa.select(dag_manifests.c.run_id, dag_manifests.c.digest).where(
            dag_manifests.c.dag_id == dag_id
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (row.run_id, row.digest)

    def write_state_dir(self, dag_id: str, folder: Path) -> tuple[str, str] | None:
        """Write the kept manifest as ``folder/manifest.json`` (a dbt ``--state`` folder), unless
        the folder holds it already; return ``(run_id, digest)``, or ``None`` when ``dag_id`` has
        none."""
        known = self.kept_digest(dag_id)
        if known is None:
            return None
        digest_file = folder / "manifest.sha256"
        if (folder / "manifest.json").is_file() and _read(digest_file) == known[1]:
            return known
        found = self.kept(dag_id)
        if found is None:
            return None
        run_id, digest, document = found
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "manifest.json", document)
        write_atomic(digest_file, digest.encode())
        return run_id, digest


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


#: The selection of a slim CI run when none is given.
MODIFIED_AND_DOWNSTREAM = ("state:modified+",)


def nothing_modified(defer_to: str, production_run: str, selection: str) -> str:
    """The line a slim CI run ends with when its selection matches no node."""
    return (
        f"Nothing modified since {defer_to}'s run {production_run}: the slim CI selection "
        f"({selection}) matches no node, so nothing was built."
    )


@dataclass(frozen=True)
class Deferral:
    """A slim CI project: where its ``--state`` manifest is, and which production run it is."""

    project: DbtProject
    #: The production DAG deferred to, and the run whose manifest it is.
    defer_to: str
    run_id: str


def defer_project(project: DbtProject, defer_to: str, url: str | None = None) -> Deferral:
    """``project`` deferring to ``defer_to``'s last successful run: its kept manifest as the
    ``--state`` folder (``DbtProject.defer_state``) and its digest in the vars."""
    folder = dbtflow_home() / "defer" / defer_to
    found = DagManifests(url).write_state_dir(defer_to, folder)
    if found is None:
        raise DbtflowError(
            f"The DAG {defer_to} has no successful run whose manifest dbtflow kept.",
            f"run production once with dbtflow (`dbtflow run PROJECT --dag-id {defer_to}`, or its DAG "
            "under Airflow with the same DBTFLOW_STATE_URL), then retry.",
        )
    run_id, digest = found
    deferred = replace(project, defer_state=folder, vars={**project.vars, "dbtflow_deferred_to": digest[:16]})
    return Deferral(project=deferred, defer_to=defer_to, run_id=run_id)


def keep_project_manifest(project: DbtProject, dag_id: str, run_id: str, url: str | None, log: Any) -> None:
    """Keep the project's parsed ``manifest.json`` as that of ``dag_id``'s last successful run
    (``run_id``); a failure to keep it is logged and never fails the run."""
    try:
        document = (project.manifest_path or cache_entry(project).manifest_json).read_bytes()
        DagManifests(url).keep(dag_id, run_id, document)
    except Exception as exc:
        log.warning("Could not keep the run's manifest for slim CI's deferral: %s", exc)
