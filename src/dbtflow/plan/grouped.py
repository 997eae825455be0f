"""The grouped pattern: one task per group of nodes, each group built by one dbt invocation.

Groups come from the top folder of each node's file (``models/staging/...`` is ``staging``),
from its first tag, or from a user function mapping a ``Node`` to a group name. A group's task
waits for the groups its nodes' parents are in; a grouping that would make those dependencies
circular is refused with the nodes that make the cycle. A test runs in its parent's group; a
test with parents in several groups runs in the one downstream of all the others, or, when
there is none, in a task of its own after all of them. A unit test runs in its model's group:
the group's ``dbt build`` runs it before the model and skips the model and its children in the
group when it fails, as ``dbt build`` of the whole project would. A unit test whose model is in
no group (not selected, or ephemeral) is left out: ``dbt build`` runs a unit test only with its
model.
"""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter
from itertools import pairwise

from dbtflow.errors import DbtflowError
from dbtflow.plan.model import TaskKind, TaskPlan, TaskSpec, topological
from dbtflow.plan.naming import safe_id, unique_task_id
from dbtflow.plan.options import GroupBy, Grouper
from dbtflow.project.graph import DbtGraph, Node

UNTAGGED = "untagged"


def by_folder(node: Node) -> str:
    """The top folder under the node's resource folder (``models/staging/x.sql`` is ``staging``),
    or the resource folder itself for files directly in it (``seeds``)."""
    parts = node.original_file_path.replace("\\", "/").split("/")
    return parts[1] if len(parts) > 2 else parts[0]


def by_tag(node: Node) -> str:
    """The node's first tag, or ``untagged``."""
    return node.tags[0] if node.tags else UNTAGGED


GROUPERS: dict[GroupBy, Grouper] = {GroupBy.FOLDER: by_folder, GroupBy.TAG: by_tag}


def grouper(group_by: GroupBy | Grouper) -> Grouper:
    """The grouping function for ``group_by`` (``folder``, ``tag`` or a function; checked by
    ``PlanOptions``)."""
    return group_by if callable(group_by) else GROUPERS[group_by]


def _group_names(graph: DbtGraph, nodes: list[Node], group_of: Grouper) -> dict[str, str]:
    names: dict[str, str] = {}
    for node in nodes:
        name = group_of(node)
        if not isinstance(name, str) or not name:
            raise DbtflowError(
                f"The grouping gave {name!r} for {node.unique_id}.", "return a non-empty group name."
            )
        # Folders of another package are its own: `staging` there is not the root's `staging`.
        if group_of is by_folder and node.package_name != graph.project_name:
            name = f"{node.package_name}__{name}"
        names[node.unique_id] = name
    return names


def _cycle_error(cycle: list[str], witness: dict[tuple[str, str], tuple[str, str]]) -> DbtflowError:
    """``cycle`` is ``[g1, g2, ..., g1]`` where each group feeds the next one."""
    steps = []
    for parent, child in pairwise(cycle):
        parent_node, child_node = witness[(parent, child)]
        steps.append(f"{parent_node} (group {parent}) feeds {child_node} (group {child})")
    loop = " -> ".join(cycle)
    return DbtflowError(
        f"The grouping makes a cycle between groups {loop}: " + "; ".join(steps) + ".",
        "group those nodes differently (for example put them in the same group), or pass a group_by "
        "function that keeps each group's inputs in earlier groups.",
    )


def plan_grouped(
    graph: DbtGraph, selected: frozenset[str], group_by: GroupBy | Grouper = GroupBy.FOLDER
) -> TaskPlan:
    """Plan one task per group of the selected buildable nodes; see the module docstring."""
    group_of = grouper(group_by)
    buildable = [n for n in graph.buildable() if n.unique_id in selected]
    group = _group_names(graph, buildable, group_of)
    parents_of: dict[str, set[str]] = {g: set() for g in group.values()}
    witness: dict[tuple[str, str], tuple[str, str]] = {}
    for node in buildable:
        child = group[node.unique_id]
        for parent_id in graph.build_parents(node.unique_id):
            parent = group.get(parent_id)
            if parent is not None and parent != child:
                parents_of[child].add(parent)
                witness.setdefault((parent, child), (parent_id, node.unique_id))
    try:
        order = list(TopologicalSorter(parents_of).static_order())
    except CycleError as exc:
        raise _cycle_error(list(exc.args[1]), witness) from None

    ancestors: dict[str, set[str]] = {}
    for name in order:
        ancestors[name] = set().union(*({p, *ancestors[p]} for p in parents_of[name]))

    members: dict[str, list[str]] = {name: [] for name in order}
    for node in buildable:
        members[group[node.unique_id]].append(node.unique_id)
    own_test_tasks: list[TaskSpec] = []
    taken: set[str] = set()
    task_id = {name: unique_task_id(safe_id(name), taken) for name in order}
    for unit_test in graph.unit_tests():
        if unit_test.unique_id in selected and unit_test.attached_node in group:
            members[group[unit_test.attached_node]].append(unit_test.unique_id)
    for test in graph.tests():
        if test.unique_id not in selected:
            continue
        groups = {group[p] for p in graph.build_parents(test.unique_id) if p in group}
        home = next((g for g in groups if groups - {g} <= ancestors[g]), None)
        if home is not None:
            members[home].append(test.unique_id)
            continue
        own_test_tasks.append(
            TaskSpec(
                task_id=unique_task_id(safe_id(f"test__{test.name}"), taken),
                kind=TaskKind.TEST,
                nodes=(test.unique_id,),
                upstream=tuple(sorted(task_id[g] for g in groups)),
            )
        )
    specs = [
        TaskSpec(
            task_id=task_id[name],
            kind=TaskKind.INVOCATION,
            nodes=tuple(members[name]),
            upstream=tuple(sorted(task_id[p] for p in parents_of[name])),
            group=name,
        )
        for name in order
    ]
    return TaskPlan(pattern="grouped", tasks=topological([*specs, *own_test_tasks]), selected=selected)
