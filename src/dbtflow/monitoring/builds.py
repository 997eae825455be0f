"""The state-aware record: each node's last successful build by each DAG, and a run's preparation.

A state-aware run (see ``dbtflow.project.state_aware`` for the rules) compares each node with its
last successful build by the same DAG: the code fingerprint it was built from, when, and how new
its sources' data were. ``BuildRecords`` keeps one row per DAG and node in the run-time history's
database (``DBTFLOW_HISTORY_URL``), which is never pruned, and reads there when each node was last
built by any DAG (the history's node runs).

``prepare_state_aware`` decides a run: it reads the fingerprints from the cached
``manifest.json``, measures the sources with ``dbt source freshness``, and returns the plan;
``record_unchanged`` writes a result ``unchanged`` for each left-out node into the state store
(its task ends ``skipped`` with the reason), and ``builds_recorder`` keeps what the run built.
No Airflow here: the producer task and the local runner both use it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from dbtflow.monitoring.history import default_url, node_runs
from dbtflow.project.cache import cache_entry
from dbtflow.project.config import DbtProject
from dbtflow.project.freshness import check_freshness
from dbtflow.project.graph import DbtGraph, load_manifest_file
from dbtflow.project.results import NodeResult
from dbtflow.project.state_aware import (
    LastBuild,
    StateAwarePlan,
    fingerprints,
    measured_sources,
    plan_state_aware,
)
from dbtflow.project.status import SUCCEEDED_STATUSES, UNCHANGED
from dbtflow.state.engine import Pooling, sql_engine
from dbtflow.state.invocations import InvocationState
from dbtflow.state.store import StateStore
from dbtflow.state.task_try import TaskTry

metadata = sa.MetaData()
node_builds = sa.Table(
    "dbtflow_node_builds",
    metadata,
    sa.Column("dag_id", sa.String(250), primary_key=True),
    sa.Column("unique_id", sa.String(500), primary_key=True),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("built_at", sa.Float, nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    #: JSON: source unique id -> its max(loaded_at_field) before the build (or null).
    sa.Column("sources", sa.Text, nullable=False),
)


class BuildRecords:
    """The state-aware record at ``url`` (the run-time history's database by default)."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine = sql_engine(self.url, metadata, Pooling.PER_USE)

    def last_builds(self, dag_id: str) -> dict[str, LastBuild]:
        """Each node's last successful build by ``dag_id``."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(node_builds).where(node_builds.c.dag_id == dag_id)).all()
        return {
            row.unique_id: LastBuild(
                unique_id=row.unique_id,
                run_id=row.run_id,
                built_at=row.built_at,
                fingerprint=row.fingerprint,
                sources=json.loads(row.sources),
            )
            for row in rows
        }

    def record(self, dag_id: str, builds: Sequence[LastBuild]) -> None:
        """Make ``builds`` the last builds of their nodes by ``dag_id``."""
        if not builds:
            return
        with self.engine.begin() as conn:
            conn.execute(
                node_builds.delete().where(
                    node_builds.c.dag_id == dag_id,
                    node_builds.c.unique_id.in_([b.unique_id for b in builds]),
                )
            )
            conn.execute(
                node_builds.insert(),
                [
                    {
                        "dag_id": dag_id,
                        "unique_id": b.unique_id,
                        "run_id": b.run_id,
                        "built_at": b.built_at,
                        "fingerprint": b.fingerprint,
                        "sources": json.dumps(dict(b.sources)),
                    }
                    for b in builds
                ],
            )

    def latest_builds(self) -> dict[str, float]:
        """When each node last started a successful build, by any DAG (the history's node runs)."""
        history = sql_engine(self.url, node_runs.metadata, Pooling.PER_USE)
        query = (
            sa.select(node_runs.c.unique_id, sa.func.max(node_runs.c.started_at))
            .where(node_runs.c.status.in_(sorted(SUCCEEDED_STATUSES)))
            .group_by(node_runs.c.unique_id)
        )
        with history.connect() as conn:
            return {str(row[0]): float(row[1]) for row in conn.execute(query).all()}


def prepare_state_aware(
    project: DbtProject,
    graph: DbtGraph,
    dag_id: str,
    nodes: Sequence[str],
    log: Any,
    *,
    full_refresh: bool = False,
    rebuilt: Collection[str] | None = None,
    why_all: str = "full refresh",
) -> StateAwarePlan:
    """Decide which of ``nodes`` this run of ``dag_id`` builds and which it leaves out;
    ``full_refresh`` builds them all (and their builds are recorded as any other). ``rebuilt``:
    a task deciding for its own nodes only passes what the run built already (``rebuilt_in_run``);
    ``why_all``: the reason logged for each node that ``full_refresh`` builds."""
    buildable = [uid for uid in nodes if graph.nodes[uid].is_buildable]
    manifest = _manifest_document(project)
    codes = fingerprints(manifest, buildable) if manifest is not None else {}
    sources = measured_sources(graph, buildable)
    watermarks: dict[str, str | None] = dict.fromkeys(sources)
    if sources:
        try:
            for measured in check_freshness(project, sources, graph):
                watermarks[measured.unique_id] = measured.max_loaded_at
        except Exception as exc:  # unknown freshness: their readers are built
            log.warning("Could not measure the sources' load times (%s); their readers are built.", exc)
    records = BuildRecords()
    plan = plan_state_aware(
        graph, nodes, codes, records.last_builds(dag_id), watermarks, records.latest_builds(), rebuilt
    )
    if full_refresh:
        everything = dict.fromkeys(buildable, why_all)
        plan = StateAwarePlan(skipped={}, built=everything, fingerprints=codes, watermarks=watermarks)
    log.info(
        "State-aware run: %d node(s) to build, %d left out (unchanged, sources not newer).",
        len(plan.built),
        len(plan.skipped),
    )
    for uid, why in plan.built.items():
        log.info("Building %s: %s.", uid, why)
    return plan


def _manifest_document(project: DbtProject) -> dict[str, Any] | None:
    path = project.manifest_path or cache_entry(project).manifest_json
    try:
        return load_manifest_file(path)
    except Exception:
        return None


def rebuilt_in_run(store: StateStore, graph: DbtGraph, dag_id: str, run_id: str) -> set[str]:
    """The models, seeds and snapshots that this DAG run has built successfully so far."""
    return {
        stored.result.unique_id
        for stored in store.results_of_run(dag_id, run_id)
        if stored.result.status in SUCCEEDED_STATUSES
        and stored.result.unique_id in graph.nodes
        and graph.nodes[stored.result.unique_id].is_buildable
    }


def record_unchanged(store: StateStore, task: TaskTry, plan: StateAwarePlan, nodes: Collection[str]) -> None:
    """Record a result ``unchanged`` (with its reason) for each of ``nodes`` the plan leaves out, so
    their tasks end ``skipped`` saying why; under an invocation of ``task`` that claims them until
    each result is in. (Unclaimed, a streamed task whose node had no result yet saw its producer
    alive and nobody building it, and built it alone: the N=1000 run with nothing changed built
    its seed so. A node another live invocation holds is left to it.)"""
    left_out = [uid for uid in nodes if uid in plan.skipped]
    if not left_out:
        return
    invocation_id, claimed = store.start_invocation(task, left_out)
    for uid in claimed:
        result = NodeResult(unique_id=uid, status=UNCHANGED, message=plan.skipped[uid])
        store.record_result(invocation_id, task.dag_id, task.run_id, result, [plan.skipped[uid]])
    store.finish_invocation(invocation_id, InvocationState.SUCCESS)


def builds_recorder(
    task: TaskTry, graph: DbtGraph, plan: StateAwarePlan, log: Any
) -> Callable[[Sequence[NodeResult]], None]:
    """An ``on_results`` callback that keeps each successful build of the plan's nodes as their
    last build by ``task``'s DAG."""

    def record(results: Sequence[NodeResult]) -> None:
        now = time.time()
        builds = [
            LastBuild(
                unique_id=r.unique_id,
                run_id=task.run_id,
                built_at=_epoch(r.started_at) or now,
                fingerprint=plan.fingerprints[r.unique_id],
                sources=plan.sources_of(graph, r.unique_id),
            )
            for r in results
            if r.status in SUCCEEDED_STATUSES and r.unique_id in plan.fingerprints
        ]
        try:
            BuildRecords().record(task.dag_id, builds)
        except Exception as exc:  # the next run then builds these nodes again: safe
            log.warning("Could not record the state-aware builds: %s", exc)

    return record


def _epoch(iso: str | None) -> float | None:
    """dbt's ISO start time as epoch seconds (as the history keeps it)."""
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
