"""Operators that run dbt for a DAG's tasks.

- ``DbtNodeOperator``: one model, seed or snapshot (with its tests), or a set of tests. Streamed,
  it starts in the triggerer when the DAG run starts (trigger rule ``always``; it applies its
  upstream tasks' ``all_success`` itself, see ``dbtflow.streaming.consumer``) and reflects the
  producer's result for its nodes; otherwise (or on a retry, or when nobody is building its
  nodes) it builds them alone on a worker, from the cached manifest.
- ``DbtProducerOperator``: the one dbt invocation of a streamed per_model DAG run. It fails when
  ``dbt build`` would: a node failed, or dbt reported a result no task owns (a project hook).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowRescheduleException, AirflowSkipException
from airflow.triggers.base import StartTriggerArgs

from dbtflow.airflow.event_time import left_to_own_tasks
from dbtflow.airflow.operator_base import DbtOperatorBase
from dbtflow.airflow.publish import publish
from dbtflow.airflow.state_aware import (
    STATE_AWARE_TRIGGER_RULE,
    StateAwareSelection,
    full_refresh,
    node_task_selection,
)
from dbtflow.airflow.task_log import DbtEventLogger
from dbtflow.airflow.task_states import read_task_states
from dbtflow.airflow.task_try import task_try
from dbtflow.airflow.together import consume_own, plan_together
from dbtflow.airflow.triggers import InvocationTrigger, NodeResultTrigger
from dbtflow.monitoring.builds import builds_recorder, prepare_state_aware, record_unchanged
from dbtflow.project.manifest import load_graph
from dbtflow.project.results import NodeResult
from dbtflow.project.task_results import TaskResults
from dbtflow.state.manifests import keep_project_manifest
from dbtflow.state.store import StateStore
from dbtflow.state.task_try import TaskTry
from dbtflow.streaming.consumer import FAILED_TASK_STATES, TERMINAL_TASK_STATES, Action, Upstream
from dbtflow.streaming.producer import (
    ResultsCallback,
)
from dbtflow.streaming.verdict import verdict
from dbtflow.streaming.waiting import decide_once, wait_for_live_holders

#: How soon a streamed task run by `dag.test()` looks again when it has to wait for other tasks.
SEQUENTIAL_WAIT_S = 0.2


class DbtNodeOperator(DbtOperatorBase):
    """Build one dbt node (and its tests), or run a set of tests.

    ``streamed``: the node is built by the DAG run's producer (``producer_task_id``) and this task
    reports its result; it starts in the triggerer and needs a worker only to build alone.
    """

    def __init__(
        self,
        *,
        main_node: str | None = None,
        streamed: bool = False,
        producer_task_id: str | None = None,
        poll_interval: float = 0.5,
        state_aware: bool = False,
        **kwargs: Any,
    ) -> None:
        if streamed:
            # Wait from the start of the run, not from the end of the upstream tasks: see the
            # module docstring of dbtflow.streaming.consumer.
            kwargs.setdefault("trigger_rule", "always")
        elif state_aware:
            # An upstream task left out (skipped) must not skip this one: dbtflow.airflow.state_aware.
            kwargs.setdefault("trigger_rule", STATE_AWARE_TRIGGER_RULE)
        super().__init__(**kwargs)
        self.main_node = main_node
        self.streamed = streamed
        #: Not streamed: leave out its nodes when unchanged (``dbtflow.airflow.state_aware``).
        self.state_aware = state_aware and not streamed
        self.producer_task_id = producer_task_id
        self.poll_interval = poll_interval
        #: The DAG's node alias, through which the task emits its node's asset event when it
        #: succeeds, in the triggerer or on a worker (set by ``dbtflow.airflow.assets.add_node_assets``).
        self.asset_alias: str | None = None
        if streamed:
            self.start_from_trigger = True

    @property
    def start_trigger_args(self) -> StartTriggerArgs | None:
        """Read when the DAG is serialized, once every dependency of the task is set."""
        if not self.streamed:
            return None
        return StartTriggerArgs(
            trigger_cls=f"{NodeResultTrigger.__module__}.{NodeResultTrigger.__qualname__}",
            trigger_kwargs={
                "nodes": self.unique_ids,
                "main_node": self.main_node,
                "producer_task_id": self.producer_task_id,
                "state_url": self.state_url,
                "poll_interval": self.poll_interval,
                "upstream": sorted(self.upstream_task_ids),
                "asset_alias": self.asset_alias,
            },
            next_method="execute_complete",
            # A streamed task waits from the start of the run: its execution_timeout bounds its
            # own build (alone, on a worker), not the wait for the run's dbt build.
            timeout=None,
        )

    @start_trigger_args.setter
    def start_trigger_args(self, value: StartTriggerArgs | None) -> None:
        """Set by Airflow's deserialization only: the value is derived, so it is not kept."""

    def execute(self, context: Any) -> Any:
        if not self.streamed:
            return self._build_alone(context)
        # A streamed task only starts on a worker when start_from_trigger was bypassed: `dag.test()`
        # runs the scheduled tasks one at a time, in no particular order, and a deferral would block
        # it until the trigger fires. So wait by rescheduling: the tasks it waits for run meanwhile.
        return self._follow(context, sequential=True)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        action = (event or {}).get("action")
        if action == Action.FAIL.value:
            raise AirflowException(str((event or {}).get("message")))
        if action == Action.SKIP.value:
            raise AirflowSkipException(str((event or {}).get("message")))
        if action == Action.RUN_ALONE.value:
            return self._build_alone(context)
        return self._follow(context)

    def _upstream(self, task: TaskTry) -> Upstream:
        try:
            task_states: dict[str, str | None] | None = read_task_states(task.dag_id, task.run_id)
        except Exception as exc:  # without them, only dbt's side decides (as before streaming early)
            self.log.warning("Could not read the run's task states (%s); deciding from dbt's alone.", exc)
            task_states = None
        return Upstream(tuple(sorted(self.upstream_task_ids)), task_states, self.producer_task_id)

    def _follow(self, context: Any, *, sequential: bool = False) -> Any:
        task = task_try(context)
        decision = decide_once(
            self._store(), task, self.unique_ids, main_node=self.main_node, upstream=self._upstream(task)
        )
        if decision.action is Action.REPORT:
            for stored in decision.results:
                for line in stored.log:
                    self.log.info("%s", line)
            return self._report_own(context, decision.node_results)
        if decision.action is Action.FAIL:
            raise AirflowException(decision.message)
        if decision.action is Action.SKIP:
            raise AirflowSkipException(decision.message)
        if decision.action is Action.WAIT:
            if sequential:
                raise AirflowRescheduleException(datetime.now(UTC) + timedelta(seconds=SEQUENTIAL_WAIT_S))
            self._defer_until_results(task)
        return self._build_alone(context)

    def _defer_until_results(self, task: TaskTry) -> None:
        self.defer(
            trigger=NodeResultTrigger(
                nodes=self.unique_ids,
                main_node=self.main_node,
                producer_task_id=self.producer_task_id,
                state_url=self.state_url,
                poll_interval=self.poll_interval,
                upstream=sorted(self.upstream_task_ids),
                end_task=False,
                dag_id=task.dag_id,
                run_id=task.run_id,
                try_number=task.try_number,
            ),
            method_name="execute_complete",
            timeout=self.execution_timeout,
        )

    def _build_alone(self, context: Any) -> Any:
        """Build the task's nodes in a dbt invocation of its own, with the nodes of the waiting
        tasks downstream of it (``dbtflow.streaming.together``: one invocation per clear)."""
        task = task_try(context)
        store = self._store()
        left = StateAwareSelection.none()
        if self.state_aware:
            left = node_task_selection(self.project, store, task, self.unique_ids, context, self.log)
            if left.everything(self.unique_ids):
                raise AirflowSkipException(left.skip_message(self.main_node))
        together = plan_together(self, task, store, self.log)
        # Alone, its microbatch model's retry builds only the batches that failed in this run.
        earlier = [] if together.along else store.newest_results(task.dag_id, task.run_id, self.unique_ids)
        to_build = [uid for uid in together.to_build if uid not in left.left_out]
        with self._watched(context, DbtEventLogger(self.log)) as on_event:
            outcome = self._run_claimed(
                task,
                to_build,
                on_event,
                context=context,
                earlier=earlier,
                also_on_results=left.record_builds if self.state_aware else None,
            )
        mine = set(self.unique_ids)
        held = [uid for uid in outcome.held_elsewhere if uid in mine]
        if held:
            self.log.info("Another dbt invocation is building %s; waiting for its results.", ", ".join(held))
            self._defer_until_results(task)
        if outcome.run is not None and outcome.run.error is not None:
            raise AirflowException(f"dbt failed: {outcome.run.error}")
        along = set(together.along)
        # Its own nodes, and whatever else its invocation ran and failed that no task reports (a
        # project hook); the nodes built along are their tasks' to report and consume.
        built = [] if outcome.run is None else outcome.run.results
        results = [*left.results, *(r.result for r in together.reused)]
        results += [r for r in built if r.unique_id in mine or (r.failed and r.unique_id not in along)]
        consume_own(store, task, outcome.invocation_id, mine, together)
        return self._report_own(context, results)

    def _report_own(self, context: Any, results: Sequence[NodeResult]) -> dict[str, Any]:
        """The report; a task that succeeds on a worker emits its nodes' asset events (of the
        newest build in the run, whoever built it) when the DAG emits them."""
        value = self._report(results)
        if self.asset_alias is not None:
            self._emit_own_assets(context, nodes=self.unique_ids)
        return value


