"""The typed graph against dbt's own manifest (dbt 1.10 fixtures and a live 1.11 parse)."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from dbtflow import DbtProject
from dbtflow.errors import DbtflowError
from dbtflow.project.cache import cache_entry
from dbtflow.project.graph import RUNNABLE_TYPES, graph_from_manifest, load_manifest_file
from dbtflow.project.manifest import load_graph

from conftest import FIXTURES


def _check_against_parent_map(manifest: dict) -> None:
    graph = graph_from_manifest(manifest)
    runnable = {uid for uid, n in manifest["nodes"].items() if n["resource_type"] in RUNNABLE_TYPES}
    assert set(graph.nodes) == runnable
    for uid in runnable:
        assert sorted(graph.parents(uid)) == sorted(manifest["parent_map"][uid]), uid
    for uid in runnable:
        expected_children = sorted(c for c in manifest["child_map"][uid] if c in runnable)
        assert sorted(graph.children(uid)) == expected_children, uid


@pytest.mark.parametrize("name", ["bikeshare", "library"])
def test_dbt_110_manifest_matches_parent_map(name: str) -> None:
    manifest = json.loads((FIXTURES / f"manifest_{name}_dbt110.json").read_text())
    assert manifest["metadata"]["dbt_version"].startswith("1.10")
    _check_against_parent_map(manifest)


def test_dbt_111_parse_matches_parent_map(own_bikeshare: Path) -> None:
    # A copy of its own: the session's shared copy has cache entries of other tests' profiles,
    # and the oldest are pruned while this worker may still hold their graphs in memory.
    project = DbtProject(own_bikeshare)
    load_graph(project)
    entry = cache_entry(project)
    manifest = load_manifest_file(entry.manifest_json)
    assert manifest["metadata"]["dbt_version"].startswith("1.11")
    _check_against_parent_map(manifest)


def test_example_graph_contents() -> None:
    graph = graph_from_manifest(json.loads((FIXTURES / "manifest_bikeshare_dbt110.json").read_text()))
    ephemeral = graph.nodes["model.bikeshare.int_trip_durations"]
    assert ephemeral.is_ephemeral and not ephemeral.is_buildable
    # Dependencies pass through the ephemeral model.
    assert graph.build_parents("model.bikeshare.fct_trips") == ("model.bikeshare.stg_trips",)
    assert graph.build_parents("model.bikeshare.bike_utilization") == (
        "model.bikeshare.stg_bikes",
        "model.bikeshare.stg_trips",
    )
    relationships = next(t for t in graph.tests() if t.test_name == "relationships")
    assert set(graph.build_parents(relationships.unique_id)) == {
        "model.bikeshare.dim_stations",
        "model.bikeshare.fct_trips",
    }
    singular = graph.nodes["test.bikeshare.assert_trip_durations_positive"]
    assert singular.test_name is None
    kinds = {n.resource_type for n in graph.buildable()}
    assert kinds == {"model", "seed", "snapshot"}
    assert graph.nodes["model.bikeshare.fct_trips"].materialized == "incremental"


def test_library_graph_sources_exposures_disabled_versions() -> None:
    manifest = json.loads((FIXTURES / "manifest_library_dbt110.json").read_text())
    graph = graph_from_manifest(manifest)
    loans = graph.sources["source.library.raw.loans"]
    assert loans.loaded_at_field == "_loaded_at"
    assert loans.warn_after is not None and loans.warn_after.seconds == 12 * 3600
    assert loans.error_after is not None and loans.error_after.seconds == 86400
    assert not graph.sources["source.library.raw.books"].has_freshness
    assert set(graph.exposures["exposure.library.circulation_dashboard"].depends_on) == {
        "model.library.fct_loans",
        "model.library.popular_books",
    }
    # Disabled models are absent.
    assert "model.library.legacy_report" not in graph.nodes
    assert manifest["disabled"]
    assert {graph.nodes[u].version for u in graph.nodes if graph.nodes[u].name == "dim_members"} == {"1", "2"}
    assert graph.upstream_sources(["model.library.popular_books"]) == (
        "source.library.raw.books",
        "source.library.raw.loans",
        "source.library.raw.members",
    )


def test_graph_is_immutable() -> None:
    graph = graph_from_manifest(json.loads((FIXTURES / "manifest_bikeshare_dbt110.json").read_text()))
    node = next(iter(graph.nodes.values()))
    with pytest.raises(FrozenInstanceError):
        node.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        graph.nodes["x"] = node  # type: ignore[index]


def test_broken_manifest_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "manifest.json"
    bad.write_text("{not json")
    with pytest.raises(DbtflowError, match="not valid JSON"):
        load_manifest_file(bad)
    bad.write_text(
        json.dumps({"metadata": {"dbt_schema_version": "https://schemas.getdbt.com/dbt/manifest/v7.json"}})
    )
    with pytest.raises(DbtflowError, match="manifest schema"):
        graph_from_manifest(load_manifest_file(bad))
    bad.write_text(json.dumps({"metadata": {"dbt_schema_version": "x/v12.json"}}))
    with pytest.raises(DbtflowError, match="not a valid dbt manifest"):
        graph_from_manifest(load_manifest_file(bad))
