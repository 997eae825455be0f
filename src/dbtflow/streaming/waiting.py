"""What a streamed task does on a worker about results in the state store: decide from one reading,
and wait for other invocations to finish the nodes they hold.

In the triggerer, a node task waits through ``dbtflow.streaming.feed`` and the trigger. On a
worker (a retry, a deferral that resumed, or ``dag.test()`` running tasks one at a time) the
operator reads the store once and follows ``decide_once``; the producer task, when another live
invocation of its run holds some of its nodes, blocks in ``wait_for_live_holders`` until they
are done, so that it judges the run's results only once they are all in.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from dbtflow.state.store import StateStore
from dbtflow.state.task_try import TaskTry
from dbtflow.streaming.consumer import Action, Decision, Upstream, Watch, decide


def decide_once(
    store: StateStore,
    task: TaskTry,
    nodes: Sequence[str],
    *,
    main_node: str | None = None,
    upstream: Upstream,
) -> Decision:
    """``decide`` for ``task`` from one reading, and record what the decision implies: the
    results it reports are consumed by this try, and an invocation it found dead is ``died``."""
    decision = decide(
        store,
        task.dag_id,
        task.run_id,
        nodes,
        task.try_number,
        Watch(),
        main_node=main_node,
        upstream=upstream,
    )
    if decision.action is Action.REPORT:
        store.consume([r.id for r in decision.results], task.try_number)
    elif decision.action is Action.FAIL and decision.dead is not None:
        store.mark_died(decision.dead, decision.message)
    return decision


def wait_for_live_holders(store: StateStore, task: TaskTry, nodes: Sequence[str], log: Any) -> None:
    """Block while a live invocation of ``task``'s DAG run claims any of ``nodes``, saying so."""
    states = store.node_states(task.dag_id, task.run_id, nodes)
    live = {uid: info for uid, info in states.holders.items() if info.alive}
    if live:
        # Named, so that a reader can check the holder (its pid, its heartbeat) for themselves.
        holders = {f"task {i.task_id} try {i.try_number}, pid {i.pid} on {i.host}" for i in live.values()}
        log.info(
            "%d node(s) are being built by another live dbt invocation of this run (%s); waiting for them.",
            len(live),
            "; ".join(sorted(holders)),
        )
        wait_for_holders(store, task, list(live))


def wait_for_holders(store: StateStore, task: TaskTry, nodes: Sequence[str], poll: float = 1.0) -> None:
    """Block until no live invocation claims any of ``nodes``."""
    while True:
        states = store.node_states(task.dag_id, task.run_id, nodes)
        if not any(info.alive for info in states.holders.values()):
            return
        time.sleep(poll)
