"""The trigger that waits, in the triggerer, for a node's result from the streamed dbt invocation.

Streamed node tasks start directly in the triggerer (``start_from_trigger``) as soon as their DAG
run starts (trigger rule ``always``), so a node that is waiting holds no worker slot, and a node's
task ends within a feed interval of dbt finishing the node, however deep the node is in the DAG.
When dbt finishes the node, the trigger writes the node's log lines to the task log and ends the
task itself (success or failure, with retries honoured) without a worker. When an upstream task
did not succeed, it ends the task ``skipped``, as ``dbt build`` skips the node. Only when the node
must be built on its own (a retry, a clear after the run, a dead dbt process) does the task go to
a worker. The waiting tasks of a run share one reader of the state database and of the run's
Airflow task states (``dbtflow.streaming.feed``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import (
    BaseTrigger,
    TaskFailedEvent,
    TaskSkippedEvent,
    TaskSuccessEvent,
    TriggerEvent,
)

from dbtflow.airflow import node_assets, triggerer_cache, triggerer_wake
from dbtflow.airflow.publish import end_event
from dbtflow.airflow.task_states import read_task_states
from dbtflow.airflow.upstream_failed import upstream_failed_event
from dbtflow.monitoring.asset_emissions import ASSET_RESOURCE_TYPES, unemitted_builds
from dbtflow.monitoring.history import History
from dbtflow.project.task_results import TaskResults, failed_nodes
from dbtflow.state.invocations import InvocationInfo, InvocationState
from dbtflow.state.results import StoredResult
from dbtflow.state.store import StateStore
from dbtflow.streaming.consumer import Action, Decision, Upstream, Watch, decide_from
from dbtflow.streaming.feed import RunFeed, run_feed
from dbtflow.streaming.verdict import verdict

# In Airflow's trigger runner (which imports this module before it starts a dbtflow trigger),
# deserialize each DAG version once rather than once per trigger, and hand a fired trigger's
# event on within a fraction of a second rather than at the runner's next one-second tick.
triggerer_cache.install()
triggerer_wake.install()


def _identity(
    trigger: BaseTrigger, dag_id: str | None, run_id: str | None, try_number: int | None
) -> tuple[str, str, int]:
    """The DAG run and try of the trigger's task: given explicitly, or from its task instance."""
    ti = trigger.task_instance
    dag_id = dag_id or (ti.dag_id if ti is not None else None)
    run_id = run_id or (ti.run_id if ti is not None else None)
    try_number = try_number or (ti.try_number if ti is not None else None)
    if dag_id is None or run_id is None or try_number is None:
        raise RuntimeError(f"{type(trigger).__name__} needs its task instance (dag_id, run_id, try_number)")
    return dag_id, run_id, int(try_number)


