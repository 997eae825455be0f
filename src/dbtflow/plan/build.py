"""Choosing the plan for a pattern: the single entry point used by the DAG builder and the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from dbtflow.errors import DbtflowError
from dbtflow.plan.grouped import GroupBy, plan_grouped
from dbtflow.plan.model import TaskPlan, TestMode
from dbtflow.plan.per_model import plan_per_model
from dbtflow.plan.single import plan_single
from dbtflow.project.cache import CacheEntry, cache_entry
from dbtflow.project.config import DbtProject
from dbtflow.project.graph import RUNNABLE_TYPES, DbtGraph
from dbtflow.project.invoke import selection_args
from dbtflow.project.manifest import load_graph
from dbtflow.project.selection import select_nodes

PATTERNS = ("per_model", "single", "grouped")
EXECUTIONS = ("streamed", "per_task")


def as_tokens(value: str | Sequence[str] | None) -> list[str]:
    """dbt selection arguments as a list: a string is split on spaces (a union, as in dbt)."""
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    return [token for item in value for token in str(item).split()]


def selected_ids(
    project: DbtProject,
    graph: DbtGraph,
    select: Sequence[str],
    exclude: Sequence[str],
    selector: str | None,
    entry: CacheEntry | None = None,
) -> frozenset[str]:
    """The selection's unique ids; everything runnable when nothing is selected."""
    if not select and not exclude and not selector:
        return frozenset(uid for uid, node in graph.nodes.items() if node.resource_type in RUNNABLE_TYPES)
    return select_nodes(project, select, exclude, selector, entry=entry)


def make_plan(
    project: DbtProject,
    *,
    pattern: str = "per_model",
    select: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    selector: str | None = None,
    tests: str = TestMode.WITH_MODEL.value,
    execution: str = "streamed",
    group_by: str | GroupBy = "folder",
) -> TaskPlan:
    """Load the project's graph (cached), select nodes with dbt's selector and plan the tasks.

    ``tests`` and ``execution`` apply to per_model, ``group_by`` to grouped.
    """
    if pattern not in PATTERNS:
        raise DbtflowError(f"Unknown pattern '{pattern}'.", f"use one of: {', '.join(PATTERNS)}.")
    if execution not in EXECUTIONS:
        raise DbtflowError(f"Unknown execution '{execution}'.", f"use one of: {', '.join(EXECUTIONS)}.")
    try:
        test_mode = TestMode(tests)
    except ValueError:
        raise DbtflowError(
            f"Unknown tests option '{tests}'.", f"use one of: {', '.join(m.value for m in TestMode)}."
        ) from None
    entry = cache_entry(project)
    graph = load_graph(project, entry)
    select_tokens, exclude_tokens = as_tokens(select), as_tokens(exclude)
    chosen = selected_ids(project, graph, select_tokens, exclude_tokens, selector, entry)
    if pattern == "single":
        return plan_single(graph, chosen, selection_args(select_tokens, exclude_tokens, selector))
    if pattern == "grouped":
        return plan_grouped(graph, chosen, group_by)
    plan = plan_per_model(graph, chosen, tests=test_mode, streamed=execution == "streamed")
    if plan.producer is None:
        return plan
    return replace(
        plan, producer_selection=producer_selection(select_tokens, exclude_tokens, selector, test_mode)
    )


def producer_selection(
    select: Sequence[str], exclude: Sequence[str], selector: str | None, tests: TestMode
) -> tuple[str, ...]:
    """The producer's dbt flags: the DAG's selection, without tests when they run elsewhere (a
    model's unit tests run with it, except with ``tests="none"``)."""
    extra = {
        TestMode.NONE: ["resource_type:test", "resource_type:unit_test"],
        TestMode.AT_END: ["resource_type:test"],
    }.get(tests, [])
    return tuple(selection_args(select, [*exclude, *extra], selector))
