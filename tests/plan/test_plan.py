"""The per_model plan: one task per buildable node, dbt's dependencies, and the test options."""

from __future__ import annotations

import json

import pytest

from dbtflow.plan.model import TaskKind, TestMode
from dbtflow.plan.per_model import AT_END_TASK_ID, PRODUCER_TASK_ID, plan_per_model
from dbtflow.project.graph import RUNNABLE_TYPES, DbtGraph, graph_from_manifest

from conftest import FIXTURES


def _graph(name: str) -> DbtGraph:
    return graph_from_manifest(json.loads((FIXTURES / f"manifest_{name}_dbt110.json").read_text()))


def _everything(graph: DbtGraph) -> frozenset[str]:
    return frozenset(u for u, n in graph.nodes.items() if n.resource_type in RUNNABLE_TYPES)


def _upstream_nodes(plan, spec) -> set[str]:
    return {plan.task(u).nodes[0] for u in spec.upstream}


@pytest.mark.parametrize("name", ["bikeshare", "library"])
def test_one_task_per_buildable_node_with_dbt_dependencies(name: str) -> None:
    graph = _graph(name)
    plan = plan_per_model(graph, _everything(graph), streamed=False)
    node_tasks = [t for t in plan.tasks if t.kind is TaskKind.NODE]
    assert sorted(t.main_node for t in node_tasks) == sorted(n.unique_id for n in graph.buildable())
    for spec in node_tasks:
        assert _upstream_nodes(plan, spec) == set(graph.build_parents(spec.main_node)), spec.task_id
    # Tasks come in dependency order.
    seen: set[str] = set()
    for spec in plan.tasks:
        assert set(spec.upstream) <= seen
        seen.add(spec.task_id)


def test_tests_run_with_their_model_by_default() -> None:
    graph = _graph("bikeshare")
    plan = plan_per_model(graph, _everything(graph), streamed=False)
    stg_trips = plan.task("stg_trips")
    assert stg_trips.nodes[0] == "model.bikeshare.stg_trips"
    assert {graph.nodes[u].attached_node for u in stg_trips.nodes[1:]} == {"model.bikeshare.stg_trips"}
    # The singular test reads only fct_trips: it is a single-parent test of fct_trips.
    assert "test.bikeshare.assert_trip_durations_positive" in plan.task("fct_trips").nodes
    # The relationships test has two parents: its own task, after both.
    rel = next(t for t in plan.tasks if t.task_id.startswith("test__relationships"))
    assert set(rel.upstream) == {"fct_trips", "dim_stations"}
    covered = [u for t in plan.tasks for u in t.nodes]
    assert sorted(covered) == sorted(_everything(graph) - {"model.bikeshare.int_trip_durations"})


def test_after_model_puts_tests_in_a_task_that_children_wait_for() -> None:
    graph = _graph("bikeshare")
    plan = plan_per_model(graph, _everything(graph), tests=TestMode.AFTER_MODEL, streamed=False)
    assert plan.task("stg_trips").nodes == ("model.bikeshare.stg_trips",)
    tests = plan.task("stg_trips__tests")
    assert tests.kind is TaskKind.TEST and tests.upstream == ("stg_trips",)
    assert "stg_trips__tests" in plan.task("fct_trips").upstream


def test_at_end_and_none() -> None:
    graph = _graph("bikeshare")
    everything = _everything(graph)
    at_end = plan_per_model(graph, everything, tests=TestMode.AT_END, streamed=True)
    final = at_end.task(AT_END_TASK_ID)
    assert set(final.nodes) == {u for u in everything if u.startswith("test.")}
    assert {t.task_id for t in at_end.tasks if t.kind is TaskKind.NODE} <= set(final.upstream)
    assert not set(final.nodes) & set(at_end.task(PRODUCER_TASK_ID).nodes)
    none = plan_per_model(graph, everything, tests=TestMode.NONE, streamed=False)
    assert all(not u.startswith("test.") for t in none.tasks for u in t.nodes)


def test_streamed_plan_has_a_producer_for_every_node() -> None:
    graph = _graph("bikeshare")
    plan = plan_per_model(graph, _everything(graph), streamed=True)
    producer = plan.task(PRODUCER_TASK_ID)
    assert producer.kind is TaskKind.INVOCATION and not producer.upstream
    others = {u for t in plan.tasks if t.task_id != PRODUCER_TASK_ID for u in t.nodes}
    assert set(producer.nodes) == others


def test_task_ids_are_readable_and_unique_across_packages() -> None:
    graph = _graph("library")
    plan = plan_per_model(graph, _everything(graph), streamed=False)
    ids = [t.task_id for t in plan.tasks]
    assert len(ids) == len(set(ids))
    # Both packages have a stg_books: the root project keeps the plain name.
    assert plan.task("stg_books").nodes[0] == "model.library.stg_books"
    assert plan.task("library_utils__stg_books").nodes[0] == "model.library_utils.stg_books"
    assert plan.task("dim_members_v1").nodes[0] == "model.library.dim_members.v1"
    assert plan.task("dim_members_v2").nodes[0] == "model.library.dim_members.v2"


def test_selection_restricts_tasks_and_edges() -> None:
    graph = _graph("bikeshare")
    chosen = frozenset({"model.bikeshare.fct_trips", "model.bikeshare.station_daily_usage"})
    plan = plan_per_model(graph, chosen, streamed=False)
    assert [t.task_id for t in plan.tasks] == ["fct_trips", "station_daily_usage"]
    assert plan.task("station_daily_usage").upstream == ("fct_trips",)
