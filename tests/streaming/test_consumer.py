"""The rules a streamed node task follows (``dbtflow.streaming.consumer.decide_from``), table by
table: the results of its nodes, who claims them, the producer task's Airflow state and the
Airflow states of its upstream tasks.

The states are built directly from dbtflow's own types (``NodeStates``, ``StoredResult``,
``InvocationInfo``); the liveness of an invocation is real: a live one carries this process's pid,
a dead one the pid of a process that has exited (or, from another machine, an old heartbeat).
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from dbtflow.project.results import NodeResult
from dbtflow.state.invocations import STALE_AFTER_S, InvocationInfo, InvocationState
from dbtflow.state.results import NodeStates, StoredResult
from dbtflow.streaming.consumer import Action, Upstream, Watch, decide_from

MODEL = "model.shop.orders"
TEST = "test.shop.not_null_orders_id"
UNIT = "unit_test.shop.orders.test_orders_totals"
NODES = (MODEL, TEST)
PRODUCER = "dbt_build"
UP = "stg_orders"
UP2 = "stg_customers"


def _exited_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


GONE_PID = _exited_pid()
_IDS = itertools.count(1)


def result(uid: str, status: str, *, consumed_by: int | None = None) -> StoredResult:
    return StoredResult(
        id=next(_IDS),
        invocation_id="inv-producer",
        result=NodeResult(unique_id=uid, status=status, message=f"{status} of {uid}"),
        log=[f"log of {uid}"],
        consumed_by=consumed_by,
    )


def invocation(
    inv_id: str = "inv-producer", *, state: str = "running", how: str = "alive", error: str | None = None
) -> InvocationInfo:
    """``how``: ``alive`` (this process), ``gone`` (a local pid that exited), ``silent`` (another
    machine, no heartbeat for twice the stale limit)."""
    now = time.time()
    # The cases are built when pytest collects them, possibly minutes before they run: a live
    # invocation's heartbeat must still be fresh then.
    host, pid, heartbeat = socket.gethostname(), os.getpid(), now + 3600
    if how == "gone":
        pid = GONE_PID
    elif how == "silent":
        host, heartbeat = socket.gethostname() + "-elsewhere", now - 2 * STALE_AFTER_S
    return InvocationInfo(
        id=inv_id,
        run_id="run-1",
        task_id=PRODUCER,
        try_number=1,
        host=host,
        pid=pid,
        started_at=now - 60,
        heartbeat_at=heartbeat,
        finished_at=None if state == "running" else now,
        state=InvocationState(state),
        error=error,
    )


def states(
    results: Sequence[StoredResult] = (),
    holders: dict[str, InvocationInfo] | None = None,
    *,
    producer_alive: bool = False,
) -> NodeStates:
    return NodeStates(
        newest={r.result.unique_id: r for r in results},
        holders=dict(holders or {}),
        producer_alive=producer_alive,
    )


def upstream(producer: str | None = "success", **ups: str | None) -> Upstream:
    task_states: dict[str, str | None] = {PRODUCER: producer, **ups}
    return Upstream(task_ids=tuple(sorted(ups)), task_states=task_states, producer_task_id=PRODUCER)


@dataclass
class Case:
    why: str
    states: NodeStates
    expect: Action
    nodes: tuple[str, ...] = NODES
    main_node: str | None = MODEL
    try_number: int = 1
    upstream: Upstream = field(default_factory=upstream)
    watch: Watch = field(default_factory=Watch)
    #: The results the decision must carry, in order (unique ids).
    results: tuple[str, ...] = ()
    #: Text the decision's message must contain.
    message: str = ""


def seen(*, alive: tuple[str, ...] = (), dead: tuple[str, ...] = ()) -> Watch:
    return Watch(seen_alive=set(alive), seen_dead=set(dead))


CASES: dict[str, Case] = {
    # --- REPORT: the task's results are in and count for this try.
    "fresh results of the model and its test are reported": Case(
        "every node has a fresh result",
        states([result(MODEL, "success"), result(TEST, "pass")]),
        Action.REPORT,
        results=(MODEL, TEST),
    ),
    "a result this same try already consumed is reported again": Case(
        "consumed_by == try_number: the try reported them before and may again (it restarted)",
        states([result(MODEL, "success", consumed_by=2), result(TEST, "pass", consumed_by=2)]),
        Action.REPORT,
        try_number=2,
        results=(MODEL, TEST),
    ),
    "a failed model is reported at once, its tests are not waited for": Case(
        "dbt skips a failed model's tests, so nothing more will come",
        states([result(MODEL, "error")], {TEST: invocation()}),
        Action.REPORT,
        results=(MODEL,),
    ),
    "a failed unit test with its model skipped is reported": Case(
        "dbt skipped the model because its unit test failed: every node has a result, one failed",
        states([result(MODEL, "skipped"), result(UNIT, "fail")]),
        Action.REPORT,
        nodes=(MODEL, UNIT),
        results=(MODEL, UNIT),
    ),
    "a failed data test next to a built model is reported": Case(
        "the model succeeded, its test failed: all in, one failed",
        states([result(MODEL, "success"), result(TEST, "fail")]),
        Action.REPORT,
        results=(MODEL, TEST),
    ),
    "a test task's results are reported without a main node": Case(
        "a task of tests only (no main node) reports when all are in",
        states([result(TEST, "pass")]),
        Action.REPORT,
        nodes=(TEST,),
        main_node=None,
        results=(TEST,),
    ),
    # --- WAIT: something will still change.
    "a data test still pending under a live claim is waited for": Case(
        "the model is in, a live invocation builds its test",
        states([result(MODEL, "success")], {TEST: invocation()}),
        Action.WAIT,
    ),
    "a node claimed by a live invocation is waited for": Case(
        "a live invocation builds the model",
        states([], {MODEL: invocation(), TEST: invocation()}),
        Action.WAIT,
    ),
    "a holder seen alive, now seen dead once, is waited for": Case(
        "a death is believed on the second reading only (it may have written its final state since)",
        states([], {MODEL: invocation(how="silent")}),
        Action.WAIT,
        watch=seen(alive=("inv-producer",)),
    ),
    "a holder seen alive, now gone (local pid), seen dead once, is waited for": Case(
        "as above, with the process gone from this machine",
        states([], {MODEL: invocation(how="gone")}),
        Action.WAIT,
        watch=seen(alive=("inv-producer",)),
    ),
    "the producer not scheduled yet is waited for": Case(
        "the producer task has not ended and has no live invocation: it will build the node",
        states(),
        Action.WAIT,
        upstream=upstream(None, **{UP: "success"}),
    ),
    "the producer scheduled is waited for": Case(
        "as above, scheduled", states(), Action.WAIT, upstream=upstream("scheduled", **{UP: "success"})
    ),
    "the producer running without an invocation yet is waited for": Case(
        "as above, running (still starting dbt)",
        states(),
        Action.WAIT,
        upstream=upstream("running", **{UP: "success"}),
    ),
    "the producer up for retry is waited for": Case(
        "its next try builds the nodes whose tasks still wait",
        states(),
        Action.WAIT,
        upstream=upstream("up_for_retry", **{UP: "success"}),
    ),
    "an upstream task still deferred is waited for": Case(
        "all_success: an upstream task has not ended",
        states(),
        Action.WAIT,
        upstream=upstream("success", **{UP: "deferred", UP2: "success"}),
    ),
    "an upstream task not scheduled yet is waited for": Case(
        "all_success: no state yet is not an end",
        states(),
        Action.WAIT,
        upstream=upstream("failed", **{UP: None}),
    ),
    "an upstream task up for retry is waited for": Case(
        "all_success: up_for_retry is not an end",
        states(),
        Action.WAIT,
        upstream=upstream("success", **{UP: "up_for_retry"}),
    ),
    # --- RUN_ALONE: nobody will build the node, and it may be built.
    "all upstream tasks succeeded and the producer ended: run alone": Case(
        "the producer ended without building the node (e.g. a clear after the run)",
        states(),
        Action.RUN_ALONE,
        upstream=upstream("success", **{UP: "success", UP2: "success"}),
    ),
    "the producer failed, a root task runs alone": Case(
        "a failed producer will not build it; no upstream task to wait for",
        states(),
        Action.RUN_ALONE,
        upstream=upstream("failed"),
    ),
    "a result an earlier try consumed does not count for a retry": Case(
        "try 2 must build again what try 1 already reported",
        states([result(MODEL, "error", consumed_by=1), result(TEST, "pass", consumed_by=1)]),
        Action.RUN_ALONE,
        try_number=2,
        upstream=upstream("failed", **{UP: "success"}),
    ),
    "a skipped result alone does not count: with upstream succeeded, run alone": Case(
        "dbt skipped the node, but the upstream tasks succeeded since (a retry): build it",
        states([result(MODEL, "skipped"), result(TEST, "skipped")]),
        Action.RUN_ALONE,
        upstream=upstream("failed", **{UP: "success"}),
    ),
    "the task states unknown: run alone": Case(
        "without Airflow's side only dbt's decides, and no one builds the node",
        states(),
        Action.RUN_ALONE,
        upstream=Upstream(task_ids=(UP,), task_states=None, producer_task_id=PRODUCER),
    ),
    "a dead holder this task never saw alive is not its failure": Case(
        "only an invocation this task saw building its node can fail it",
        states([], {MODEL: invocation(how="gone")}),
        Action.RUN_ALONE,
        upstream=upstream("failed", **{UP: "success"}),
    ),
    "a live producer that does not claim the node does not hold the task": Case(
        "the producer's invocation is alive but builds other nodes (it left this one out)",
        states(producer_alive=True),
        Action.RUN_ALONE,
        upstream=upstream("running", **{UP: "success"}),
    ),
    # --- SKIP: an upstream task did not succeed (dbt build would skip the node).
    "an upstream task failed: skip": Case(
        "all_success fails: the node is not built, as dbt skips it",
        states(),
        Action.SKIP,
        upstream=upstream("failed", **{UP: "failed", UP2: "success"}),
        message=f"{UP} (failed)",
    ),
    "an upstream task skipped: skip": Case(
        "a skipped upstream task did not succeed either",
        states(),
        Action.SKIP,
        upstream=upstream("success", **{UP: "skipped"}),
        message=f"{UP} (skipped)",
    ),
    "dbt skipped the node and its upstream failed: skip with dbt's skipped results": Case(
        "the skipped results are carried for the task's summary",
        states([result(MODEL, "skipped"), result(TEST, "skipped")]),
        Action.SKIP,
        upstream=upstream("failed", **{UP: "upstream_failed", UP2: "failed"}),
        results=(MODEL, TEST),
        message=f"{UP2} (failed), {UP} (upstream_failed)",
    ),
    # --- FAIL: the invocation this task saw building its node stopped without its result.
    "a holder seen dead twice (silent) fails the task": Case(
        "second reading still running after it was seen gone: believed dead",
        states([], {MODEL: invocation(how="silent")}),
        Action.FAIL,
        watch=seen(alive=("inv-producer",), dead=("inv-producer",)),
        message="sent no heartbeat",
    ),
    "a holder seen dead twice (pid gone) fails the task": Case(
        "as above, its process gone from this machine",
        states([], {MODEL: invocation(how="gone")}),
        Action.FAIL,
        watch=seen(alive=("inv-producer",), dead=("inv-producer",)),
        message=f"pid {GONE_PID}",
    ),
    "a holder marked died fails the task at once": Case(
        "died is a final state written by whoever found it dead: no second reading needed",
        states([], {MODEL: invocation(state="died", how="gone", error="killed by signal 9")}),
        Action.FAIL,
        watch=seen(alive=("inv-producer",)),
        message="killed by signal 9",
    ),
    "a holder that ended success without the node's result fails the task": Case(
        "it ended and will never report the node",
        states([result(MODEL, "success")], {TEST: invocation(state="success")}),
        Action.FAIL,
        watch=seen(alive=("inv-producer",)),
        message=f"ended (success) without a result for {TEST}",
    ),
    "a holder that ended failed without the node's result fails the task": Case(
        "as above, with the invocation's error",
        states([], {MODEL: invocation(state="failed", error="Compilation Error in model")}),
        Action.FAIL,
        watch=seen(alive=("inv-producer",)),
        message=f"ended (failed: Compilation Error in model) without a result for {MODEL}",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decide_from(name: str) -> None:
    case = CASES[name]
    decision = decide_from(
        case.states, case.nodes, case.try_number, case.watch, main_node=case.main_node, upstream=case.upstream
    )
    assert decision.action is case.expect, f"{name}: {case.why}; got {decision}"
    assert tuple(r.result.unique_id for r in decision.results) == case.results, case.why
    assert case.message in decision.message, (case.why, decision.message)
    if case.expect is Action.FAIL:
        assert "Retry or clear this task" in decision.message
    if case.expect is Action.REPORT:
        assert decision.failed == [r for r in decision.node_results if r.status in ("error", "fail")]


def test_every_action_is_covered() -> None:
    assert {case.expect for case in CASES.values()} == set(Action)


def test_a_holder_seen_alive_is_believed_dead_on_the_second_reading_only() -> None:
    watch = Watch()
    kwargs: dict[str, Any] = {"main_node": MODEL, "upstream": upstream("running")}
    alive = decide_from(states([], {MODEL: invocation()}), NODES, 1, watch, **kwargs)
    assert alive.action is Action.WAIT and watch.seen_alive == {"inv-producer"} and not watch.seen_dead
    dead = states([], {MODEL: invocation(how="gone")})
    first = decide_from(dead, NODES, 1, watch, **kwargs)
    assert first.action is Action.WAIT and watch.seen_dead == {"inv-producer"}
    second = decide_from(dead, NODES, 1, watch, **kwargs)
    assert second.action is Action.FAIL and "is gone" in second.message


def test_the_first_live_holder_is_remembered_even_when_another_node_is_done() -> None:
    watch = Watch()
    other = invocation("inv-other")
    decision = decide_from(
        states([result(MODEL, "success")], {TEST: other}),
        NODES,
        1,
        watch,
        main_node=MODEL,
        upstream=upstream(),
    )
    assert decision.action is Action.WAIT and watch.seen_alive == {"inv-other"}


@pytest.mark.parametrize(
    ("name", "upstream_failed"),
    [
        ("an upstream task failed: skip", True),
        ("an upstream task skipped: skip", False),
        ("dbt skipped the node and its upstream failed: skip with dbt's skipped results", True),
    ],
)
def test_a_skip_says_whether_an_upstream_task_failed(name: str, upstream_failed: bool) -> None:
    """Airflow's all_success: a failed upstream task makes ``upstream_failed``, a skipped one
    only ``skipped`` (skip propagation); the trigger ends the task with that state."""
    case = CASES[name]
    decision = decide_from(
        case.states, case.nodes, case.try_number, case.watch, main_node=case.main_node, upstream=case.upstream
    )
    assert decision.action is Action.SKIP and decision.upstream_failed is upstream_failed


def test_a_reading_without_task_states_asks_for_them_instead_of_running_alone() -> None:
    case = CASES["all upstream tasks succeeded and the producer ended: run alone"]
    unread = Upstream(case.upstream.task_ids, None, case.upstream.producer_task_id, task_states_unread=True)
    decision = decide_from(
        case.states, case.nodes, case.try_number, case.watch, main_node=case.main_node, upstream=unread
    )
    assert decision.action is Action.WAIT and decision.needs_task_states
