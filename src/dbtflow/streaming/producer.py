"""Running dbt so that every node's result reaches the shared state as soon as dbt finishes it.

``run_claimed_invocation`` claims the nodes no live invocation is building, runs one dbt
invocation (``dbt build``) over them with dbt's own thread parallelism, and records each node's
result and log lines from dbt's events, on a writer thread so dbt's threads never wait for the
database. A heartbeat thread keeps the invocation visibly alive; if the process dies, the
heartbeat stops and waiting tasks notice.

What else sees dbt's events and results is the caller's: it passes callbacks (``on_event``, and
``on_results`` for each batch of results recorded), so this module imports no monitoring. The
Airflow operators and the local runner pass the log forwarder and the run-time history
(``dbtflow.monitoring``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dbtflow.errors import DbtflowError
from dbtflow.project.config import DbtProject
from dbtflow.project.event_time import EventTimeWindow
from dbtflow.project.events import DbtEvent
from dbtflow.project.graph import DbtGraph
from dbtflow.project.invoke import DbtRun, run_dbt
from dbtflow.project.relations import relation_of, warehouse_of
from dbtflow.project.results import NodeResult
from dbtflow.project.selection import exact_selection, exact_selectors
from dbtflow.state.invocations import HEARTBEAT_EVERY_S, InvocationState
from dbtflow.state.store import StateStore
from dbtflow.state.task_try import TaskTry

#: The node kinds whose builds get an asset event (as ``monitoring.asset_emissions`` counts them).
ASSET_NODE_TYPES = ("model", "seed", "snapshot")

#: Node log lines kept per node (the newest ones when a node logs more).
MAX_NODE_LOG_LINES = 500

_log = logging.getLogger(__name__)

#: Receives each dbt event (the task log, a deadline watch, the log forwarder).
EventCallback = Callable[[DbtEvent], None]
#: Receives the node results recorded in the store, a batch at a time (the run-time history).
ResultsCallback = Callable[[Sequence[NodeResult]], None]


@dataclass
class ClaimedInvocation:
    """A registered dbt invocation with its claim on nodes, and its dbt run once it ran."""

    task: TaskTry
    invocation_id: str
    claimed: list[str]
    #: Nodes another live invocation is building, or that already succeeded (left alone).
    held_elsewhere: list[str] = field(default_factory=list)
    run: DbtRun | None = None


def node_log_line(event: DbtEvent) -> str:
    prefix = "" if event.level in ("info", "debug") else f"[{event.level.upper()}] "
    return f"{prefix}{event.msg}"


class _Recorder:
    """Collects node log lines and writes results to the store on its own thread."""

    def __init__(
        self,
        store: StateStore,
        task: TaskTry,
        invocation_id: str,
        on_event: EventCallback | None,
        on_results: ResultsCallback | None,
    ):
        self.store = store
        self.task = task
        self.invocation_id = invocation_id
        self.on_event = on_event
        self.on_results = on_results
        self.lines: dict[str, list[str]] = {}
        self.lock = threading.Lock()
        self.queue: queue.Queue[tuple[NodeResult, list[str]] | None] = queue.Queue()
        self.recorded: list[NodeResult] = []
        self.in_history: set[str] = set()
        self.thread = threading.Thread(target=self._write, name="dbtflow-results", daemon=True)
        self.thread.start()

    def event(self, event: DbtEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)
        if event.unique_id and event.levelno >= 20:
            with self.lock:
                lines = self.lines.setdefault(event.unique_id, [])
                lines.append(node_log_line(event))
                if len(lines) > MAX_NODE_LOG_LINES:
                    del lines[0]

    def result(self, result: NodeResult) -> None:
        with self.lock:
            lines = self.lines.pop(result.unique_id, [])
        self.queue.put((result, lines))

    def _write(self) -> None:
        """Write each result to the store as it comes, and pass them on (to the run-time history)
        in batches (so the history keeps what a build finished even if its process is killed
        later)."""
        done = False
        while not done:
            batch = [self.queue.get()]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            if None in batch:
                done = True
            items = [item for item in batch if item is not None]
            results = []
            for result, _ in items:
                if result.unique_id not in self.in_history:  # dbt reports some skips twice
                    self.in_history.add(result.unique_id)
                    results.append(result)
            # The history first: a node task that sees its result in the store may emit its
            # asset event and mark the build's history row emitted (dbtflow.airflow.node_assets).
            if results:
                _pass_on(self.on_results, results)
            for result, lines in items:
                self.store.record_result(
                    self.invocation_id, self.task.dag_id, self.task.run_id, result, lines
                )
                self.recorded.append(result)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()


class _Heartbeat:
    def __init__(self, store: StateStore, invocation_id: str) -> None:
        self.store = store
        self.invocation_id = invocation_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="dbtflow-heartbeat", daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_EVERY_S):
            self.store.heartbeat(self.invocation_id)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def _pass_on(on_results: ResultsCallback | None, results: Sequence[NodeResult]) -> None:
    """Give ``on_results`` the results; a callback that fails never stops the recording."""
    if on_results is None:
        return
    try:
        on_results(results)
    except Exception as exc:
        _log.warning("Could not pass on %d node result(s): %s", len(results), exc)


def wait_for_other_runs(
    store: StateStore, task: TaskTry, invocation_id: str, log: Any = _log, poll_s: float = 1.0
) -> None:
    """Block while a live invocation of another run of the DAG writes its models.

    Airflow's ``max_active_runs=1`` (dbtflow's default) already keeps a second run from starting;
    this also covers a cleared older run, ``max_active_runs`` raised by the user, and runs of one
    DAG made by different Airflow deployments (``dbtflow run`` and a scheduler) that share the
    state store. A dead invocation stops blocking once its heartbeat is stale.
    """
    told: set[str] = set()
    while True:
        blockers = store.start_writing(task.dag_id, task.run_id, invocation_id)
        if not blockers:
            return
        for other in blockers:
            if other.id not in told:
                told.add(other.id)
                log.info(
                    "Run %s of %s is running dbt (task %s, pid %s on %s); waiting for it to finish so "
                    "that two runs never write the same models at once.",
                    other.run_id,
                    task.dag_id,
                    other.task_id,
                    other.pid,
                    other.host,
                )
        time.sleep(poll_s)


@contextmanager
def exclusive_invocation(store: StateStore, task: TaskTry, log: Any = _log) -> Iterator[str]:
    """Register a dbt invocation for ``task`` that claims no node (the single and grouped patterns),
    keep it alive while the body runs dbt, and start the body only when no other run of the DAG writes."""
    invocation_id, _ = store.start_invocation(task, [])
    heartbeat = _Heartbeat(store, invocation_id)
    state = InvocationState.FAILED
    try:
        wait_for_other_runs(store, task, invocation_id, log)
        yield invocation_id
        state = InvocationState.SUCCESS
    finally:
        heartbeat.close()
        store.finish_invocation(invocation_id, state)


def claim_nodes(
    store: StateStore,
    task: TaskTry,
    nodes: Sequence[str],
    *,
    skip_succeeded: bool = False,
    pid: int | None = None,
) -> ClaimedInvocation:
    """Register an invocation for ``task`` and claim the nodes that nobody else is building.

    ``skip_succeeded`` leaves out nodes that already succeeded in this DAG run (the producer uses
    it; a task building its own node never does). ``pid`` is the process that will run dbt, when
    it is not this one.
    """
    invocation_id, claimed = store.start_invocation(task, nodes, skip_succeeded=skip_succeeded, pid=pid)
    claimed_set = set(claimed)
    held = [uid for uid in nodes if uid not in claimed_set]
    outcome = ClaimedInvocation(task=task, invocation_id=invocation_id, claimed=claimed, held_elsewhere=held)
    if not claimed:
        store.finish_invocation(invocation_id, InvocationState.SUCCESS)
    return outcome


def run_invocation(
    project: DbtProject,
    graph: DbtGraph,
    manifest: Callable[[], Any],
    store: StateStore,
    outcome: ClaimedInvocation,
    *,
    selection: Sequence[str] | None = None,
    threads: int | None = None,
    on_event: EventCallback | None = None,
    on_results: ResultsCallback | None = None,
    event_time: EventTimeWindow | None = None,
) -> ClaimedInvocation:
    """Run the claimed invocation (``dbt build`` over its claimed nodes), streaming each result
    into ``store`` as dbt finishes it.

    ``manifest`` returns dbt's parsed ``Manifest``; it is only called when there is something
    to build (loading it imports dbt). ``selection`` is the dbt flags that select exactly the
    requested nodes (the DAG's own selection); it is used when every node was claimed, otherwise
    the claimed nodes are selected one by one. ``on_event`` gets every dbt event; ``on_results``
    every result recorded (once per node), in batches, the last one after dbt ended.
    ``event_time`` is the DAG run's data interval, for microbatch models.
    """
    if not outcome.claimed:
        return outcome
    task, invocation_id = outcome.task, outcome.invocation_id
    flags = _build_flags(graph, outcome, selection)
    recorder = _Recorder(store, task, invocation_id, on_event, on_results)
    heartbeat = _Heartbeat(store, invocation_id)
    state = InvocationState.FAILED
    error: str | None = "dbtflow stopped before dbt finished"
    try:
        _record_relations(project, graph, store, outcome)
        wait_for_other_runs(store, task, invocation_id)
        outcome.run = run_dbt(
            project,
            ["build", *flags],
            manifest=manifest(),
            on_event=recorder.event,
            on_result=lambda result: None if _is_ephemeral(graph, result) else recorder.result(result),
            threads=threads,
            event_time=event_time,
        )
        if outcome.run.error is None:
            state, error = InvocationState.SUCCESS, None
        else:
            state, error = InvocationState.FAILED, outcome.run.error
    finally:
        heartbeat.close()
        recorder.close()
        _record_missing(store, task, invocation_id, outcome, recorder.recorded, graph, on_results)
        store.finish_invocation(invocation_id, state, error)
    return outcome


def _record_relations(
    project: DbtProject, graph: DbtGraph, store: StateStore, outcome: ClaimedInvocation
) -> None:
    """Record the asset URIs of the claimed nodes that have a relation, for their tasks (see
    ``dbtflow.state.relations``). A project whose relations cannot be named records none; the
    run's asset task then says why."""
    try:
        warehouse = warehouse_of(project)
    except DbtflowError:
        return
    uris = {}
    for uid in outcome.claimed:
        node = graph.nodes.get(uid)
        relation = (
            None
            if node is None or node.resource_type not in ASSET_NODE_TYPES
            else relation_of(warehouse, node)
        )
        if relation is not None:
            uris[uid] = (relation.uri, relation.airflow_uri)
    store.record_relations(outcome.task.dag_id, outcome.task.run_id, uris)


def _is_ephemeral(graph: DbtGraph, result: NodeResult) -> bool:
    """dbt 1.11 in-process reports a "success" for an ephemeral model it compiled into others;
    it has no task and no relation, and is not in ``run_results.json``: not a result to keep."""
    node = graph.nodes.get(result.unique_id)
    return node is not None and node.is_ephemeral


def _build_flags(graph: DbtGraph, outcome: ClaimedInvocation, selection: Sequence[str] | None) -> list[str]:
    """Select the claimed nodes: the DAG's own selection minus what is held elsewhere, or the
    claimed nodes one by one, whichever lists fewer nodes (dbt matches each selector against
    every node, so long lists are slow on big projects)."""
    if selection is None or len(outcome.held_elsewhere) > len(outcome.claimed):
        return exact_selection(graph, outcome.claimed)
    if not outcome.held_elsewhere:
        return list(selection)
    held, _ = exact_selectors(graph, outcome.held_elsewhere)
    return [*selection, "--exclude", *held]


def run_claimed_invocation(
    project: DbtProject,
    graph: DbtGraph,
    manifest: Callable[[], Any],
    store: StateStore,
    task: TaskTry,
    nodes: Sequence[str],
    *,
    selection: Sequence[str] | None = None,
    threads: int | None = None,
    on_event: EventCallback | None = None,
    on_results: ResultsCallback | None = None,
    skip_succeeded: bool = False,
    event_time: EventTimeWindow | None = None,
) -> ClaimedInvocation:
    """``claim_nodes`` then ``run_invocation``, in this process."""
    outcome = claim_nodes(store, task, nodes, skip_succeeded=skip_succeeded)
    return run_invocation(
        project,
        graph,
        manifest,
        store,
        outcome,
        selection=selection,
        threads=threads,
        on_event=on_event,
        on_results=on_results,
        event_time=event_time,
    )


def _record_missing(
    store: StateStore,
    task: TaskTry,
    invocation_id: str,
    outcome: ClaimedInvocation,
    recorded: list[NodeResult],
    graph: DbtGraph,
    on_results: ResultsCallback | None,
) -> None:
    """Record results that dbt reported only at the end (in ``run_results.json``)."""
    if outcome.run is None:
        return
    seen = {r.unique_id for r in recorded}
    missing = [
        result
        for result in outcome.run.results
        if result.unique_id not in seen and not _is_ephemeral(graph, result)
    ]
    for result in missing:
        store.record_result(invocation_id, task.dag_id, task.run_id, result)
    if missing:
        _pass_on(on_results, missing)
