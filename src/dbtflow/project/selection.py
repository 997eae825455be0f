"""Node selection with dbt's own selector: ``select``, ``exclude`` and named ``selector``.

The selection is computed by ``dbt ls`` run in-process on the cached manifest, so it follows dbt's
syntax and semantics exactly (methods, graph operators, intersections, indirect test selection),
and its result is cached next to the manifest so later DAG-file loads do not import dbt.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from dbtflow.errors import DbtflowError
from dbtflow.files import write_atomic
from dbtflow.project.cache import CacheEntry, cache_entry
from dbtflow.project.config import DbtProject
from dbtflow.project.graph import DbtGraph
from dbtflow.project.invoke import run_dbt, selection_args
from dbtflow.project.manifest import load_manifest


def select_nodes(
    project: DbtProject,
    select: Sequence[str] = (),
    exclude: Sequence[str] = (),
    selector: str | None = None,
    entry: CacheEntry | None = None,
) -> frozenset[str]:
    """The unique ids that ``dbt ls`` prints for these arguments."""
    entry = entry or cache_entry(project)
    request = {"select": list(select), "exclude": list(exclude), "selector": selector}
    file = entry.selection_file(request)
    try:
        return frozenset(json.loads(file.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    manifest = load_manifest(project, entry)
    run = run_dbt(
        project,
        ["ls", *selection_args(select, exclude, selector), "--output", "json", "--output-keys", "unique_id"],
        manifest=manifest,
    )
    if run.error is not None or not run.success:
        described = " ".join(selection_args(select, exclude, selector)) or "(everything)"
        raise DbtflowError(
            f"dbt rejected the selection {described}: {run.error or 'dbt ls failed'}",
            "correct the selection (dbt's syntax: names, tag:, path:, fqn:, config.materialized:, "
            "resource_type:, source:, +, @, ',' for intersection) or define the selector in selectors.yml.",
        )
    ids = sorted(json.loads(line)["unique_id"] for line in run.payload or ())
    write_atomic(file, json.dumps(ids).encode())
    return frozenset(ids)


def exact_selection(graph: DbtGraph, unique_ids: Sequence[str]) -> list[str]:
    """dbt flags that select exactly these nodes and nothing else (no indirect tests).

    dbt has no unique-id selector; a node's full ``fqn:`` intersected with its resource type
    selects it, except that ``fqn:`` matches by prefix, so any other node whose fqn extends it
    (a folder named like the model, a versioned model) is excluded explicitly.
    """
    return [*selection_args(*exact_selectors(graph, unique_ids)), "--indirect-selection", "empty"]


def exact_selectors(graph: DbtGraph, unique_ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """The ``--select`` and ``--exclude`` values of ``exact_selection``."""
    wanted = set(unique_ids)
    extensions = _fqn_extensions(graph)
    selects: list[str] = []
    excludes: set[str] = set()
    for uid in unique_ids:
        node = graph.nodes[uid]
        flat = _flat_fqn(node.fqn)
        selects.append(_selector(flat, node.resource_type))
        for other_id in extensions.get((node.resource_type, flat), ()):
            if other_id not in wanted:
                excludes.add(_selector(_flat_fqn(graph.nodes[other_id].fqn), node.resource_type))
    return selects, sorted(excludes)


def _selector(flat: tuple[str, ...], resource_type: str) -> str:
    return f"fqn:{'.'.join(flat)},resource_type:{resource_type}"


def _fqn_extensions(graph: DbtGraph) -> dict[tuple[str, tuple[str, ...]], list[str]]:
    """For each (resource type, fqn prefix), the nodes whose fqn strictly extends it."""
    index: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for uid, node in graph.nodes.items():
        flat = _flat_fqn(node.fqn)
        for end in range(1, len(flat)):
            index.setdefault((node.resource_type, flat[:end]), []).append(uid)
    return index


def _flat_fqn(fqn: Sequence[str]) -> tuple[str, ...]:
    return tuple(part for segment in fqn for part in segment.split("."))
