"""The dbt project as a typed, immutable graph, loaded from ``manifest.json`` (v12: dbt 1.10 and 1.11).

Only what dbtflow needs is kept: the nodes that run (models, seeds, snapshots, data tests and unit
tests), sources with their freshness settings, exposures, and the edges between them. Disabled nodes
are absent (dbt keeps them in the manifest's ``disabled`` section, which is not read). Ephemeral
models are kept in the graph, flagged, because dependencies pass through them.

Unit tests live in the manifest's own ``unit_tests`` section, not in ``nodes``; they are read as
nodes of resource type ``unit_test`` attached to the model they test, because ``dbt build`` runs
them before that model and skips the model (and everything after it) when one fails: every
pattern must run them where the model is built.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dbtflow.errors import DbtflowError

#: Resource types that become work in Airflow: each gets a task in the per_model pattern.
BUILDABLE_TYPES = frozenset({"model", "seed", "snapshot"})
#: Resource types that dbt runs (``dbt build`` runs these).
RUNNABLE_TYPES = BUILDABLE_TYPES | {"test", "unit_test"}
SUPPORTED_MANIFEST_VERSIONS = ("v12",)


@dataclass(frozen=True, slots=True)
class Node:
    """A model, seed, snapshot, data test or unit test."""

    unique_id: str
    name: str
    resource_type: str
    package_name: str
    fqn: tuple[str, ...]
    original_file_path: str
    materialized: str
    tags: tuple[str, ...]
    depends_on: tuple[str, ...]
    relation_name: str | None = None
    version: str | None = None
    #: For generic tests on one model: the model it is attached to. For unit tests: the tested model.
    attached_node: str | None = None
    #: For generic tests: the macro name (``unique``, ``relationships``...); ``None`` for singular tests.
    test_name: str | None = None

    @property
    def is_ephemeral(self) -> bool:
        return self.resource_type == "model" and self.materialized == "ephemeral"

    @property
    def is_buildable(self) -> bool:
        """True for nodes that get their own task: models (not ephemeral), seeds and snapshots."""
        return self.resource_type in BUILDABLE_TYPES and not self.is_ephemeral


@dataclass(frozen=True, slots=True)
class FreshnessRule:
    """A source's ``warn_after`` / ``error_after`` threshold."""

    count: int
    period: str

    @property
    def seconds(self) -> int:
        return self.count * {"minute": 60, "hour": 3600, "day": 86400}[self.period]


@dataclass(frozen=True, slots=True)
class Source:
    """A dbt source table and its freshness settings."""

    unique_id: str
    source_name: str
    name: str
    package_name: str
    relation_name: str | None
    loaded_at_field: str | None
    warn_after: FreshnessRule | None
    error_after: FreshnessRule | None
    tags: tuple[str, ...] = ()

    @property
    def has_freshness(self) -> bool:
        return (self.warn_after is not None or self.error_after is not None) and bool(self.loaded_at_field)


@dataclass(frozen=True, slots=True)
class Exposure:
    """A downstream consumer declared in the project (dashboard, application...)."""

    unique_id: str
    name: str
    exposure_type: str
    depends_on: tuple[str, ...]


