"""One reader of the shared state per DAG run, for every task of the run waiting in one process.

A streamed run of a 1000-model project has 1000 node tasks waiting in the triggerer at once. If
each polled the state database on its own, the triggerer would run thousands of queries a second
and fall behind, and tasks would end late. Instead, the waiting tasks of a run subscribe to one
``RunFeed``: it reads the states of all their nodes in one query per interval and hands each
subscriber the reading (a ``StateReading``); a subscriber only ever sees readings that
include its own nodes.
The same reading also takes the Airflow states of the run's tasks, through a function the
Airflow side passes in (this package imports no Airflow), since streamed tasks apply their
upstream tasks' trigger rule themselves (see ``dbtflow.streaming.consumer``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from dbtflow.state.results import NodeStates
from dbtflow.state.store import StateStore

#: Reads the Airflow task states of the feed's DAG run (task id -> state); may raise.
TaskStatesReader = Callable[[], Mapping[str, str | None]]
#: How often the feed reads the run's task states (they decide only what waits on other tasks).
TASK_STATES_EVERY_S = 2.0


@dataclass(frozen=True)
class StateReading:
    """The states of the nodes the feed was asked for, as read at one moment."""

    version: int
    #: The nodes watched when it was read (its states cover the whole run).
    nodes: frozenset[str]
    states: NodeStates
    error: BaseException | None = None
    #: The Airflow states of the run's tasks, read right after ``states``; ``None``: not read.
    task_states: Mapping[str, str | None] | None = None


class RunFeed:
    """Reads the states of one DAG run's watched nodes, one query per ``interval``."""

    def __init__(
        self,
        store: StateStore,
        dag_id: str,
        run_id: str,
        producer_task_id: str | None,
        interval: float,
        read_task_states: TaskStatesReader | None = None,
    ) -> None:
        self.store = store
        self.read_task_states = read_task_states
        self.dag_id, self.run_id, self.producer_task_id = dag_id, run_id, producer_task_id
        self.interval = interval
        self.watched: Counter[str] = Counter()
        self.reading = StateReading(0, frozenset(), NodeStates({}, {}))
        self.changed = asyncio.Condition()
        self.reader: asyncio.Task[None] | None = None
        self.task_states: dict[str, str | None] | None = None
        self.task_states_at = 0.0
        #: A subscriber's decision needs the task states: the next reading reads them.
        self.task_states_wanted = False

    async def _read(self) -> None:
        while +self.watched:
            nodes = frozenset(+self.watched)
            try:
                # Task states first: node states read after them are at least as new. The other way
                # round, a reading could hold node states from before dbt_build recorded a node and
                # task states from after it ended, and a task with nothing upstream then built its
                # node alone though dbt had built it (2 of 1000 models, 2026-12-03).
                task_states = await self._task_states()
                states = await asyncio.to_thread(
                    self.store.node_states, self.dag_id, self.run_id, None, self.producer_task_id
                )
                reading = StateReading(self.reading.version + 1, nodes, states, task_states=task_states)
            except Exception as exc:  # every subscriber sees the error, as if it had queried itself
                reading = StateReading(self.reading.version + 1, nodes, self.reading.states, exc)
            async with self.changed:
                self.reading = reading
                self.changed.notify_all()
            await asyncio.sleep(self.interval)

    @property
    def reads_task_states(self) -> bool:
        return self.read_task_states is not None

    def want_task_states(self) -> None:
        """Ask for the run's task states in the next reading (see ``Decision.needs_task_states``)."""
        self.task_states_wanted = True

    async def _task_states(self) -> Mapping[str, str | None] | None:
        """The run's task states when a subscriber asked for them, read at most every
        ``TASK_STATES_EVERY_S``: in Airflow's triggerer each reading is a round trip through the
        triggerer's supervisor to the execution API (about 50 ms of its time on 2026-12-03). They
        decide only for nodes that no live invocation is building, so while dbt runs no task asks
        and none is read; a reading younger than the interval is handed on to every reading."""
        if self.read_task_states is None:
            return None
        now = time.monotonic()
        if self.task_states is not None and now - self.task_states_at < TASK_STATES_EVERY_S:
            return self.task_states
        if not self.task_states_wanted:
            return None
        self.task_states_wanted = False
        self.task_states = dict(await asyncio.to_thread(self.read_task_states))
        self.task_states_at = now
        return self.task_states

    async def next(self, nodes: frozenset[str], after: int) -> StateReading:
        """The first reading newer than version ``after`` that covers ``nodes``."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.reading.version > after and nodes <= self.reading.nodes)
            if self.reading.error is not None:
                raise self.reading.error
            return self.reading


_FEEDS: dict[tuple[int, str, str, str, str | None], RunFeed] = {}


@asynccontextmanager
async def run_feed(
    store: StateStore,
    dag_id: str,
    run_id: str,
    nodes: Sequence[str],
    producer_task_id: str | None,
    interval: float,
    read_task_states: TaskStatesReader | None = None,
) -> AsyncIterator[RunFeed]:
    """Subscribe ``nodes`` to the feed of their DAG run in this event loop (started on demand)."""
    loop = asyncio.get_running_loop()
    key = (id(loop), store.url, dag_id, run_id, producer_task_id)
    feed = _FEEDS.get(key)
    if feed is None:
        feed = _FEEDS[key] = RunFeed(store, dag_id, run_id, producer_task_id, interval, read_task_states)
    elif feed.read_task_states is None:
        feed.read_task_states = read_task_states
    feed.watched.update(nodes)
    if feed.reader is None or feed.reader.done():
        feed.reader = asyncio.create_task(feed._read(), name=f"dbtflow-feed-{dag_id}-{run_id}")
    try:
        yield feed
    finally:
        feed.watched.subtract(nodes)
        if not +feed.watched and _FEEDS.get(key) is feed:
            del _FEEDS[key]
