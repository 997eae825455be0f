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

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowRescheduleException, AirflowSkipException
from airflow.triggers.base import StartTriggerArgs

from dbtflow.airflow.deadlines import model_deadline_watch
from dbtflow.airflow.task_log import DbtEventLogger
from dbtflow.airflow.task_states import read_task_states
from dbtflow.airflow.triggers import InvocationTrigger, NodeResultTrigger
from dbtflow.monitoring.deadlines import ModelDeadlines
from dbtflow.project.config import DbtProject
from dbtflow.project.manifest import load_graph, load_manifest
from dbtflow.project.report import failure_summary, results_table
from dbtflow.project.results import NodeResult, summarize
from dbtflow.streaming.consumer import TERMINAL_TASK_STATES, Action, Upstream, Watch, decide
from dbtflow.streaming.producer import BuildOutcome, RunKey, build_claimed
from dbtflow.streaming.store import StateStore
from dbtflow.streaming.verdict import verdict

DBT_COLOR = "#FF694B"
#: How soon a streamed task run by `dag.test()` looks again when it has to wait for other tasks.
SEQUENTIAL_WAIT_S = 0.2


def run_key(context: Any) -> RunKey:
    ti = context["ti"]
    return RunKey(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, try_number=int(ti.try_number))


class DbtOperatorBase(BaseOperator):
    """What every dbtflow operator holds: the project, its nodes, threads and the state store."""

    template_fields: Sequence[str] = ("unique_ids",)
    ui_color = DBT_COLOR
    ui_fgcolor = "#FFFFFF"

    def __init__(
        self,
        *,
        project: DbtProject,
        unique_ids: Sequence[str],
        threads: int | None = None,
        state_url: str | None = None,
        model_deadlines: ModelDeadlines | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.project = project
        self.unique_ids = list(unique_ids)
        self.threads = threads
        self.state_url = state_url
        self.model_deadlines = model_deadlines

    @contextmanager
    def _watched(self, context: Any, on_event: Any) -> Iterator[Any]:
        """``on_event``, watched for models that outlive their expected durations (when set)."""
        if self.model_deadlines is None:
            yield on_event
            return
        watch = model_deadline_watch(self.model_deadlines, context, self.log, on_event)
        try:
            yield watch
        finally:
            watch.close()

    def _store(self) -> StateStore:
        return StateStore(self.state_url)

    def _report(self, results: Sequence[NodeResult]) -> dict[str, Any]:
        """Log a results table; fail when dbt reported an error or failure; return the XCom summary."""
        self.log.info("dbt results:\n%s", results_table(results))
        failed = [r for r in results if r.failed]
        if failed:
            raise AirflowException(f"dbt reported {len(failed)} failure(s):\n{failure_summary(failed)}")
        missing = sorted(set(self.unique_ids) - {r.unique_id for r in results})
        if missing:
            raise AirflowException(f"dbt returned no result for {', '.join(missing)}: it did not run them.")
        return summarize(results)


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
        **kwargs: Any,
    ) -> None:
        if streamed:
            # Wait from the start of the run, not from the end of the upstream tasks: see the
            # module docstring of dbtflow.streaming.consumer.
            kwargs.setdefault("trigger_rule", "always")
        super().__init__(**kwargs)
        self.main_node = main_node
        self.streamed = streamed
        self.producer_task_id = producer_task_id
        self.poll_interval = poll_interval
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

    def _upstream(self, key: RunKey) -> Upstream:
        try:
            task_states: dict[str, str | None] | None = read_task_states(key.dag_id, key.run_id)
        except Exception as exc:  # without them, only dbt's side decides (as before streaming early)
            self.log.warning("Could not read the run's task states (%s); deciding from dbt's alone.", exc)
            task_states = None
        return Upstream(tuple(sorted(self.upstream_task_ids)), task_states, self.producer_task_id)

    def _follow(self, context: Any, *, sequential: bool = False) -> Any:
        key = run_key(context)
        decision = decide(
            self._store(),
            key.dag_id,
            key.run_id,
            self.unique_ids,
            key.try_number,
            Watch(),
            main_node=self.main_node,
            upstream=self._upstream(key),
        )
        if decision.action is Action.REPORT:
            self._store().consume([r.id for r in decision.results], key.try_number)
            for stored in decision.results:
                for line in stored.log:
                    self.log.info("%s", line)
            return self._report(decision.node_results)
        if decision.action is Action.FAIL:
            if decision.dead is not None:
                self._store().mark_died(decision.dead, decision.message)
            raise AirflowException(decision.message)
        if decision.action is Action.SKIP:
            raise AirflowSkipException(decision.message)
        if decision.action is Action.WAIT:
            if sequential:
                raise AirflowRescheduleException(datetime.now(UTC) + timedelta(seconds=SEQUENTIAL_WAIT_S))
            self._defer_until_results(key)
        return self._build_alone(context)

    def _defer_until_results(self, key: RunKey) -> None:
        self.defer(
            trigger=NodeResultTrigger(
                nodes=self.unique_ids,
                main_node=self.main_node,
                producer_task_id=self.producer_task_id,
                state_url=self.state_url,
                poll_interval=self.poll_interval,
                upstream=sorted(self.upstream_task_ids),
                end_task=False,
                dag_id=key.dag_id,
                run_id=key.run_id,
                try_number=key.try_number,
            ),
            method_name="execute_complete",
            timeout=self.execution_timeout,
        )

    def _build_alone(self, context: Any) -> Any:
        key = run_key(context)
        with self._watched(context, DbtEventLogger(self.log)) as on_event:
            outcome = build_claimed(
                self.project,
                load_graph(self.project),
                lambda: load_manifest(self.project),
                self._store(),
                key,
                self.unique_ids,
                threads=self.threads,
                on_event=on_event,
            )
        if outcome.held_elsewhere:
            self.log.info(
                "Another dbt invocation is building %s; waiting for its results.",
                ", ".join(outcome.held_elsewhere),
            )
            self._defer_until_results(key)
        assert outcome.run is not None
        if outcome.run.error is not None:
            raise AirflowException(f"dbt failed: {outcome.run.error}")
        mine = set(self.unique_ids)
        # Its own nodes, and whatever else its invocation ran and failed (a project hook).
        results = [r for r in outcome.run.results if r.unique_id in mine or r.failed]
        self._store().consume_invocation(outcome.invocation_id, key.try_number)
        return self._report(results)