class NodeResultTrigger(BaseTrigger):
    """Wait for the results of ``nodes`` in the shared state, then end or resume the task.

    ``end_task`` is true when the task started in the triggerer: the trigger then ends the task
    itself. When a running task deferred (``end_task`` false), the trigger resumes it instead.
    """

    def __init__(
        self,
        nodes: list[str],
        main_node: str | None = None,
        producer_task_id: str | None = None,
        state_url: str | None = None,
        poll_interval: float = 0.5,
        upstream: list[str] | None = None,
        end_task: bool = True,
        dag_id: str | None = None,
        run_id: str | None = None,
        try_number: int | None = None,
        asset_alias: str | None = None,
    ) -> None:
        super().__init__()
        self.nodes = list(nodes)
        self.main_node = main_node
        #: The run's asset alias: the task emits its node's asset event when it ends here.
        self.asset_alias = asset_alias
        self.producer_task_id = producer_task_id
        self.state_url = state_url
        self.poll_interval = poll_interval
        self.upstream = list(upstream or [])
        self.end_task = end_task
        self.dag_id = dag_id
        self.run_id = run_id
        self.try_number = try_number

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "nodes": self.nodes,
                "main_node": self.main_node,
                "producer_task_id": self.producer_task_id,
                "state_url": self.state_url,
                "poll_interval": self.poll_interval,
                "upstream": self.upstream,
                "end_task": self.end_task,
                "dag_id": self.dag_id,
                "run_id": self.run_id,
                "try_number": self.try_number,
                "asset_alias": self.asset_alias,
            },
        )

    def _identity(self) -> tuple[str, str, int]:
        return _identity(self, self.dag_id, self.run_id, self.try_number)

    async def _with_assets(
        self, event: TriggerEvent, store: StateStore, results: list[StoredResult], try_number: int
    ) -> TriggerEvent:
        """``event`` carrying the asset events of the nodes it reports built (``node_assets``), or,
        where they cannot be carried (no dbtflow handler in this triggerer, a relation not
        recorded), the event that resumes the task on a worker to emit them there."""
        if not self.asset_alias or not isinstance(event, TaskSuccessEvent):
            return event
        on_worker = TriggerEvent({"action": Action.REPORT.value})
        if not node_assets.supported():
            return on_worker
        dag_id, run_id, _ = self._identity()
        ids = [r.result.unique_id for r in results]
        uris = await asyncio.to_thread(store.relations_of, dag_id, run_id, ids)
        built = {
            r.result.unique_id
            for r in results
            if r.result.status == "success" and r.result.unique_id.split(".", 1)[0] in ASSET_RESOURCE_TYPES
        }
        if built - set(uris):
            return on_worker
        ti = self.task_instance
        facts = {
            "dag_id": dag_id,
            "run_id": run_id,
            "task_id": getattr(ti, "task_id", None),
            "try_number": try_number,
        }
        invocations = {r.result.unique_id: r.invocation_id for r in results}
        events = node_assets.asset_events([r.result for r in results], uris, facts, invocations)
        if events:
            carried: Any = {"events": events, "alias": self.asset_alias}
            event.xcoms = {**(event.xcoms or {}), node_assets.MARKER: carried}
        return event

    async def run(self) -> AsyncIterator[TriggerEvent]:
        dag_id, run_id, try_number = self._identity()
        store = StateStore(self.state_url)
        async with run_feed(
            store,
            dag_id,
            run_id,
            self.nodes,
            self.producer_task_id,
            self.poll_interval,
            lambda: read_task_states(dag_id, run_id),
        ) as feed:
            event = await self._outcome(store, feed, try_number)
        yield event
        # Airflow's runner queued the event before asking for the next one: hand it on soon.
        triggerer_wake.fired()

    async def _outcome(self, store: StateStore, feed: RunFeed, try_number: int) -> TriggerEvent:
        """Wait on the feed until the task can end (or must run alone); the event that says so."""
        watch = Watch()
        wanted, seen, again, every = frozenset(self.nodes), 0, False, None
        while True:
            # Woken only when what this decision reads changed, or (again) at the next reading.
            snapshot = await feed.next(wanted, after=seen, any_newer=again, task_states_every_s=every)
            seen, dead_before = snapshot.version, len(watch.seen_dead)
            decision: Decision = decide_from(
                snapshot.states,
                self.nodes,
                try_number,
                watch,
                main_node=self.main_node,
                upstream=Upstream(
                    tuple(self.upstream),
                    snapshot.task_states,
                    self.producer_task_id,
                    task_states_unread=feed.reads_task_states and snapshot.task_states is None,
                ),
            )
            if decision.action is Action.WAIT:
                if decision.needs_task_states:
                    feed.want_task_states()
                # A death seen for the first time is believed on the next reading, even if it
                # holds the same; task states asked for come with the next reading.
                again = decision.needs_task_states or len(watch.seen_dead) > dead_before
                every = decision.task_states_every_s
                continue
            again, every = False, None
            if decision.action is Action.REPORT:
                ids = [r.id for r in decision.results]
                if not await asyncio.to_thread(store.consume, ids, try_number):
                    continue
                if not self.end_task:
                    return TriggerEvent({"action": Action.REPORT.value})
                # One log record per node: a record per line cost the trigger runner's event
                # loop seconds when hundreds of tasks ended at once.
                for stored in decision.results:
                    if stored.log:
                        self.log.info("%s", "\n".join(stored.log))
                results = decision.node_results
                failure = failed_nodes(results, heading="dbt reported failures:")
                ended = end_event(TaskResults.of(results, failure=failure), self.log, table=False)
                return await self._with_assets(ended, store, list(decision.results), try_number)
            if decision.action is Action.SKIP:
                if not self.end_task:
                    return TriggerEvent({"action": Action.SKIP.value, "message": decision.message})
                self.log.warning("%s", decision.message)
                return upstream_failed_event() if decision.upstream_failed else TaskSkippedEvent()
            if decision.action is Action.FAIL:
                if decision.dead is not None:
                    await asyncio.to_thread(store.mark_died, decision.dead, decision.message)
                if not self.end_task:
                    return TriggerEvent({"action": Action.FAIL.value, "message": decision.message})
                self.log.error("%s", decision.message)
                return TaskFailedEvent()
            return TriggerEvent({"action": Action.RUN_ALONE.value})


