"""Which nodes a state-aware run may leave out: unchanged code, nothing rebuilt upstream, no newer data.

A state-aware run (``dbt_dag(state_aware=True)``, ``dbtflow run --state-aware``) skips a model,
seed or snapshot when all of these hold, and builds it otherwise:

- its code and configuration are those of its last successful build by this DAG (the
  ``fingerprint``: the manifest's checksum of its file, its config, its relation and the SQL of
  the macros it calls);
- none of its upstream nodes is rebuilt in this run, nor was rebuilt (by any task dbtflow ran)
  after that build;
- each source it reads has no newer data than at that build: ``max(loaded_at_field)`` as dbt's
  ``dbt source freshness`` measures it, recorded with every build.

Freshness that cannot be known means building (the safe default): a source without a
``loaded_at_field`` and a freshness rule (dbt measures only those), a source whose measurement
failed, an upstream node that no dbtflow run has built, a node built before its sources were
recorded. A model that reads a table outside dbt without declaring it as a source cannot be seen
at all: declare it as a source with a ``loaded_at_field``, or keep such models out of state-aware
DAGs.

A test runs only with its model: it is skipped when every node it tests is skipped.

The comparison of code is hand-written rather than dbt's ``state:modified`` selector: each node is
compared with its own last build, which may come from a different run (and manifest) than its
neighbours' builds, while ``--state`` compares the whole project with one manifest.

No Airflow and no storage here: the caller reads the last builds and measures the sources.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dbtflow.project.graph import DbtGraph


@dataclass(frozen=True)
class LastBuild:
    """A node's last successful build by a DAG, as the state-aware record keeps it."""

    unique_id: str
    run_id: str
    #: When dbt started building it (epoch seconds).
    built_at: float
    fingerprint: str
    #: Each source it reads directly -> that source's ``max(loaded_at_field)`` before the build
    #: (ISO time), ``None`` when it could not be measured.
    sources: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class StateAwarePlan:
    """What a state-aware run builds and leaves out, each with its reason."""

    #: Node -> why it is left out (tests too).
    skipped: dict[str, str]
    #: Model, seed or snapshot -> why it is built.
    built: dict[str, str]
    #: The code fingerprint of each buildable node, to record with its build.
    fingerprints: Mapping[str, str]
    #: Source -> its ``max(loaded_at_field)`` now (``None``: could not be measured).
    watermarks: Mapping[str, str | None]

    def sources_of(self, graph: DbtGraph, unique_id: str) -> dict[str, str | None]:
        """The watermarks of the sources ``unique_id`` reads directly (to record with its build)."""
        return {uid: self.watermarks.get(uid) for uid in graph.direct_sources(unique_id)}


def fingerprints(manifest: Mapping[str, Any], unique_ids: Collection[str]) -> dict[str, str]:
    """The code fingerprint of each node of ``manifest.json`` among ``unique_ids``."""
    macros = manifest.get("macros") or {}
    found: dict[str, str] = {}
    for uid in unique_ids:
        raw = (manifest.get("nodes") or {}).get(uid)
        if raw is None:
            continue
        used = sorted((raw.get("depends_on") or {}).get("macros") or ())
        facts = {
            "checksum": (raw.get("checksum") or {}).get("checksum"),
            "config": raw.get("config"),
            "relation": raw.get("relation_name"),
            "macros": {name: _sha((macros.get(name) or {}).get("macro_sql") or "") for name in used},
        }
        found[uid] = _sha(json.dumps(facts, sort_keys=True, default=str))
    return found


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def measured_sources(graph: DbtGraph, nodes: Collection[str]) -> list[str]:
    """The sources that the buildable ``nodes`` read directly and dbt can measure."""
    read = {src for uid in nodes if graph.nodes[uid].is_buildable for src in graph.direct_sources(uid)}
    return sorted(uid for uid in read if graph.sources[uid].has_freshness)


