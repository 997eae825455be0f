"""Making the plan for a pattern: the single entry point used by the DAG builder, the ELT
layout, ``dbtflow run`` and ``dbtflow render``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Unpack

from dbtflow.errors import DbtflowError
from dbtflow.plan.grouped import plan_grouped
from dbtflow.plan.model import TaskPlan, TestMode
from dbtflow.plan.options import Pattern, PlanChoices, PlanOptions
from dbtflow.plan.per_model import plan_per_model
from dbtflow.plan.single import plan_single
from dbtflow.project.cache import CacheEntry, cache_entry
from dbtflow.project.config import DbtProject
from dbtflow.project.graph import RUNNABLE_TYPES, DbtGraph
from dbtflow.project.invoke import selection_args
from dbtflow.project.manifest import load_graph
from dbtflow.project.selection import select_nodes


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
    project: DbtProject, options: PlanOptions | None = None, /, **choices: Unpack[PlanChoices]
) -> TaskPlan:
    """Load the project's graph (cached), select nodes with dbt's selector and plan the tasks.

    The choices come as ``options``, or as keyword arguments (``pattern="grouped"``...) that make
    them; ``tests`` and ``execution`` apply to per_model, ``group_by`` to grouped.
    """
    if options is None:
        options = PlanOptions.of(**choices)
    elif choices:
        raise TypeError("make_plan takes options or keyword choices, not both.")
    if options.pattern not in Pattern.planned():
        planned = ", ".join(Pattern.planned())
        raise DbtflowError(f"Unknown pattern '{options.pattern}'.", f"use one of: {planned}.")
    entry = cache_entry(project)
    graph = load_graph(project, entry)
    chosen = selected_ids(project, graph, options.select, options.exclude, options.selector, entry)
    if options.pattern is Pattern.SINGLE:
        return plan_single(graph, chosen, options.selection)
    if options.pattern is Pattern.GROUPED:
        return plan_grouped(graph, chosen, options.group_by)
    plan = plan_per_model(graph, chosen, tests=options.tests, streamed=options.streamed)
    if plan.producer is None:
        return plan
    return replace(
        plan,
        producer_selection=producer_selection(
            options.select, options.exclude, options.selector, options.tests
        ),
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