class InvocationTrigger(BaseTrigger):
    """Attach the producer task to a live dbt invocation of its DAG run, without a worker.

    If a live invocation claims the producer's nodes (the local runner starts one ahead of the
    task), the trigger waits for it to end and ends the task with its results; so it does with an
    invocation of this task try that has already ended. Otherwise it resumes the task on a
    worker, which runs dbt itself.
    """

    def __init__(
        self,
        nodes: list[str],
        state_url: str | None = None,
        poll_interval: float = 0.5,
        owned_elsewhere: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.nodes = list(nodes)
        self.state_url = state_url
        self.poll_interval = poll_interval
        self.owned_elsewhere = list(owned_elsewhere or [])

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "nodes": self.nodes,
                "state_url": self.state_url,
                "poll_interval": self.poll_interval,
                "owned_elsewhere": self.owned_elsewhere,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        dag_id, run_id, try_number = _identity(self, None, None, None)
        store = StateStore(self.state_url)
        states = await asyncio.to_thread(store.node_states, dag_id, run_id, self.nodes)
        attached = sorted({h.id for h in states.holders.values() if h.alive})
        if not attached:
            attached = await asyncio.to_thread(self._ran_for_this_try, store, dag_id, run_id, try_number)
        if not attached:
            yield TriggerEvent({"action": "build"})
            triggerer_wake.fired()
            return
        self.log.info("Attached to the running dbt invocation %s.", ", ".join(attached))
        # Wait on the invocations themselves: their claims end node by node, before they finish.
        while True:
            infos = [await asyncio.to_thread(store.invocation, inv_id) for inv_id in attached]
            if not any(info is not None and info.alive for info in infos):
                break
            await asyncio.sleep(self.poll_interval)
        # Judge from the state as it stands now: an invocation writes its final state before its
        # process exits, so a reading taken after it was seen gone shows that state.
        infos = [await asyncio.to_thread(store.invocation, inv_id) for inv_id in attached]
        run_results = await asyncio.to_thread(store.results_of_run, dag_id, run_id)
        judged = verdict(run_results, self.nodes, attached, self.owned_elsewhere)
        stopped = _stopped(infos)
        for info in infos:
            if info is not None and info.state == InvocationState.RUNNING:
                await asyncio.to_thread(store.mark_died, info.id, info.describe_death())
        why = [*stopped, *([] if judged.ok else [judged.message()])]
        yield end_event(TaskResults.of(judged.results, failure="\n".join(why) or None), self.log)
        triggerer_wake.fired()

    def _ran_for_this_try(self, store: StateStore, dag_id: str, run_id: str, try_number: int) -> list[str]:
        """The invocations started for this task try that have already ended: ``dbtflow run``'s
        head start runs dbt under the producer's try before Airflow creates the DAG run, and on a
        loaded machine a small project is built before this trigger first looks. The task then
        ends with that invocation's results, as when it attached to it alive; building again
        would build twice, and without the failed nodes whose tasks had already ended (their
        dependants then errored instead of ending upstream_failed, 2026-12-04)."""
        if self.task_instance is None:
            return []
        task_id = self.task_instance.task_id
        return sorted(
            inv.id
            for inv in store.invocations_of_run(dag_id, run_id)
            if inv.task_id == task_id and inv.try_number == try_number and not inv.alive
        )


def _stopped(infos: list[InvocationInfo | None]) -> list[str]:
    """Why each invocation that did not end well stopped."""
    lines = []
    for info in infos:
        if info is None:
            continue
        if info.state in (InvocationState.RUNNING, InvocationState.DIED):
            lines.append(f"The dbt invocation {info.id} stopped: {info.describe_death()}.")
        elif info.state == InvocationState.FAILED:
            lines.append(f"dbt failed: {info.error}")
    return lines


class AssetsOwedTrigger(BaseTrigger):
    """Start of the ``dbt_assets`` teardown (``dbtflow.airflow.assets``): end it here when every
    successful build of the run has had its asset event, else resume it on a worker to emit them."""

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        dag_id, run_id, _ = _identity(self, None, None, None)
        owed = await asyncio.to_thread(lambda: len(unemitted_builds(History(), dag_id, run_id)))
        if owed:
            self.log.info("%d build(s) of this run have no asset event yet: emitting them on a worker.", owed)
            yield TriggerEvent({"owed": owed})
            triggerer_wake.fired()
            return
        self.log.info("Every build of this run had its asset event from the task that built it.")
        yield TaskSuccessEvent(xcoms={"return_value": 0})
        triggerer_wake.fired()
