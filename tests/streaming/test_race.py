"""The "false failure" race, reproduced deterministically: a reader sees the dbt invocation's row
while it is still ``running``, and by the time it checks the process, dbt has recorded its
results, written its final state and exited. The reader must not call that a death.

A real SQLite state store and a real child process standing for dbt; the window is forced by a
``StateStore`` whose ``invocation()`` lets the invocation finish between reading the row and
returning it."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.triggers.base import TaskFailedEvent, TaskSuccessEvent, TriggerEvent

from dbtflow.airflow import triggers
from dbtflow.project.results import NodeResult
from dbtflow.state.invocations import InvocationInfo, InvocationState
from dbtflow.state.store import StateStore
from dbtflow.state.task_try import TaskTry
from dbtflow.streaming.consumer import Action, Watch, decide

DAG, RUN = "race_dag", "manual__race"
NODE = "model.race.orders"
PRODUCER = "dbt_build"


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A real process standing for dbt; killed and reaped at the end if still there."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def _finish(store: StateStore, invocation_id: str, child: subprocess.Popen[bytes]) -> None:
    """What dbt's invocation does as it ends: record the node's result, write its final state,
    then exit (here: the process is killed and reaped, so its pid is gone)."""
    store.record_result(invocation_id, DAG, RUN, NodeResult(NODE, "success", execution_time=0.5), ["built"])
    store.finish_invocation(invocation_id, InvocationState.SUCCESS)
    child.kill()
    child.wait()


def test_the_producer_attached_to_an_invocation_that_ends_during_a_read_succeeds(
    tmp_path: Path, child: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    _, claimed = StateStore(url).start_invocation(TaskTry(DAG, RUN, PRODUCER, 1), [NODE], pid=child.pid)
    assert claimed == [NODE]
    window: list[InvocationInfo] = []

    class FinishingWhileRead(StateStore):
        """On the first read of the invocation that shows it ``running``, the invocation ends
        before the (now stale) row is returned: row read while running, process gone at the
        liveness check."""

        def invocation(self, invocation_id: str) -> InvocationInfo | None:
            row = super().invocation(invocation_id)
            if row is not None and row.state == InvocationState.RUNNING and not window:
                window.append(row)
                _finish(self, invocation_id, child)
            return row

    monkeypatch.setattr(triggers, "StateStore", FinishingWhileRead)

    trigger = triggers.InvocationTrigger(nodes=[NODE], state_url=url, poll_interval=0.05)
    trigger.task_instance = SimpleNamespace(  # as dbtflow's triggerer sets it
        dag_id=DAG, run_id=RUN, task_id=PRODUCER, map_index=-1, try_number=1
    )

    async def first_event() -> TriggerEvent:
        async for event in trigger.run():
            return event
        raise AssertionError("the trigger ended without an event")

    event = asyncio.run(asyncio.wait_for(first_event(), timeout=30))
    assert window, "the window was never reached: the trigger did not read the running invocation"
    assert child.poll() is not None, "the process standing for dbt should be gone"
    assert not isinstance(event, TaskFailedEvent), "a finished invocation was taken for a dead one"
    assert isinstance(event, TaskSuccessEvent), event
    assert event.xcoms is not None
    summary: Any = event.xcoms["return_value"]
    assert summary["nodes"][NODE]["status"] == "success" and summary["failed"] == []


def test_a_waiting_task_believes_a_death_on_the_second_reading_only(
    tmp_path: Path, child: subprocess.Popen[bytes]
) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    invocation_id, _ = store.start_invocation(TaskTry(DAG, RUN, PRODUCER, 1), [NODE], pid=child.pid)
    watch = Watch()

    def reading() -> tuple[Action, str]:
        decision = decide(store, DAG, RUN, [NODE], 1, watch, main_node=NODE)
        return decision.action, decision.message

    # The holder is seen building the node.
    assert reading() == (Action.WAIT, "")
    assert watch.seen_alive == {invocation_id}
    # dbt's process is gone while its row still says running (it has not written its state yet,
    # or it wrote it just after this row was read): not believed yet.
    child.kill()
    child.wait()
    held = store.node_states(DAG, RUN, [NODE]).holders[NODE]
    assert held.state == "running" and not held.alive
    assert reading() == (Action.WAIT, ""), "a death must not be believed on the first reading"
    assert watch.seen_dead == {invocation_id}
    # The next reading shows what the invocation wrote before it exited: its result and state.
    store.record_result(invocation_id, DAG, RUN, NodeResult(NODE, "success"), ["built"])
    store.finish_invocation(invocation_id, InvocationState.SUCCESS)
    decision = decide(store, DAG, RUN, [NODE], 1, watch, main_node=NODE)
    assert decision.action is Action.REPORT
    assert [r.status for r in decision.node_results] == ["success"]


def test_a_death_seen_on_two_readings_fails_the_waiting_task(
    tmp_path: Path, child: subprocess.Popen[bytes]
) -> None:
    """The counterpart: when the second reading still shows it running, it died."""
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    store.start_invocation(TaskTry(DAG, RUN, PRODUCER, 1), [NODE], pid=child.pid)
    watch = Watch()
    assert decide(store, DAG, RUN, [NODE], 1, watch, main_node=NODE).action is Action.WAIT
    child.kill()
    child.wait()
    assert decide(store, DAG, RUN, [NODE], 1, watch, main_node=NODE).action is Action.WAIT
    decision = decide(store, DAG, RUN, [NODE], 1, watch, main_node=NODE)
    assert decision.action is Action.FAIL
    assert f"pid {child.pid}" in decision.message and "is gone" in decision.message


def test_a_death_confirmed_by_a_waiting_task_is_recorded_for_every_later_reader(
    tmp_path: Path, child: subprocess.Popen[bytes]
) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    invocation_id, _ = store.start_invocation(TaskTry(DAG, RUN, PRODUCER, 1), [NODE], pid=child.pid)
    watch = Watch()
    assert decide(store, DAG, RUN, [NODE], 1, watch, main_node=NODE).action is Action.WAIT
    child.kill()  # killed: no final state written
    child.wait()
    assert decide(store, DAG, RUN, [NODE], 1, watch, main_node=NODE).action is Action.WAIT
    confirmed = decide(store, DAG, RUN, [NODE], 1, watch, main_node=NODE)
    assert confirmed.action is Action.FAIL and confirmed.dead == invocation_id
    store.mark_died(invocation_id, confirmed.message)
    info = store.invocation(invocation_id)
    assert info is not None and info.state == "died" and info.finished_at is not None
    assert "is gone" in info.describe_death()
    # Its claim no longer holds the node: a new invocation may build it.
    _, claimed = store.start_invocation(TaskTry(DAG, RUN, "orders", 2), [NODE])
    assert claimed == [NODE]
