"""Task ids stay unique after they are made safe for Airflow and shortened to 250 characters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dbtflow.plan.grouped import plan_grouped
from dbtflow.plan.model import TaskKind, TaskSpec, TestMode, topological
from dbtflow.plan.naming import MAX_TASK_ID, RESERVED_TASK_IDS, node_task_ids, safe_id, unique_task_id
from dbtflow.plan.per_model import PRODUCER_TASK_ID, plan_per_model
from dbtflow.project.graph import DbtGraph, Node

from conftest import run_cli

LONG = "m" * MAX_TASK_ID  # two models whose names share their first 250 characters


def _model(name: str, package: str = "shop", *, folder: str = "marts", parents: tuple[str, ...] = ()) -> Node:
    return Node(
        unique_id=f"model.{package}.{name}",
        name=name,
        resource_type="model",
        package_name=package,
        fqn=(package, folder, name),
        original_file_path=f"models/{folder}/{name}.sql",
        materialized="table",
        tags=(),
        depends_on=parents,
    )


def _test(name: str, parents: tuple[str, ...]) -> Node:
    return Node(
        unique_id=f"test.shop.{name}",
        name=name,
        resource_type="test",
        package_name="shop",
        fqn=("shop", name),
        original_file_path=f"tests/{name}.sql",
        materialized="test",
        tags=(),
        depends_on=parents,
    )


def _graph(*nodes: Node) -> DbtGraph:
    return DbtGraph.from_nodes("shop", "1.11.0", nodes, (), ())


def _ids(graph: DbtGraph) -> dict[str, str]:
    return node_task_ids(graph, graph.buildable())


def _assert_valid(ids: list[str]) -> None:
    assert len(ids) == len(set(ids)), ids
    for task_id in ids:
        assert 0 < len(task_id) <= MAX_TASK_ID and safe_id(task_id) == task_id, task_id


def test_plain_names_stay_plain() -> None:
    ids = _ids(_graph(_model("fct_orders"), _model("café")))
    assert ids == {"model.shop.fct_orders": "fct_orders", "model.shop.café": "caf_"}


def test_names_made_alike_by_safe_id_get_distinct_stable_ids() -> None:
    graph = _graph(_model("café"), _model("cafè"), _model("caf_"))
    ids = _ids(graph)
    _assert_valid(list(ids.values()))
    # The model whose name is already the id keeps it; the others get a hash suffix.
    assert ids["model.shop.caf_"] == "caf_"
    assert ids["model.shop.café"].startswith("caf___") and ids["model.shop.cafè"].startswith("caf___")
    # The suffix depends on the node only: the same with or without the third model, in any order.
    again = _ids(_graph(_model("cafè"), _model("café")))
    assert again == {k: v for k, v in ids.items() if k != "model.shop.caf_"}


def test_names_sharing_their_first_250_characters() -> None:
    graph = _graph(_model(LONG + "_a"), _model(LONG + "_b"), _model("x" * 300))
    ids = _ids(graph)
    _assert_valid(list(ids.values()))
    assert ids[f"model.shop.{LONG}_a"][:200] == LONG[:200]
    assert ids["model.shop." + "x" * 300] == "x" * MAX_TASK_ID  # alone: only shortened


def test_package_prefix_and_versions_cannot_collide_with_a_root_model() -> None:
    nodes = [
        _model("fct_orders"),
        _model("fct_orders", package="payments"),
        _model("payments__fct_orders"),  # a root model already named like the prefixed one
        _model("dim_v2"),
        _versioned("dim", "2"),
    ]
    ids = _ids(_graph(*nodes))
    _assert_valid(list(ids.values()))
    assert ids["model.shop.fct_orders"] == "fct_orders"
    assert ids["model.shop.payments__fct_orders"] == "payments__fct_orders"
    assert ids["model.payments.fct_orders"].startswith("payments__fct_orders__")
    assert ids["model.shop.dim_v2"] == "dim_v2"
    assert ids["model.shop.dim.v2"].startswith("dim_v2__")


def _versioned(name: str, version: str) -> Node:
    base = _model(name)
    return Node(
        unique_id=f"{base.unique_id}.v{version}",
        name=name,
        resource_type="model",
        package_name="shop",
        fqn=base.fqn,
        original_file_path=base.original_file_path,
        materialized="table",
        tags=(),
        depends_on=(),
        version=version,
    )


def test_a_model_named_like_the_producer_gets_its_own_task() -> None:
    assert PRODUCER_TASK_ID in RESERVED_TASK_IDS
    graph = _graph(_model("dbt_build"), _model("orders"))
    plan = plan_per_model(graph, frozenset(graph.nodes))
    _assert_valid([t.task_id for t in plan.tasks])
    assert plan.task_of_node()["model.shop.dbt_build"] != PRODUCER_TASK_ID
    assert set(plan.task(PRODUCER_TASK_ID).nodes) == set(graph.nodes)


def test_unique_task_id_keeps_suffixed_ids_within_the_limit() -> None:
    taken: set[str] = set()
    first = unique_task_id(LONG + "_tail", taken)
    second = unique_task_id(LONG + "_other", taken)
    third = unique_task_id("café", taken)
    assert first == LONG and second == LONG[:-2] + "_2" and third == "caf_"
    _assert_valid([first, second, third])


@pytest.mark.parametrize("tests", list(TestMode))
@pytest.mark.parametrize("streamed", [True, False])
def test_per_model_plan_covers_every_node_with_colliding_names(tests: TestMode, streamed: bool) -> None:
    a, b = _model(LONG + "_a"), _model(LONG + "_b", parents=(f"model.shop.{LONG}_a",))
    c, d = _model("café"), _model("cafè", parents=("model.shop.café",))
    graph = _graph(
        a,
        b,
        c,
        d,
        _test(LONG + "_t1", (a.unique_id,)),
        _test(LONG + "_t2", (b.unique_id,)),
        _test("rel_é", (c.unique_id, d.unique_id)),
        _test("rel_è", (c.unique_id, d.unique_id)),
    )
    plan = plan_per_model(graph, frozenset(graph.nodes), tests=tests, streamed=streamed)
    _assert_valid([t.task_id for t in plan.tasks])
    owners = plan.task_of_node()
    assert {n.unique_id for n in graph.buildable()} <= set(owners)
    node_tasks = {owners[n.unique_id] for n in graph.buildable()}
    assert len(node_tasks) == 4
    if tests is not TestMode.NONE:
        assert {n.unique_id for n in graph.tests()} <= set(owners)
    assert plan.task(owners[d.unique_id]).upstream != ()


def test_grouped_plan_with_folders_made_alike() -> None:
    a = _model("a", folder="café")
    b = _model("b", folder="cafè", parents=(a.unique_id,))
    c = _model("c", folder=LONG + "_1", parents=(b.unique_id,))
    d = _model("d", folder=LONG + "_2", parents=(c.unique_id,))
    graph = _graph(a, b, c, d)
    plan = plan_grouped(graph, frozenset(graph.nodes))
    _assert_valid([t.task_id for t in plan.tasks])
    assert len(plan.tasks) == 4
    assert sorted(uid for t in plan.tasks for uid in t.nodes) == sorted(graph.nodes)


def test_a_plan_refuses_two_tasks_with_one_id() -> None:
    spec = TaskSpec(task_id="caf_", kind=TaskKind.NODE, nodes=("model.shop.café",))
    with pytest.raises(ValueError, match="caf_"):
        topological([spec, TaskSpec(task_id="caf_", kind=TaskKind.NODE, nodes=("model.shop.cafè",))])


CAFE_PROFILE = """cafes:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{{ env_var('CAFES_DUCKDB') }}"
      threads: 1
