"""The per_model pattern: one task per model, seed and snapshot, with dbt's dependencies.

Ephemeral models get no task; dependencies pass through them. A test with one parent runs in
its parent's task (``with_model``), in a task right after it (``after_model``), with every other
test at the end (``at_end``), or not at all (``none``). A test with several parents (for example
``relationships``) always gets its own task after all of its parents.

A model's unit tests gate it, as in ``dbt build``: they run in the model's own task, in the same
dbt invocation and before the model, in every mode but ``none``: dbt skips the model when one
fails, so its task fails and its children do not run. Moving them after the model
(``after_model``, ``at_end``) would build a model whose logic is known to be wrong. The task's
nodes are ``(model, unit tests..., data tests...)``, so the model stays its main node. ``dbt
build`` runs a unit test only as part of its model's job, so a unit test whose model has no task
(not selected, or ephemeral) gets none either: ``dbt build --select unit_test:name`` runs nothing.
``tests="none"`` runs no unit tests either (as ``dbt build --exclude-resource-type unit_test``):
"none" means no tests of any kind; to keep unit tests but drop data tests, leave ``tests`` alone
and ``exclude="resource_type:test"``.
"""

from __future__ import annotations

from dbtflow.plan.model import TaskKind, TaskPlan, TaskSpec, TestMode, topological
from dbtflow.plan.naming import node_task_ids, safe_id, unique_task_id
from dbtflow.project.graph import DbtGraph

PRODUCER_TASK_ID = "dbt_build"
AT_END_TASK_ID = "dbt_test"


def plan_per_model(
    graph: DbtGraph,
    selected: frozenset[str],
    *,
    tests: TestMode = TestMode.WITH_MODEL,
    streamed: bool = True,
) -> TaskPlan:
    """Plan one task per selected buildable node; see the module docstring for tests."""
    buildable = [n for n in graph.buildable() if n.unique_id in selected]
    task_of = node_task_ids(graph, buildable)
    taken = set(task_of.values())
    if streamed:
        taken.add(PRODUCER_TASK_ID)

    single_parent_tests: dict[str, list[str]] = {}
    multi_parent_tests: list[str] = []
    unit_tests_of: dict[str, list[str]] = {}
    if tests is not TestMode.NONE:
        for unit_test in graph.unit_tests():
            if unit_test.unique_id in selected and unit_test.attached_node in task_of:
                unit_tests_of.setdefault(unit_test.attached_node, []).append(unit_test.unique_id)
        for test in graph.tests():
            if test.unique_id not in selected:
                continue
            parents = [p for p in graph.build_parents(test.unique_id) if p in task_of]
            if len(parents) == 1 and len(graph.build_parents(test.unique_id)) == 1:
                single_parent_tests.setdefault(parents[0], []).append(test.unique_id)
            else:
                multi_parent_tests.append(test.unique_id)

    specs: list[TaskSpec] = []
    #: The task a child waits for: the node's task, or its test task in after_model mode.
    gate: dict[str, str] = dict(task_of)
    test_task_of: dict[str, str] = {}
    if tests is TestMode.AFTER_MODEL:
        for uid in single_parent_tests:
            test_task_of[uid] = unique_task_id(f"{task_of[uid]}__tests", taken)
            gate[uid] = test_task_of[uid]

    for node in buildable:
        uid = node.unique_id
        upstream = tuple(sorted({gate[p] for p in graph.build_parents(uid) if p in gate}))
        # The model first (its main node), then its unit tests, which dbt runs before it.
        nodes: tuple[str, ...] = (uid, *unit_tests_of.get(uid, ()))
        if tests is TestMode.WITH_MODEL:
            nodes += tuple(single_parent_tests.get(uid, ()))
        specs.append(
            TaskSpec(
                task_id=task_of[uid],
                kind=TaskKind.NODE,
                nodes=nodes,
                upstream=upstream,
                resource_type=node.resource_type,
            )
        )
        if uid in test_task_of:
            specs.append(
                TaskSpec(
                    task_id=test_task_of[uid],
                    kind=TaskKind.TEST,
                    nodes=tuple(single_parent_tests[uid]),
                    upstream=(task_of[uid],),
                )
            )

    if tests is TestMode.AT_END:
        every_test = sorted({*multi_parent_tests, *(t for ts in single_parent_tests.values() for t in ts)})
        if every_test:
            leaves = sorted(gate.values())
            specs.append(
                TaskSpec(
                    task_id=unique_task_id(AT_END_TASK_ID, taken),
                    kind=TaskKind.TEST,
                    nodes=tuple(every_test),
                    upstream=tuple(leaves),
                )
            )
    else:
        for test_id in multi_parent_tests:
            test = graph.nodes[test_id]
            upstream = tuple(sorted({gate[p] for p in graph.build_parents(test_id) if p in gate}))
            specs.append(
                TaskSpec(
                    task_id=unique_task_id(safe_id(f"test__{test.name}"), taken),
                    kind=TaskKind.TEST,
                    nodes=(test_id,),
                    upstream=upstream,
                )
            )

    producer = None
    if streamed and specs:
        producer = PRODUCER_TASK_ID
        # The at_end test task runs its own `dbt test`; every other node is built by the producer.
        streamed_nodes = tuple(
            uid
            for spec in specs
            if not (spec.kind is TaskKind.TEST and tests is TestMode.AT_END)
            for uid in spec.nodes
        )
        specs.append(TaskSpec(task_id=PRODUCER_TASK_ID, kind=TaskKind.INVOCATION, nodes=streamed_nodes))
    return TaskPlan(pattern="per_model", tasks=topological(specs), selected=selected, producer=producer)
