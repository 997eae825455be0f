"""The run feed: the waiting tasks of a DAG run share one reader of the state database.

A real SQLite store; the store class is extended only to count its queries."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from dbtflow.project.results import NodeResult
from dbtflow.state.results import NodeStates
from dbtflow.state.store import StateStore
from dbtflow.state.task_try import TaskTry
from dbtflow.streaming.feed import run_feed

INTERVAL = 0.05


class CountingStore(StateStore):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.reads = 0
        self.broken = False

    def node_states(
        self, dag_id: str, run_id: str, unique_ids: Sequence[str] | None, producer_task_id: str | None = None
    ) -> NodeStates:
        self.reads += 1
        if self.broken:
            raise OSError("the state database went away")
        return super().node_states(dag_id, run_id, unique_ids, producer_task_id)


async def _wait_for_result(store: StateStore, node: str) -> NodeResult:
    async with run_feed(store, "dag", "run", [node], None, INTERVAL) as feed:
        version = 0
        while True:
            reading = await feed.next(frozenset([node]), after=version)
            assert node in reading.nodes
            version = reading.version
            if node in reading.states.newest:
                return reading.states.newest[node].result


def test_many_waiting_tasks_share_one_reader_and_each_gets_its_result(tmp_path: Path) -> None:
    store = CountingStore(f"sqlite:///{tmp_path / 'state.db'}")
    nodes = [f"model.p.m{i}" for i in range(200)]

    async def scenario() -> list[NodeResult]:
        waiting = [asyncio.create_task(_wait_for_result(store, node)) for node in nodes]
        invocation_id, _ = store.start_invocation(TaskTry("dag", "run", "dbt_build", 1), nodes)
        for i, node in enumerate(nodes):
            store.record_result(invocation_id, "dag", "run", NodeResult(node, "success", rows_affected=i))
            if i % 50 == 0:
                await asyncio.sleep(3 * INTERVAL)
        return await asyncio.wait_for(asyncio.gather(*waiting), timeout=60)

    results = asyncio.run(scenario())
    assert [r.unique_id for r in results] == nodes
    assert [r.rows_affected for r in results] == list(range(200))
    # One query per interval for all 200 tasks, not one per task and interval.
    assert 1 <= store.reads <= 100, store.reads


def test_a_task_that_joins_late_sees_only_readings_made_after_it_joined(tmp_path: Path) -> None:
    store = CountingStore(f"sqlite:///{tmp_path / 'state.db'}")

    async def scenario() -> tuple[int, int]:
        first = asyncio.create_task(_wait_for_result(store, "model.p.a"))
        await asyncio.sleep(5 * INTERVAL)
        async with run_feed(store, "dag", "run", ["model.p.b"], None, INTERVAL) as feed:
            joined_at = feed.reading.version
            reading = await feed.next(frozenset(["model.p.b"]), after=0)
        first.cancel()
        return joined_at, reading.version

    joined_at, first_seen = asyncio.run(scenario())
    assert joined_at >= 1 and first_seen > joined_at


def test_a_failing_read_reaches_every_waiting_task(tmp_path: Path) -> None:
    store = CountingStore(f"sqlite:///{tmp_path / 'state.db'}")
    store.broken = True

    async def scenario() -> list[BaseException | NodeResult]:
        waiting = [_wait_for_result(store, f"model.p.m{i}") for i in range(5)]
        return await asyncio.gather(*waiting, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, OSError) and "went away" in str(o) for o in outcomes), outcomes
    assert 1 <= store.reads <= 2, store.reads


def test_the_reader_stops_when_the_last_task_stops_waiting(tmp_path: Path) -> None:
    store = CountingStore(f"sqlite:///{tmp_path / 'state.db'}")

    async def scenario() -> int:
        task = asyncio.create_task(_wait_for_result(store, "model.p.a"))
        await asyncio.sleep(5 * INTERVAL)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(3 * INTERVAL)
        reads = store.reads
        await asyncio.sleep(5 * INTERVAL)
        return store.reads - reads

    assert asyncio.run(scenario()) == 0


def test_task_states_are_read_only_when_a_decision_needs_them(tmp_path: Path) -> None:
    """While a live invocation builds a node, its task needs no Airflow task states: none is
    read. A task whose node nobody builds asks for them, and the next reading has them."""
    from dbtflow.streaming.consumer import Action, Decision, Upstream, Watch, decide_from

    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    reads: list[int] = []

    def read_task_states() -> dict[str, str | None]:
        reads.append(1)
        return {"dbt_build": "failed", "upstream": "failed"}

    built, orphan = "model.p.built", "model.p.orphan"

    async def scenario() -> tuple[int, list[Decision]]:
        store.start_invocation(TaskTry("dag", "run", "dbt_build", 1), [built])
        decisions: list[Decision] = []
        async with run_feed(
            store, "dag", "run", [built, orphan], "dbt_build", INTERVAL, read_task_states
        ) as feed:
            version = 0

            async def decide(node: str, watch: Watch, again: bool = True) -> Decision:
                nonlocal version
                reading = await feed.next(frozenset([node]), after=version, any_newer=again)
                version = reading.version
                upstream = Upstream(
                    ("upstream",),
                    reading.task_states,
                    "dbt_build",
                    task_states_unread=reading.task_states is None,
                )
                decision = decide_from(reading.states, [node], 1, watch, main_node=node, upstream=upstream)
                if decision.needs_task_states:
                    feed.want_task_states()
                return decision

            watch = Watch()
            for _ in range(5):
                assert (await decide(built, watch)).action is Action.WAIT
            reads_while_building = len(reads)
            watch = Watch()
            for _ in range(20):
                decisions.append(await decide(orphan, watch))
                if decisions[-1].action is not Action.WAIT:
                    break
        return reads_while_building, decisions

    reads_while_building, decisions = asyncio.run(scenario())
    assert reads_while_building == 0
    assert decisions[0].action is Action.WAIT and decisions[0].needs_task_states
    assert decisions[-1].action is Action.SKIP and "upstream (failed)" in decisions[-1].message
    assert len(reads) == 1


def test_a_waiting_task_is_woken_only_when_its_own_node_changes(tmp_path: Path) -> None:
    """200 tasks wait while one invocation builds their nodes one at a time: each task decides
    on its first reading and again when its own node has a result, not at every reading (which
    cost the triggerer 200 decisions per reading)."""
    from dbtflow.streaming.consumer import Action, Upstream, Watch, decide_from

    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    nodes = [f"model.p.m{i}" for i in range(200)]
    decisions: dict[str, int] = dict.fromkeys(nodes, 0)
    readings = 0

    async def wait_for(node: str) -> None:
        async with run_feed(store, "dag", "run", [node], "dbt_build", INTERVAL) as feed:
            version, watch, again = 0, Watch(), False
            while True:
                reading = await feed.next(frozenset([node]), after=version, any_newer=again)
                version = reading.version
                decisions[node] += 1
                decision = decide_from(reading.states, [node], 1, watch, main_node=node, upstream=Upstream())
                if decision.action is Action.REPORT:
                    return
                assert decision.action is Action.WAIT, decision
                again = decision.needs_task_states

    async def scenario() -> None:
        nonlocal readings
        invocation_id, _ = store.start_invocation(TaskTry("dag", "run", "dbt_build", 1), nodes)
        waiting = [asyncio.create_task(wait_for(node)) for node in nodes]
        await asyncio.sleep(3 * INTERVAL)
        for i, node in enumerate(nodes):
            store.record_result(invocation_id, "dag", "run", NodeResult(node, "success"))
            if i % 20 == 19:
                await asyncio.sleep(2 * INTERVAL)
        await asyncio.wait_for(asyncio.gather(*waiting), timeout=60)

    asyncio.run(scenario())
    # Over ten readings at least were made while the first nodes waited for theirs.
    assert max(decisions.values()) <= 3, sorted(decisions.items(), key=lambda kv: -kv[1])[:5]
    assert sum(decisions.values()) <= 2 * len(nodes) + 20, sum(decisions.values())


def test_a_reading_takes_the_task_states_before_the_node_states(tmp_path: Path) -> None:
    """Node states read after the task states are at least as new: the other order let a reading
    hold node states from before dbt recorded a node and task states from after ``dbt_build``
    ended, and a task with nothing upstream built its node alone though dbt had built it (2 of
    1000 models in a state-aware run, 2026-12-03)."""
    calls: list[str] = []

    class OrderStore(StateStore):
        def node_states(
            self,
            dag_id: str,
            run_id: str,
            unique_ids: Sequence[str] | None,
            producer_task_id: str | None = None,
        ) -> NodeStates:
            calls.append("nodes")
            return super().node_states(dag_id, run_id, unique_ids, producer_task_id)

    def read_task_states() -> dict[str, str | None]:
        calls.append("tasks")
        return {"dbt_build": "success"}

    store = OrderStore(f"sqlite:///{tmp_path / 'state.db'}")

    async def scenario() -> None:
        async with run_feed(
            store, "dag", "run", ["model.p.a"], "dbt_build", INTERVAL, read_task_states
        ) as feed:
            feed.want_task_states()
            version = 0
            for _ in range(3):
                reading = await feed.next(frozenset(["model.p.a"]), after=version, any_newer=True)
                version = reading.version
                if reading.task_states is not None:
                    return

    asyncio.run(scenario())
    # Asked for before the first reading: that reading took the task states, then the nodes'.
    assert calls[:2] == ["tasks", "nodes"], calls