"""


def test_real_project_with_cafe_and_cafe_grave(tmp_path: Path, airflow_db: Path) -> None:
    """dbt and DuckDB accept models named ``café`` and ``cafè`` (both ``caf_`` once made safe);
    each gets its own task, and a failing ``cafè`` fails its task and the run."""
    project = tmp_path / "cafes"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text('name: cafes\nversion: "1.0.0"\nprofile: cafes\n')
    (project / "profiles.yml").write_text(CAFE_PROFILE)
    (project / "models" / "café.sql").write_text("select 1 as x\n")
    (project / "models" / "cafè.sql").write_text(
        "{{ config(materialized='table') }}\nselect error('broken ' || x) from {{ ref('café') }}\n"
    )
    env = {"CAFES_DUCKDB": str(tmp_path / "cafes.duckdb")}

    rendered = run_cli("render", str(project), "--format", "json", env=env)
    assert rendered.returncode == 0, rendered.stderr
    tasks = {t["task_id"]: t["nodes"] for t in json.loads(rendered.stdout)["tasks"]}
    owners = {uid: task for task, nodes in tasks.items() if task != PRODUCER_TASK_ID for uid in nodes}
    assert set(owners) == {"model.cafes.café", "model.cafes.cafè"}
    assert owners["model.cafes.café"] != owners["model.cafes.cafè"]

    summary = tmp_path / "summary.json"
    done = run_cli("run", str(project), "--progress", "none", "--summary-json", str(summary), env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    states = {t["task_id"]: t["state"] for t in json.loads(summary.read_text())["tasks"]}
    assert states[owners["model.cafes.café"]] == "success"
    assert states[owners["model.cafes.cafè"]] == "failed"
