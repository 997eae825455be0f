"""One DAG run through Airflow, driven by a loop modelled on the scheduler and ``dag.test()``.

The loop uses Airflow's own machinery for every decision: ``DagRun.update_state`` for dependencies
and trigger rules (so a failure marks dependants ``upstream_failed``), ``DagRun.schedule_tis``
for scheduling (so tasks that start in the triggerer are deferred without a worker), Airflow's
task runner for execution (in forked workers, several at a time), and ``Trigger.submit_event``
for trigger events (so retries and task-ending events behave as under the real triggerer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from dbtflow.airflow import node_assets, success_callbacks, upstream_failed
from dbtflow.airflow.lineage import stop_listeners
from dbtflow.airflow.task_states import database_reader, use_reader
from dbtflow.runner.display import FINISHED, RunDisplay, TaskRow
from dbtflow.runner.forked_dbt import ForkedDbt
from dbtflow.runner.triggerer import InlineTriggerer
from dbtflow.runner.workers import BackgroundWarmUp, WorkerPool, warm_up_execution_api

#: How long the loop waits for an event before looking at its workers again (while none runs,
#: only trigger events, which wake it at once, and the next pass are waited for).
TICK_S = 0.02
IDLE_TICK_S = 0.25
#: Trigger events come in bursts (one reading of the run's feed ends every task whose node dbt
#: finished since the last): the pass after one waits this long, so that the burst gets one pass.
SETTLE_S = 0.05
#: While the head-start dbt process works, passes are at least this far apart: nothing waits on
#: them but the display (the tasks end in the triggerer), and each reads every task instance.
BUSY_PASS_S = 0.5
#: A scheduling pass runs at least this often even when nothing happened.
IDLE_PASS_S = 1.0
#: When a run is stopped, how long its task processes get to end before they are killed.
ABORT_GRACE_S = 1.0


@dataclass
class RunOutcome:
    dag_id: str
    run_id: str
    state: str
    tasks: list[TaskRow]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "state": self.state,
            "tasks": [t.to_dict() for t in self.tasks],
        }


class LocalDagRun:
    """Drive one existing DAG run to its end."""

    def __init__(
        self,
        dag: Any,
        scheduler_dag: Any,
        dag_run: Any,
        *,
        concurrency: int,
        display: RunDisplay,
        forked_dbt: ForkedDbt | None = None,
        warm_up: Callable[[], None] | None = None,
    ) -> None:
        from airflow.utils.helpers import log_filename_template_renderer

        self.dag = dag
        self.scheduler_dag = scheduler_dag
        self.run_id = dag_run.run_id
        self.dag_run_id = dag_run.id
        self.display = display
        self.forked_dbt = forked_dbt
        self.triggerer = InlineTriggerer()
        # Streamed node tasks read their run's task states; in this process, from the database.
        use_reader(database_reader)
        # Trigger events end tasks as in a triggerer with dbtflow's handlers (see each module).
        upstream_failed.install()
        success_callbacks.install()
        node_assets.install()
        self._render_log = log_filename_template_renderer()
        self.pool = WorkerPool(dag, concurrency, self.log_path)
        # Done once in this process before the first task is forked: Airflow's in-process
        # Execution API, and dbt's import and warm-up before the first task that runs dbt. With a
        # head start, a green run forks no task (its node tasks and dbt_assets end in the
        # triggerer), and the API's build cost 3-7 s of CPU beside dbt: it is built (on a thread,
        # the loop going on) only once a task waits for a worker. Without one, from now.
        self.api_warm_up: BackgroundWarmUp | None = None
        if forked_dbt is None:
            self.api_warm_up = BackgroundWarmUp(warm_up_execution_api)
        self.dbt_warm_up = warm_up
        self._api_building = False

    def log_path(self, ti: Any) -> Path:
        from airflow.configuration import conf

        return Path(conf.get("logging", "base_log_folder")) / self._render_log(
            ti=ti, try_number=ti.try_number
        )

    def run(self) -> RunOutcome:
        from airflow import settings

        session = settings.get_session()()
        try:
            state = self._loop(session)
        except BaseException as exc:
            self._abort(session, exc)
            raise
        finally:
            self.triggerer.stop()
            self.pool.terminate()
            stop_listeners(self)
        rows = self._rows(session)
        return RunOutcome(dag_id=self.dag.dag_id, run_id=self.run_id, state=state, tasks=rows)

    def _loop(self, session: Any) -> str:
        """Schedule, dispatch and apply events until the DAG run ends.

        A scheduling pass (dependencies, dispatch, triggers) runs only when something happened (a
        trigger fired: after ``SETTLE_S``, and ``BUSY_PASS_S`` after the last pass while the
        head-start dbt runs; a worker ended: at once) or once a second; between passes the loop
        only waits for events, so it leaves the CPU to dbt.
        """
        from airflow.models.trigger import Trigger

        next_pass = last_pass = 0.0
        last_clean = time.monotonic()
        while True:
            events = self.triggerer.events()
            for trigger_id, event, error in events:
                if error is not None:
                    Trigger.submit_failure(trigger_id, error, session=session)
                else:
                    Trigger.submit_event(trigger_id, event, session=session)
            if events:
                session.commit()
            now = time.monotonic()
            if events:
                dbt_busy = self.forked_dbt is not None and self.forked_dbt.pid is not None
                next_pass = min(next_pass, max(now + SETTLE_S, last_pass + BUSY_PASS_S * dbt_busy))
            for worker, code in self.pool.reap():
                next_pass = now
                if code != 0:
                    self._fail_lost_task(worker.task_id, worker.map_index, code, session)
            if self.forked_dbt is not None:
                self.forked_dbt.reap()
            if self._api_building and self.api_warm_up is not None and self.api_warm_up.done:
                self._api_building = False
                next_pass = now  # tasks were waiting for it
            if now >= next_pass:
                state = self._pass(session)
                if state is not None:
                    return state
                last_pass, next_pass = now, now + IDLE_PASS_S
            if now - last_clean > 5:
                Trigger.clean_unused(session=session)
                session.commit()
                last_clean = now
            tick = TICK_S if self.pool.running or self._api_building else IDLE_TICK_S
            self.triggerer.wait(max(0.0, min(tick, next_pass - time.monotonic())))

    def _pass(self, session: Any) -> str | None:
        """One scheduling pass; returns the run's final state once it has ended."""
        from airflow.models.dagrun import DagRun
        from airflow.utils.state import DagRunState

        session.expire_all()
        dag_run = session.get(DagRun, self.dag_run_id)
        dag_run.dag = self.scheduler_dag
        if dag_run.state != DagRunState.RUNNING:
            return str(getattr(dag_run.state, "value", dag_run.state))
        schedulable, _ = dag_run.update_state(session=session)
        if schedulable:
            dag_run.schedule_tis(schedulable, session=session)
        session.commit()
        self._fail_timed_out_triggers(session)
        # The states alone (a full read builds every task instance, decoding its JSON and pickled
        # columns: it was a pass's largest cost); the task instances only when one must start.
        states = self._states(session)
        if any(self._to_start(row) for row in states):
            self._start(dag_run.get_task_instances(session=session), session)
        session.commit()
        self.display.update(self._rows_of(states))
        if dag_run.state != DagRunState.RUNNING:
            return str(getattr(dag_run.state, "value", dag_run.state))
        return None

    def _states(self, session: Any) -> list[Any]:
        """The run's task instances' states, as rows of what ``_rows_of`` and ``_to_start`` read."""
        from airflow.models.taskinstance import TaskInstance as TI
        from sqlalchemy import select

        columns: list[Any] = [TI.task_id, TI.map_index, TI.state, TI.try_number, TI.trigger_id]
        columns += [TI.start_date, TI.end_date]
        query = select(*columns).where(TI.dag_id == self.dag.dag_id, TI.run_id == self.run_id)
        return list(session.execute(query))

    def _to_start(self, ti: Any) -> bool:
        """Whether ``ti`` waits for a worker or its trigger."""
        from airflow.utils.state import TaskInstanceState

        if ti.state == TaskInstanceState.SCHEDULED:
            # (While the Execution API is built, the pass after it ends starts the task.)
            return self.pool.free > 0 and not self._api_building and not self._is_running(ti)
        return (
            ti.state == TaskInstanceState.DEFERRED
            and ti.trigger_id is not None
            and ti.trigger_id not in self.triggerer.running
        )

    def _start(self, tis: Any, session: Any) -> None:
        """Launch scheduled task instances on workers and start deferred ones' triggers."""
        from airflow.utils.state import TaskInstanceState

        for ti in tis:
            if not self._to_start(ti):
                continue
            if ti.state != TaskInstanceState.SCHEDULED:
                self._start_trigger(ti, session)
            elif self._api_ready():
                self._launch(ti, session)

    def _is_running(self, ti: Any) -> bool:
        return any(
            w.task_id == ti.task_id and w.map_index == ti.map_index for w in self.pool.running.values()
        )

    def _api_ready(self) -> bool:
        """Whether tasks can be forked (the Execution API's build starts here if needed)."""
        if self.api_warm_up is None:
            self.api_warm_up = BackgroundWarmUp(warm_up_execution_api)
        if not self.api_warm_up.done:
            self._api_building = True
            return False
        self.api_warm_up.wait()  # raises its error, if any
        return True

    def _launch(self, ti: Any, session: Any) -> None:
        from airflow.utils.state import TaskInstanceState

        warm_up = self.dbt_warm_up
        if warm_up is not None and hasattr(self.dag.task_dict.get(ti.task_id), "unique_ids"):
            self.dbt_warm_up = None
            warm_up()
        ti.set_state(TaskInstanceState.QUEUED, session=session)
        session.commit()
        self.pool.launch(ti)

    def _start_trigger(self, ti: Any, session: Any) -> None:
        from airflow.models.trigger import Trigger
        from airflow.sdk._shared.module_loading import import_string

        row = session.get(Trigger, ti.trigger_id)
        if row is None:
            return
        trigger = import_string(row.classpath)(**row.kwargs)
        self.triggerer.start(row.id, trigger, ti, self.log_path(ti))

    def _fail_timed_out_triggers(self, session: Any) -> None:
        """The scheduler's ``check_trigger_timeouts``: resume timed-out deferrals to fail them."""
        from airflow.models.taskinstance import TaskInstance as TI
        from airflow.sdk import timezone
        from airflow.utils.state import TaskInstanceState
        from sqlalchemy import update

        session.execute(
            update(TI)
            .where(
                TI.dag_id == self.dag.dag_id,
                TI.run_id == self.run_id,
                TI.state == TaskInstanceState.DEFERRED,
                TI.trigger_timeout < timezone.utcnow(),
            )
            .values(
                state=TaskInstanceState.SCHEDULED,
                next_method="__fail__",
                next_kwargs={"error": "Trigger timeout"},
                scheduled_dttm=timezone.utcnow(),
                trigger_id=None,
            )
        )
        # Always end the transaction: an open write (even of no rows) locks SQLite for everyone.
        session.commit()

    def _fail_lost_task(self, task_id: str, map_index: int, code: int, session: Any) -> None:
        """A worker died without reporting (killed, out of memory): fail its task instance."""
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.state import TaskInstanceState

        ti = (
            session.query(TaskInstance)
            .filter_by(dag_id=self.dag.dag_id, run_id=self.run_id, task_id=task_id, map_index=map_index)
            .one()
        )
        if ti.state in (TaskInstanceState.RUNNING, TaskInstanceState.QUEUED):
            ti.set_state(TaskInstanceState.FAILED, session=session)
            session.commit()

    def _abort(self, session: Any, exc: BaseException) -> None:
        """Stop dbt and the task processes at once, then fail the run as Airflow's "mark failed"
        does (``dbtflow retry`` resumes it). A killed dbt leaves no half-built relation: it builds
        each one in a transaction, which the warehouse drops uncommitted."""
        from airflow.models.dagrun import DagRun

        from dbtflow.runner.owners import UNFINISHED_RUN_STATES, fail_run

        session.rollback()
        if self.forked_dbt is not None:
            self.forked_dbt.stop()
        self.pool.terminate(grace_s=ABORT_GRACE_S)
        dag_run = session.get(DagRun, self.dag_run_id)
        if dag_run is not None and str(dag_run.state) in UNFINISHED_RUN_STATES:
            why = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else f"stopped ({exc!r})"
            fail_run(self.scheduler_dag, self.run_id, f"dbtflow {why}", session)

    def _rows(self, session: Any) -> list[TaskRow]:
        from airflow.models.dagrun import DagRun

        session.expire_all()
        dag_run = session.get(DagRun, self.dag_run_id)
        return self._rows_of(dag_run.get_task_instances(session=session))

    def _rows_of(self, tis: Any) -> list[TaskRow]:
        rows = []
        for ti in sorted(tis, key=lambda t: (t.start_date is None, t.start_date or 0, t.task_id)):
            state = str(ti.state.value if hasattr(ti.state, "value") else ti.state or "none")
            duration = None
            if ti.start_date is not None and ti.end_date is not None and state in FINISHED:
                duration = (ti.end_date - ti.start_date) / timedelta(seconds=1)
            task = self.dag.task_dict.get(ti.task_id)
            rows.append(
                TaskRow(
                    task_id=ti.task_id,
                    state=state,
                    try_number=ti.try_number,
                    duration_s=duration,
                    nodes=tuple(getattr(task, "unique_ids", ())),
                )
            )
        return rows
