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

A subscriber is woken only by a reading in which something its decision reads has changed: the
newest result of one of its nodes, or the invocation that claims one (its state and liveness);
or, for every subscriber, the producer's liveness, the task states or an error. Waking every
waiting task at every reading cost the triggerer O(tasks x readings): at 1000 nodes, a thousand
decisions every half second that all came out "wait".
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable, Mapping, Sequence
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
        #: What each watched node's decision reads, as of the newest reading, and the version
        #: at which it last changed; what every decision reads, and when that last changed.
        self.node_keys: dict[str, Hashable] = {}
        self.node_changed_at: dict[str, int] = {}
        self.shared_alive = False
        self.shared_task_states: Mapping[str, str | None] | None = None
        self.shared_changed_at = 0
        #: Subscribers waiting for a change of a node (node -> their futures), or for any reading.
        self.waiters: dict[str, set[asyncio.Future[None]]] = {}
        self.any_waiters: set[asyncio.Future[None]] = set()
        #: Subscribers waiting on the task states, and how often each wants them read again.
        self.task_state_waiters: dict[asyncio.Future[None], float] = {}
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
            self._publish(reading)
            await asyncio.sleep(self.interval)

    def _publish(self, reading: StateReading) -> None:
        """Make ``reading`` the newest and wake the subscribers whose inputs it changed."""
        states = reading.states
        # A reading without task states (none asked for) changes nothing: a decision that needs
        # them waits with ``any_newer`` for the next reading, which reads them.
        task_states = self.shared_task_states if reading.task_states is None else reading.task_states
        shared = (states.producer_alive, task_states)
        woken: set[asyncio.Future[None]] = set(self.any_waiters)
        if shared != (self.shared_alive, self.shared_task_states) or reading.error is not None:
            self.shared_alive, self.shared_task_states = shared
            self.shared_changed_at = reading.version
            woken.update(f for futures in self.waiters.values() for f in futures)
        for uid in reading.nodes:
            key = _node_key(states, uid)
            if uid not in self.node_keys or self.node_keys[uid] != key:
                self.node_keys[uid], self.node_changed_at[uid] = key, reading.version
                woken.update(self.waiters.get(uid, ()))
        self.reading = reading
        for future in woken:
            if not future.done():
                future.set_result(None)

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
        and none is read; a reading younger than the interval is handed on to every reading. A
        task waiting on them sets how often they are read again (``Decision.task_states_every_s``:
        slower while it waits for the producer to start dbt, which the state shows first)."""
        if self.read_task_states is None:
            return None
        now = time.monotonic()
        if self.task_states is not None and now - self.task_states_at < TASK_STATES_EVERY_S:
            return self.task_states
        every = min(self.task_state_waiters.values(), default=None)
        if not self.task_states_wanted and (every is None or now - self.task_states_at < every):
            return None
        self.task_states_wanted = False
        self.task_states = dict(await asyncio.to_thread(self.read_task_states))
        self.task_states_at = now
        return self.task_states

    def _changed_since(self, nodes: frozenset[str], after: int) -> bool:
        return self.shared_changed_at > after or any(self.node_changed_at.get(n, 0) > after for n in nodes)

    async def next(
        self,
        nodes: frozenset[str],
        after: int,
        *,
        any_newer: bool = False,
        task_states_every_s: float | None = None,
    ) -> StateReading:
        """The first reading newer than version ``after`` that covers ``nodes`` and in which what
        their decision reads changed since then (any newer reading when ``any_newer``: a decision
        that must be made again on the next reading, whatever it holds). ``task_states_every_s``:
        the caller waits on the task states, so the feed reads them that often until it is woken."""
        while True:
            reading = self.reading
            if (
                reading.version > after
                and nodes <= reading.nodes
                and (any_newer or reading.error is not None or self._changed_since(nodes, after))
            ):
                if reading.error is not None:
                    raise reading.error
                return reading
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if any_newer:
                self.any_waiters.add(future)
            if task_states_every_s is not None:
                self.task_state_waiters[future] = task_states_every_s
            for uid in nodes:
                self.waiters.setdefault(uid, set()).add(future)
            try:
                await future
            finally:
                self.any_waiters.discard(future)
                self.task_state_waiters.pop(future, None)
                for uid in nodes:
                    waiting = self.waiters.get(uid)
                    if waiting is not None:
                        waiting.discard(future)
                        if not waiting:
                            del self.waiters[uid]


def _node_key(states: NodeStates, uid: str) -> Hashable:
    """What a decision reads of one node in ``states`` (``dbtflow.streaming.consumer``): its
    newest result (row and who reported it) and its claiming invocation (state, liveness)."""
    newest = states.newest.get(uid)
    holder = states.holders.get(uid)
    return (
        None if newest is None else (newest.id, newest.consumed_by),
        None if holder is None else (holder.id, holder.state, holder.alive),
    )


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
        # Only this subscriber's nodes are looked at: a whole-Counter check at each of 1000 tasks'
        # ends was O(tasks) each (py-spy, 2026-12-03).
        for uid in nodes:
            feed.watched[uid] -= 1
            if feed.watched[uid] <= 0:
                del feed.watched[uid]
        if not feed.watched and _FEEDS.get(key) is feed:
            del _FEEDS[key]
