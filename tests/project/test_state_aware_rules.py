"""The state-aware decision (``dbtflow.project.state_aware``) on the library example's real manifest.

The library project has a source with a load time (``raw.loans``) and two without (``raw.books``,
``raw.members``), a versioned model, a model from a package and tests on one and two models.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import pytest

from dbtflow.project.graph import DbtGraph, graph_from_manifest
from dbtflow.project.state_aware import (
    LastBuild,
    StateAwarePlan,
    fingerprints,
    measured_sources,
    plan_state_aware,
)

from conftest import FIXTURES

LOANS = "source.library.raw.loans"
LOADED = "2024-03-01T08:00:00+00:00"
#: Models that read a source without a load time: never left out.
UNKNOWABLE = {"model.library.stg_books", "model.library.stg_members"}


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FIXTURES / "manifest_library_dbt110.json").read_text())
    return document


@pytest.fixture(scope="module")
def graph(manifest: dict[str, Any]) -> DbtGraph:
    return graph_from_manifest(manifest)


@pytest.fixture(scope="module")
def measured(manifest: dict[str, Any]) -> tuple[dict[str, Any], DbtGraph]:
    """The manifest as if every source had a load time and a freshness rule, and its graph."""
    document = copy.deepcopy(manifest)
    for source in document["sources"].values():
        source["config"]["loaded_at_field"] = "_loaded_at"
        source["config"]["freshness"] = {"warn_after": {"count": 1, "period": "day"}}
    return document, graph_from_manifest(document)


def _everything(graph: DbtGraph) -> list[str]:
    return sorted(
        uid for uid, node in graph.nodes.items() if node.is_buildable or node.resource_type == "test"
    )


def _built_before(graph: DbtGraph, codes: Mapping[str, str]) -> dict[str, LastBuild]:
    """Every buildable node built by run 'r1' from ``codes``, loans loaded at ``LOADED``; parents first."""
    return {
        node.unique_id: LastBuild(
            unique_id=node.unique_id,
            run_id="r1",
            built_at=1000.0 + len(graph.upstream_sources([node.unique_id])) + _depth(graph, node.unique_id),
            fingerprint=codes[node.unique_id],
            sources={src: LOADED for src in graph.direct_sources(node.unique_id)},
        )
        for node in graph.buildable()
    }


def _depth(graph: DbtGraph, uid: str) -> int:
    parents = graph.build_parents(uid)
    return 1 + max((_depth(graph, p) for p in parents), default=0)


def _plan(
    graph: DbtGraph,
    codes: Mapping[str, str],
    last: Mapping[str, LastBuild],
    watermark: str = LOADED,
    latest: Mapping[str, float] | None = None,
) -> StateAwarePlan:
    latest = latest if latest is not None else {uid: b.built_at for uid, b in last.items()}
    marks = {uid: watermark if uid == LOANS else LOADED for uid in graph.sources}
    return plan_state_aware(graph, _everything(graph), codes, last, marks, latest)


def _downstream(graph: DbtGraph, start: str) -> set[str]:
    found, stack = set(), [start]
    while stack:
        for child in graph.children(stack.pop()):
            if child not in found and graph.nodes[child].is_buildable:
                found.add(child)
                stack.append(child)
    return found


def test_fingerprints_change_only_for_the_edited_node(manifest: dict[str, Any], graph: DbtGraph) -> None:
    buildable = [n.unique_id for n in graph.buildable()]
    before = fingerprints(manifest, buildable)
    assert set(before) == set(buildable) and len(set(before.values())) == len(buildable)
    assert fingerprints(copy.deepcopy(manifest), buildable) == before
    edited = copy.deepcopy(manifest)
    edited["nodes"]["model.library.stg_loans"]["checksum"]["checksum"] = "0" * 64
    edited["nodes"]["model.library.fct_loans"]["config"]["materialized"] = "view"
    after = fingerprints(edited, buildable)
    assert {uid for uid in buildable if after[uid] != before[uid]} == {
        "model.library.stg_loans",
        "model.library.fct_loans",
    }


def test_only_sources_with_a_load_time_and_a_rule_are_measured(graph: DbtGraph) -> None:
    assert measured_sources(graph, [n.unique_id for n in graph.buildable()]) == [LOANS]


def test_nothing_changed_leaves_out_all_but_the_unknowable_and_their_downstream(
    manifest: dict[str, Any], graph: DbtGraph
) -> None:
    codes = fingerprints(manifest, [n.unique_id for n in graph.buildable()])
    plan = _plan(graph, codes, _built_before(graph, codes))
    built_for_unknown = UNKNOWABLE | {d for uid in UNKNOWABLE for d in _downstream(graph, uid)}
    assert set(plan.built) == built_for_unknown
    assert "freshness is unknown" in plan.built["model.library.stg_books"]
    assert plan.built["model.library.popular_books"] in (
        "upstream stg_books is rebuilt",
        "upstream fct_loans is rebuilt",
    )
    left_out = {n.unique_id for n in graph.buildable()} - built_for_unknown
    assert left_out == {
        "model.library.stg_loans",
        "model.library_utils.calendar_months",
        "model.library_utils.stg_books",
    }
    assert plan.skipped["model.library.stg_loans"] == "unchanged since run r1; sources not newer"
    # A test runs only with its model: left out when every model it tests is.
    assert "test.library.not_null_stg_loans_loan_id.b77c69982c" in plan.skipped
    assert not any(uid.startswith("test.library.relationships_stg_loans") for uid in plan.skipped)


def test_with_every_source_measured_nothing_changed_builds_nothing(
    measured: tuple[dict[str, Any], DbtGraph],
) -> None:
    document, graph = measured
    codes = fingerprints(document, [n.unique_id for n in graph.buildable()])
    plan = _plan(graph, codes, _built_before(graph, codes))
    assert not plan.built
    assert set(plan.skipped) == set(_everything(graph))


def test_edited_model_rebuilds_it_and_its_downstream(measured: tuple[dict[str, Any], DbtGraph]) -> None:
    document, graph = measured
    buildable = [n.unique_id for n in graph.buildable()]
    last = _built_before(graph, fingerprints(document, buildable))
    edited = copy.deepcopy(document)
    edited["nodes"]["model.library.stg_loans"]["checksum"]["checksum"] = "1" * 64
    plan = _plan(graph, fingerprints(edited, buildable), last)
    assert set(plan.built) == {"model.library.stg_loans"} | _downstream(graph, "model.library.stg_loans")
    assert plan.built["model.library.stg_loans"] == "code or config changed since run r1"
    assert plan.built["model.library.popular_books"] == "upstream fct_loans is rebuilt"
    # Its tests run; the tests of what is left out do not.
    assert "test.library.not_null_stg_loans_loan_id.b77c69982c" not in plan.skipped
    assert "test.library.not_null_stg_books_book_id.7e166e33a6" in plan.skipped


def test_newer_source_data_rebuilds_its_readers(measured: tuple[dict[str, Any], DbtGraph]) -> None:
    document, graph = measured
    codes = fingerprints(document, [n.unique_id for n in graph.buildable()])
    plan = _plan(graph, codes, _built_before(graph, codes), watermark="2024-03-02T08:00:00+00:00")
    assert set(plan.built) == {"model.library.stg_loans"} | _downstream(graph, "model.library.stg_loans")
    assert plan.built["model.library.stg_loans"].startswith("source raw.loans has newer data")
    unknown = _plan(graph, codes, _built_before(graph, codes), watermark=None)  # type: ignore[arg-type]
    assert set(unknown.built) == set(plan.built)
    assert "load time of source raw.loans is unknown" in unknown.built["model.library.stg_loans"]


def test_never_built_and_upstream_rebuilt_since_are_built(measured: tuple[dict[str, Any], DbtGraph]) -> None:
    document, graph = measured
    codes = fingerprints(document, [n.unique_id for n in graph.buildable()])
    last = _built_before(graph, codes)
    calendar = "model.library_utils.calendar_months"
    del last[calendar]
    plan = _plan(graph, codes, last, latest={uid: b.built_at for uid, b in last.items()})
    assert plan.built[calendar] == "never built by this DAG"
    # Built by another DAG (or a retry) after loans_by_month's last build: loans_by_month is stale.
    last = _built_before(graph, codes)
    latest = {uid: b.built_at for uid, b in last.items()} | {calendar: 9999.0}
    selection = [uid for uid in _everything(graph) if uid != calendar]
    plan = plan_state_aware(graph, selection, codes, last, dict.fromkeys(graph.sources, LOADED), latest)
    assert plan.built["model.library.loans_by_month"] == "upstream calendar_months was rebuilt after run r1"
    assert calendar not in plan.built and calendar not in plan.skipped


def test_a_task_deciding_for_its_own_nodes_knows_what_the_run_rebuilt(
    measured: tuple[dict[str, Any], DbtGraph],
) -> None:
    """per_task: one task's nodes only, with ``rebuilt`` (what the run's other tasks built). A
    model whose parent was rebuilt in this run is built; a test whose models are all outside the
    task runs only when one of them was rebuilt."""
    document, graph = measured
    codes = fingerprints(document, [n.unique_id for n in graph.buildable()])
    last = _built_before(graph, codes)
    latest = {uid: b.built_at for uid, b in last.items()}
    marks = dict.fromkeys(graph.sources, LOADED)
    fct = "model.library.fct_loans"
    parent = graph.build_parents(fct)[0]

    def plan(nodes: list[str], rebuilt: set[str]) -> StateAwarePlan:
        return plan_state_aware(graph, nodes, codes, last, marks, latest, rebuilt)

    assert fct in plan([fct], set()).skipped
    rebuilt = plan([fct], {parent})
    assert rebuilt.built[fct] == f"upstream {graph.nodes[parent].name} was rebuilt in this run"
    tests_of_fct = [
        uid
        for uid, node in graph.nodes.items()
        if node.resource_type == "test"
        and graph.build_parents(uid) == (fct,)
        and not graph.direct_sources(uid)
    ]
    assert tests_of_fct
    assert set(plan(tests_of_fct, set()).skipped) == set(tests_of_fct)
    assert not plan(tests_of_fct, {fct}).skipped