class DbtProducerOperator(DbtOperatorBase):
    """Run one ``dbt build`` for a streamed per_model DAG run; node tasks reflect its results.

    The task ends as ``dbt build`` exits: it fails when a node failed (the node's task shows why)
    or when dbt reported a result that no task owns (a failing project hook). A retry builds the
    nodes that have not succeeded in this DAG run, whose tasks still wait for them, and that
    nobody else is building. It emits no asset events: each node task emits its own node's.
    """

    def __init__(
        self,
        *,
        selection: Sequence[str] = (),
        node_tasks: dict[str, str] | None = None,
        state_aware: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("priority_weight", 1000)
        super().__init__(**kwargs)
        self.selection = list(selection)
        #: Leave out unchanged nodes (``dbtflow.project.state_aware``); a run whose conf has
        #: ``{"full_refresh": true}`` builds them all (and records their builds).
        self.state_aware = state_aware
        #: The task that reports each node (unique id -> task id).
        self.node_tasks = dict(node_tasks or {})

    def start_in_triggerer(self) -> None:
        """Start in the triggerer: attach to a live invocation of the run if one exists, else build.

        The local runner uses this after starting the run's invocation ahead of the task, so the
        task needs no worker at all.
        """
        self.start_from_trigger = True
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=f"{InvocationTrigger.__module__}.{InvocationTrigger.__qualname__}",
            trigger_kwargs={
                "nodes": self.unique_ids,
                "state_url": self.state_url,
                "owned_elsewhere": sorted(set(self.node_tasks) - set(self.unique_ids)),
            },
            next_method="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        return self.execute(context)

    def _still_wanted(self, task: TaskTry) -> list[str]:
        """The nodes whose tasks have not ended (a retry must not build for a task that is done)."""
        if not self.node_tasks:
            return list(self.unique_ids)
        try:
            states = read_task_states(task.dag_id, task.run_id)
        except Exception as exc:
            self.log.warning("Could not read the run's task states (%s); building every node.", exc)
            return list(self.unique_ids)
        done = {
            uid for uid, task_id in self.node_tasks.items() if states.get(task_id) in TERMINAL_TASK_STATES
        }
        # Below a node whose task failed (and is not built again here), dbt would skip: those
        # nodes are left to their own tasks, which end upstream_failed. Built without it, they
        # failed on its missing relation instead (2026-12-04).
        failed = {
            uid for uid, task_id in self.node_tasks.items() if states.get(task_id) in FAILED_TASK_STATES
        }
        below = load_graph(self.project).descendants(failed) - failed if failed else set()
        if (done or below) and task.try_number > 1:
            self.log.info(
                "%d node(s) are left out: their tasks have ended, or a node upstream failed.",
                len(done | below),
            )
        return [uid for uid in self.unique_ids if uid not in done and uid not in below]

    def execute(self, context: Any) -> Any:
        task = task_try(context)
        store = self._store()
        nodes = self._still_wanted(task)
        # A retry leaves a microbatch model with failed batches, and what depends on it, to their
        # own tasks: the model's builds only those batches again.
        left = set() if task.try_number == 1 else left_to_own_tasks(self.project, store, task, nodes)
        nodes = [uid for uid in nodes if uid not in left]
        builds: ResultsCallback | None = None
        if self.state_aware:
            nodes, builds = self._leave_out_unchanged(task, store, nodes, full_refresh=full_refresh(context))
        with self._watched(context, DbtEventLogger(self.log)) as on_event:
            outcome = self._run_claimed(
                task,
                nodes,
                on_event,
                selection=self.selection if len(nodes) == len(self.unique_ids) else None,
                skip_succeeded=True,
                also_on_results=builds,
                context=context,
            )
        if outcome.held_elsewhere:
            wait_for_live_holders(store, task, outcome.held_elsewhere, self.log)
        if outcome.run is not None and outcome.run.error is not None:
            raise AirflowException(f"dbt failed: {outcome.run.error}")
        run_results = store.results_of_run(task.dag_id, task.run_id)
        judged = verdict(
            run_results,
            [u for u in self.unique_ids if u not in left],
            {outcome.invocation_id},
            self.node_tasks,
        )
        failure = None if judged.ok else judged.message()
        if judged.ok:
            keep_project_manifest(self.project, task.dag_id, task.run_id, self.state_url, self.log)
        return publish(
            TaskResults.of(judged.results, failure=failure, summary_on_failure=True),
            self.log,
            ti=context["ti"],
        )

    def _leave_out_unchanged(
        self, task: TaskTry, store: StateStore, nodes: list[str], *, full_refresh: bool
    ) -> tuple[list[str], ResultsCallback]:
        """The nodes a state-aware run builds (the others' tasks end skipped, saying why; all of
        them on a full refresh), and the callback that records what it built."""
        graph = load_graph(self.project)
        plan = prepare_state_aware(
            self.project, graph, task.dag_id, nodes, self.log, full_refresh=full_refresh
        )
        record_unchanged(store, task, plan, nodes)
        return [uid for uid in nodes if uid not in plan.skipped], builds_recorder(task, graph, plan, self.log)