def plan_state_aware(
    graph: DbtGraph,
    nodes: Sequence[str],
    fingerprints: Mapping[str, str],
    last_builds: Mapping[str, LastBuild],
    watermarks: Mapping[str, str | None],
    latest_builds: Mapping[str, float],
    rebuilt: Collection[str] | None = None,
) -> StateAwarePlan:
    """Decide for each of the run's ``nodes`` (models, seeds, snapshots and their tests).

    ``last_builds``: each node's last successful build by this DAG. ``watermarks``: each source's
    ``max(loaded_at_field)`` now. ``latest_builds``: when each node was last built successfully by
    any task dbtflow ran (epoch seconds), to see an upstream node rebuilt since.

    ``rebuilt``: for a task that decides for its own nodes only (per_model with one dbt invocation
    per task), the nodes other tasks of this run have built already. Then a test whose tested
    nodes are all outside ``nodes`` runs only when one of them is in ``rebuilt``; without it (one
    decision for the whole run) a test runs unless every node it tests is left out here.
    """
    done = frozenset(rebuilt or ())
    buildable = [uid for uid in _upstream_first(graph, nodes) if graph.nodes[uid].is_buildable]
    skipped: dict[str, str] = {}
    built: dict[str, str] = {}
    for uid in buildable:
        why = _why_build(graph, uid, built, done, fingerprints, last_builds, watermarks, latest_builds)
        if why is None:
            skipped[uid] = f"unchanged since run {last_builds[uid].run_id}; sources not newer"
        else:
            built[uid] = why
    here = frozenset(nodes)

    def not_rebuilt(parent: str) -> bool:
        if parent in skipped:
            return True
        return rebuilt is not None and parent not in here and parent not in done

    for uid in nodes:
        node = graph.nodes[uid]
        if node.is_buildable or node.resource_type not in ("test", "unit_test"):
            continue
        tested = graph.build_parents(uid)
        if tested and not graph.direct_sources(uid) and all(not_rebuilt(parent) for parent in tested):
            skipped[uid] = f"not run: {', '.join(graph.nodes[p].name for p in tested)} not rebuilt"
    return StateAwarePlan(skipped, built, dict(fingerprints), dict(watermarks))


def _why_build(
    graph: DbtGraph,
    uid: str,
    built: Mapping[str, str],
    rebuilt: Collection[str],
    fingerprints: Mapping[str, str],
    last_builds: Mapping[str, LastBuild],
    watermarks: Mapping[str, str | None],
    latest_builds: Mapping[str, float],
) -> str | None:
    """Why ``uid`` must be built, or ``None`` when it may be skipped."""
    last = last_builds.get(uid)
    if last is None:
        return "never built by this DAG"
    if fingerprints.get(uid) is None or fingerprints[uid] != last.fingerprint:
        return f"code or config changed since run {last.run_id}"
    for parent in graph.build_parents(uid):
        name = graph.nodes[parent].name
        if parent in built:
            return f"upstream {name} is rebuilt"
        if parent in rebuilt:
            return f"upstream {name} was rebuilt in this run"
        parent_built = latest_builds.get(parent)
        if parent_built is None:
            return f"upstream {name} has no successful build on record"
        if parent_built > last.built_at:
            return f"upstream {name} was rebuilt after run {last.run_id}"
    for source in graph.direct_sources(uid):
        rule = graph.sources[source]
        label = f"{rule.source_name}.{rule.name}"
        if not rule.has_freshness:
            return f"source {label} has no loaded_at_field and freshness rule: its freshness is unknown"
        now, then = watermarks.get(source), last.sources.get(source)
        if now is None or then is None:
            return f"the load time of source {label} is unknown"
        if _instant(now) > _instant(then):
            return f"source {label} has newer data ({now} > {then})"
    return None


def _instant(iso: str) -> datetime:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _upstream_first(graph: DbtGraph, nodes: Sequence[str]) -> list[str]:
    """``nodes`` ordered so that every node comes after its upstream nodes among them."""
    wanted = set(nodes)
    order: list[str] = []
    placed: set[str] = set()
    for start in sorted(wanted):
        stack: list[tuple[str, bool]] = [(start, False)]
        while stack:
            uid, expanded = stack.pop()
            if uid in placed:
                continue
            if expanded:
                placed.add(uid)
                order.append(uid)
                continue
            stack.append((uid, True))
            stack.extend((p, False) for p in graph.build_parents(uid) if p in wanted and p not in placed)
    return order