@dataclass(frozen=True)
class DbtGraph:
    """Nodes, sources and exposures of one parsed project, with parent and child lookups."""

    project_name: str
    dbt_version: str
    nodes: Mapping[str, Node]
    sources: Mapping[str, Source]
    exposures: Mapping[str, Exposure]
    _children: Mapping[str, tuple[str, ...]] = field(repr=False, compare=False)

    @classmethod
    def from_nodes(
        cls,
        project_name: str,
        dbt_version: str,
        nodes: Iterable[Node],
        sources: Iterable[Source],
        exposures: Iterable[Exposure],
    ) -> DbtGraph:
        """The graph of these nodes, sources and exposures, with each node's children indexed."""
        node_map = {n.unique_id: n for n in nodes}
        children: dict[str, list[str]] = {}
        for node in node_map.values():
            for parent in node.depends_on:
                children.setdefault(parent, []).append(node.unique_id)
        return cls(
            project_name=project_name,
            dbt_version=dbt_version,
            nodes=MappingProxyType(node_map),
            sources=MappingProxyType({s.unique_id: s for s in sources}),
            exposures=MappingProxyType({e.unique_id: e for e in exposures}),
            _children=MappingProxyType({k: tuple(sorted(v)) for k, v in children.items()}),
        )

    def __getstate__(self) -> dict[str, Any]:
        return {
            "project_name": self.project_name,
            "dbt_version": self.dbt_version,
            "nodes": dict(self.nodes),
            "sources": dict(self.sources),
            "exposures": dict(self.exposures),
            "_children": dict(self._children),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key in ("nodes", "sources", "exposures", "_children"):
            state[key] = MappingProxyType(state[key])
        for key, value in state.items():
            object.__setattr__(self, key, value)

    def parents(self, unique_id: str) -> tuple[str, ...]:
        """Direct parents (nodes and sources), as in the manifest's ``parent_map``."""
        return self.nodes[unique_id].depends_on

    def children(self, unique_id: str) -> tuple[str, ...]:
        """Direct children (nodes that depend on this node or source)."""
        return self._children.get(unique_id, ())

    def descendants(self, unique_ids: Iterable[str]) -> set[str]:
        """Every node downstream of ``unique_ids`` (themselves left out unless one is below another)."""
        found: set[str] = set()
        stack = list(unique_ids)
        while stack:
            for child in self.children(stack.pop()):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        return found

    def buildable(self) -> Iterator[Node]:
        """Models (not ephemeral), seeds and snapshots, in unique-id order."""
        return (n for _, n in sorted(self.nodes.items()) if n.is_buildable)

    def tests(self) -> Iterator[Node]:
        """Data tests (generic and singular), in unique-id order; not unit tests."""
        return (n for _, n in sorted(self.nodes.items()) if n.resource_type == "test")

    def unit_tests(self) -> Iterator[Node]:
        """Unit tests, in unique-id order; ``attached_node`` is the model each one tests."""
        return (n for _, n in sorted(self.nodes.items()) if n.resource_type == "unit_test")

    def build_parents(self, unique_id: str) -> tuple[str, ...]:
        """The buildable nodes this node depends on, looking through ephemeral models.

        Sources are not included: they are not built by dbt.
        """
        found: set[str] = set()
        stack = list(self.parents(unique_id))
        seen: set[str] = set()
        while stack:
            parent = stack.pop()
            if parent in seen or parent not in self.nodes:
                continue
            seen.add(parent)
            node = self.nodes[parent]
            if node.is_ephemeral:
                stack.extend(node.depends_on)
            elif node.is_buildable:
                found.add(parent)
        return tuple(sorted(found))

    def direct_sources(self, unique_id: str) -> tuple[str, ...]:
        """Sources the node reads itself, or through ephemeral models (which are part of its SQL)."""
        found: set[str] = set()
        stack = list(self.parents(unique_id))
        seen: set[str] = set()
        while stack:
            parent = stack.pop()
            if parent in seen:
                continue
            seen.add(parent)
            if parent in self.sources:
                found.add(parent)
            elif parent in self.nodes and self.nodes[parent].is_ephemeral:
                stack.extend(self.nodes[parent].depends_on)
        return tuple(sorted(found))

    def upstream_sources(self, unique_ids: Iterable[str]) -> tuple[str, ...]:
        """Sources that the given nodes read, directly or through any chain of nodes."""
        found: set[str] = set()
        stack = list(unique_ids)
        seen: set[str] = set()
        while stack:
            uid = stack.pop()
            if uid in seen:
                continue
            seen.add(uid)
            if uid in self.sources:
                found.add(uid)
            elif uid in self.nodes:
                stack.extend(self.nodes[uid].depends_on)
        return tuple(sorted(found))


def _freshness_rule(raw: Any) -> FreshnessRule | None:
    if not isinstance(raw, dict) or raw.get("count") is None or raw.get("period") is None:
        return None
    return FreshnessRule(count=int(raw["count"]), period=str(raw["period"]))


def _node(raw: dict[str, Any]) -> Node:
    config = raw.get("config") or {}
    depends = raw.get("depends_on") or {}
    test_metadata = raw.get("test_metadata") or {}
    version = raw.get("version")
    return Node(
        unique_id=raw["unique_id"],
        name=raw["name"],
        resource_type=raw["resource_type"],
        package_name=raw["package_name"],
        fqn=tuple(raw.get("fqn") or ()),
        original_file_path=raw.get("original_file_path") or "",
        materialized=str(config.get("materialized") or ""),
        tags=tuple(raw.get("tags") or config.get("tags") or ()),
        depends_on=tuple(dict.fromkeys(depends.get("nodes") or ())),
        relation_name=raw.get("relation_name"),
        version=None if version is None else str(version),
        attached_node=raw.get("attached_node"),
        test_name=test_metadata.get("name"),
    )


def _unit_test(raw: dict[str, Any]) -> Node:
    """A unit test from the manifest's ``unit_tests`` section: it depends on its model only."""
    config = raw.get("config") or {}
    depends = tuple(dict.fromkeys((raw.get("depends_on") or {}).get("nodes") or ()))
    version = raw.get("version")
    return Node(
        unique_id=raw["unique_id"],
        name=raw["name"],
        resource_type="unit_test",
        package_name=raw["package_name"],
        fqn=tuple(raw.get("fqn") or ()),
        original_file_path=raw.get("original_file_path") or "",
        materialized="",
        tags=tuple(config.get("tags") or raw.get("tags") or ()),
        depends_on=depends,
        version=None if version is None else str(version),
        attached_node=depends[0] if depends else None,
    )


def _source(raw: dict[str, Any]) -> Source:
    config = raw.get("config") or {}
    # dbt 1.10 moved freshness into config; 1.10 manifests may carry it in either place.
    freshness = config.get("freshness") or raw.get("freshness") or {}
    loaded_at = config.get("loaded_at_field") or raw.get("loaded_at_field")
    return Source(
        unique_id=raw["unique_id"],
        source_name=raw["source_name"],
        name=raw["name"],
        package_name=raw["package_name"],
        relation_name=raw.get("relation_name"),
        loaded_at_field=loaded_at,
        warn_after=_freshness_rule(freshness.get("warn_after")),
        error_after=_freshness_rule(freshness.get("error_after")),
        tags=tuple(raw.get("tags") or ()),
    )


def graph_from_manifest(manifest: Mapping[str, Any], origin: str = "manifest.json") -> DbtGraph:
    """Build the graph from a ``manifest.json`` document (already decoded)."""
    try:
        metadata = manifest["metadata"]
        schema_version = str(metadata.get("dbt_schema_version", ""))
        if not any(schema_version.endswith(f"/{v}.json") for v in SUPPORTED_MANIFEST_VERSIONS):
            raise DbtflowError(
                f"{origin} has manifest schema {schema_version or 'unknown'}, which dbtflow does not read.",
                "produce it with dbt-core 1.10 or 1.11 (manifest v12), or let dbtflow parse the project.",
            )
        nodes = [_node(raw) for raw in manifest["nodes"].values() if raw["resource_type"] in RUNNABLE_TYPES]
        nodes += [_unit_test(raw) for raw in (manifest.get("unit_tests") or {}).values()]
        sources = [_source(raw) for raw in manifest.get("sources", {}).values()]
        exposures = [
            Exposure(
                unique_id=raw["unique_id"],
                name=raw["name"],
                exposure_type=str(raw.get("type") or ""),
                depends_on=tuple((raw.get("depends_on") or {}).get("nodes") or ()),
            )
            for raw in manifest.get("exposures", {}).values()
        ]
        project_name = str(metadata.get("project_name") or "")
        if not project_name:
            roots = [n.package_name for n in nodes]
            project_name = max(set(roots), key=roots.count) if roots else ""
        return DbtGraph.from_nodes(
            project_name=project_name,
            dbt_version=str(metadata.get("dbt_version", "")),
            nodes=nodes,
            sources=sources,
            exposures=exposures,
        )
    except DbtflowError:
        raise
    except (KeyError, TypeError, AttributeError) as exc:
        raise DbtflowError(
            f"{origin} is not a valid dbt manifest (missing or malformed {exc}).",
            "delete it and let dbtflow parse the project, or regenerate it with `dbt parse`.",
        ) from None


def load_manifest_file(path: Path) -> dict[str, Any]:
    """Read and decode a ``manifest.json`` file, with a clear error when it is unreadable."""
    try:
        with path.open("rb") as fh:
            document = json.load(fh)
    except FileNotFoundError:
        raise DbtflowError(
            f"No dbt manifest at {path}.",
            "run `dbt parse` for the project, or leave manifest_path unset so dbtflow parses it.",
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DbtflowError(
            f"The dbt manifest {path} is not valid JSON ({exc}).",
            "delete it and let dbtflow parse the project, or regenerate it with `dbt parse`.",
        ) from None
    if not isinstance(document, dict):
        raise DbtflowError(
            f"The dbt manifest {path} is not a JSON object.",
            "delete it and let dbtflow parse the project, or regenerate it with `dbt parse`.",
        )
    return document
