"""A task plan: the tasks a pattern makes from a dbt graph, their nodes and dependencies.

The plan is plain data with no Airflow in it. ``dbtflow render`` prints it, the Airflow layer
turns each ``TaskSpec`` into an operator, and tests check it against dbt's own graph.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TaskKind(StrEnum):
    """What a task of a plan runs."""

    #: Builds one model, seed or snapshot (and, by default, its single-parent tests).
    NODE = "node"
    #: Runs tests only: a model's tests, a multi-parent test, or all tests at the end.
    TEST = "test"
    #: Runs one dbt invocation over many nodes: the whole selection (single), a group (grouped),
    #: or the streamed producer that the node tasks of per_model reflect. (The value is in no
    #: task id and is stored nowhere: plans are made again from the project.)
    INVOCATION = "invocation"


class TestMode(StrEnum):
    """Where a model's tests run in the per_model pattern."""

    __test__ = False  # not a pytest test class

    #: In the model's own task, right after the model (``dbt build`` of the model).
    WITH_MODEL = "with_model"
    #: In a separate task right after the model's task; the model's children wait for it.
    AFTER_MODEL = "after_model"
    #: All tests in one task after every model.
    AT_END = "at_end"
    #: No tests.
    NONE = "none"


@dataclass(frozen=True)
class TaskSpec:
    """One task of a plan."""

    task_id: str
    kind: TaskKind
    #: The dbt unique ids this task builds or tests (or, for the streamed producer, runs).
    nodes: tuple[str, ...]
    upstream: tuple[str, ...] = ()
    #: Resource type of the main node for NODE tasks (model, seed, snapshot).
    resource_type: str | None = None
    #: The group a task builds in the grouped pattern.
    group: str | None = None
    #: For INVOCATION tasks of the single pattern: the dbt selection flags that the task runs (the
    #: DAG's own selection). ``None`` selects exactly ``nodes``.
    selection: tuple[str, ...] | None = None

    @property
    def main_node(self) -> str | None:
        return self.nodes[0] if self.kind is TaskKind.NODE and self.nodes else None

    def to_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "nodes": list(self.nodes), "upstream": list(self.upstream)}


@dataclass(frozen=True)
class TaskPlan:
    """All tasks of one rendering, in dependency order."""

    pattern: str
    tasks: tuple[TaskSpec, ...]
    #: Every unique id of the selection (as ``dbt ls`` gives it).
    selected: frozenset[str] = field(default=frozenset(), repr=False)
    #: The streamed producer's task id, when node tasks reflect one dbt invocation.
    producer: str | None = None
    #: dbt selection flags of the producer's ``dbt build`` (the DAG's own selection).
    producer_selection: tuple[str, ...] = ()

    def task(self, task_id: str) -> TaskSpec:
        for spec in self.tasks:
            if spec.task_id == task_id:
                return spec
        raise KeyError(task_id)

    def task_of_node(self) -> dict[str, str]:
        """Which task is responsible for each unique id."""
        owner: dict[str, str] = {}
        for spec in self.tasks:
            if spec.task_id == self.producer:
                continue
            for uid in spec.nodes:
                owner.setdefault(uid, spec.task_id)
        return owner

    def to_dict(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "tasks": [t.to_dict() for t in self.tasks]}


def topological(tasks: Iterable[TaskSpec]) -> tuple[TaskSpec, ...]:
    """Tasks ordered so that every task comes after its upstream tasks (stable by task id)."""
    by_id: dict[str, TaskSpec] = {}
    for task in tasks:
        if task.task_id in by_id:
            # A plan that names two tasks alike would silently drop one: a bug, never bad input.
            raise ValueError(f"Two tasks of the plan have the id {task.task_id!r}.")
        by_id[task.task_id] = task
    done: set[str] = set()
    ordered: list[TaskSpec] = []
    for task_id in sorted(by_id):
        stack = [(task_id, False)]
        while stack:
            current, expanded = stack.pop()
            if current in done:
                continue
            if expanded:
                done.add(current)
                ordered.append(by_id[current])
                continue
            stack.append((current, True))
            stack.extend((u, False) for u in sorted(by_id[current].upstream, reverse=True) if u not in done)
    return tuple(ordered)
