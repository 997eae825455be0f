"""What a task that builds alone builds in its one invocation (``dbtflow.streaming.together``):
its own nodes and the nodes of the waiting tasks downstream of it, on a small DAG

    a -> b -> d        (c: another upstream of d; e: downstream of d)
    c ------> d -> e

built from dbtflow's own types; liveness is real (a live invocation carries this process's pid).
"""

from __future__ import annotations

import itertools
import os
import socket
import time

from dbtflow.project.results import NodeResult
from dbtflow.state.invocations import InvocationInfo, InvocationState
from dbtflow.state.results import NodeStates, StoredResult
from dbtflow.streaming.together import NodeTask, build_together

_IDS = itertools.count(1)


def _task(task_id: str, *upstream: str, tests: bool = True) -> NodeTask:
    nodes = (f"model.p.{task_id}", f"test.p.not_null_{task_id}") if tests else (f"model.p.{task_id}",)
    return NodeTask(task_id, frozenset(upstream), nodes)


TASKS = {
    "a": _task("a"),
    "b": _task("b", "a"),
    "c": _task("c"),
    "d": _task("d", "b", "c"),
    "e": _task("e", "d"),
    "dbt_assets": NodeTask("dbt_assets", frozenset({"a", "b", "c", "d", "e"}), None),
}
DOWNSTREAM_OF_A = {"b", "d", "e", "dbt_assets"}


def _stored(uid: str, status: str, consumed_by: int | None = None) -> StoredResult:
    return StoredResult(
        id=next(_IDS),
        invocation_id="inv-1",
        result=NodeResult(unique_id=uid, status=status),
        log=[],
        consumed_by=consumed_by,
    )


def _live() -> InvocationInfo:
    now = time.time()
    return InvocationInfo(
        id="inv-live",
        run_id="r",
        task_id="x",
        try_number=1,
        host=socket.gethostname(),
        pid=os.getpid(),
        started_at=now,
        heartbeat_at=now,
        finished_at=None,
        state=InvocationState.RUNNING,
        error=None,
    )


NOTHING = NodeStates({}, {})


def _plan(task_states: dict[str, str | None], states: NodeStates = NOTHING) -> tuple[list[str], list[str]]:
    together = build_together(TASKS["a"], DOWNSTREAM_OF_A, TASKS, task_states, states)
    return together.to_build, together.tasks


CLEARED = {"a": "running", "b": None, "c": "success", "d": "scheduled", "e": "deferred", "dbt_assets": None}


def test_a_clear_builds_the_waiting_downstream_in_one_invocation() -> None:
    to_build, tasks = _plan(CLEARED)
    assert tasks == ["b", "d", "e"]
    assert to_build[:2] == ["model.p.a", "test.p.not_null_a"]
    assert set(to_build) == {n for t in "abde" for n in TASKS[t].unique_ids or ()}


def test_clearing_one_task_builds_just_its_node() -> None:
    ended = {**CLEARED, "b": "success", "d": "success", "e": "success"}
    assert _plan(ended) == (["model.p.a", "test.p.not_null_a"], [])


def test_a_task_with_an_upstream_yet_to_be_built_elsewhere_and_its_dependants_stay() -> None:
    # c was cleared too (waiting for its own upstream elsewhere): d reads it, so d and e stay.
    assert _plan({**CLEARED, "c": "deferred"})[1] == ["b"]
    # A task that runs on a worker now (building alone) is left alone, and so is what follows it.
    assert _plan({**CLEARED, "b": "running"})[1] == []


def test_a_node_held_by_a_live_invocation_is_not_claimed_nor_what_follows() -> None:
    held = NodeStates({}, {"model.p.d": _live()})
    assert _plan(CLEARED, held)[1] == ["b"]
    # Its own node held elsewhere: it builds nothing along (it waits for that invocation).
    own_held = NodeStates({}, {"test.p.not_null_a": _live()})
    assert _plan(CLEARED, own_held)[1] == []


def test_only_nodes_without_a_reusable_result_are_built() -> None:
    newest = {
        # Recorded by a killed invocation, reported by no task: only the tests run.
        "model.p.a": _stored("model.p.a", "success"),
        # Reported by an earlier try (consumed), skipped by dbt, or failed: built again.
        "model.p.b": _stored("model.p.b", "success", consumed_by=1),
        "model.p.d": _stored("model.p.d", "skipped"),
        "model.p.e": _stored("model.p.e", "error"),
    }
    together = build_together(TASKS["a"], DOWNSTREAM_OF_A, TASKS, CLEARED, NodeStates(newest, {}))
    assert [r.result.unique_id for r in together.reused] == ["model.p.a"]
    assert together.own == ["test.p.not_null_a"]
    assert {"model.p.b", "model.p.d", "model.p.e"} <= set(together.along)