class DbtProducerOperator(DbtOperatorBase):
    """Run one ``dbt build`` for a streamed per_model DAG run; node tasks reflect its results.

    The task ends as ``dbt build`` exits: it fails when a node failed (the node's task shows why)
    or when dbt reported a result that no task owns (a failing project hook). A retry builds the
    nodes that have not succeeded in this DAG run, whose tasks still wait for them, and that
    nobody else is building.
    """

    def __init__(
        self, *, selection: Sequence[str] = (), node_tasks: dict[str, str] | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("priority_weight", 1000)
        super().__init__(**kwargs)
        self.selection = list(selection)
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

    def _still_wanted(self, key: RunKey) -> list[str]:
        """The nodes whose tasks have not ended (a retry must not build for a task that is done)."""
        if not self.node_tasks:
            return list(self.unique_ids)
        try:
            states = read_task_states(key.dag_id, key.run_id)
        except Exception as exc:
            self.log.warning("Could not read the run's task states (%s); building every node.", exc)
            return list(self.unique_ids)
        done = {
            uid for uid, task_id in self.node_tasks.items() if states.get(task_id) in TERMINAL_TASK_STATES
        }
        if done and key.try_number > 1:
            self.log.info("%d node(s) are left out: their tasks have ended.", len(done))
        return [uid for uid in self.unique_ids if uid not in done]

    def _build(self, key: RunKey, store: StateStore, nodes: list[str], on_event: Any) -> BuildOutcome:
        return build_claimed(
            self.project,
            load_graph(self.project),
            lambda: load_manifest(self.project),
            store,
            key,
            nodes,
            selection=self.selection if len(nodes) == len(self.unique_ids) else None,
            threads=self.threads,
            on_event=on_event,
            skip_succeeded=True,
        )

    def execute(self, context: Any) -> Any:
        key = run_key(context)
        store = self._store()
        nodes = self._still_wanted(key)
        with self._watched(context, DbtEventLogger(self.log)) as on_event:
            outcome = self._build(key, store, nodes, on_event)
        if outcome.held_elsewhere:
            states = store.node_states(key.dag_id, key.run_id, outcome.held_elsewhere)
            live = [uid for uid, info in states.holders.items() if info.alive]
            if live:
                self.log.info(
                    "%d node(s) are being built by another invocation of this run; waiting for them.",
                    len(live),
                )
                wait_for_holders(store, key, live, self.log)
        if outcome.run is not None and outcome.run.error is not None:
            raise AirflowException(f"dbt failed: {outcome.run.error}")
        run_results = store.results_of_run(key.dag_id, key.run_id)
        judged = verdict(run_results, self.unique_ids, {outcome.invocation_id}, self.node_tasks)
        self.log.info("dbt results:\n%s", results_table(judged.results))
        summary = summarize(judged.results)
        if not judged.ok:
            context["ti"].xcom_push(key="return_value", value=summary)
            raise AirflowException(judged.message())
        return summary


def wait_for_holders(
    store: StateStore, key: RunKey, nodes: Sequence[str], log: Any, poll: float = 1.0
) -> None:
    """Block until no live invocation claims any of ``nodes``."""
    while True:
        states = store.node_states(key.dag_id, key.run_id, nodes)
        if not any(info.alive for info in states.holders.values()):
            return
        time.sleep(poll)
