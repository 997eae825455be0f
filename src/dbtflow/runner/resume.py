"""``dbtflow retry`` of a local run: clear what did not succeed, so the run resumes where it stopped.

A run may have ended failed (a model failed), been stopped with Ctrl-C (failed, its tasks failed
or skipped), or lost its ``dbtflow`` process (failed by the next command, see
``dbtflow.runner.owners``). In every case the retry clears, with Airflow's own clear, each task
that did not succeed and the tasks downstream of them, and runs them again in the same DAG run:
a succeeded task keeps its state and try number, and its nodes are not built again.

A node whose result the interrupted invocation recorded but no task reported yet (dbt finished
the model; its tests, or its task, had not) is not built again either: its cleared task reports
that result (``unreported_successes``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from dbtflow.errors import DbtflowError
from dbtflow.runner.dag_runs import scheduler_view
from dbtflow.runner.owners import UNFINISHED_RUN_STATES, fail_run, owner_of, owners_lock, record_owner


def clear_for_retry(dag: Any, run_id: str | None) -> tuple[Any, Any, set[str]]:
    """Clear every task of a DAG run (the newest by default) that did not succeed, and their
    downstream, with Airflow's own clear; record this process as the run's owner.

    A run still unfinished whose owner is gone (or unknown) is failed first. Returns the run (set
    running again), the scheduler's view of the DAG, and the cleared task ids.
    """
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import clear_task_instances
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    scheduler_dag = scheduler_view(dag)
    session = settings.get_session()()
    query = select(DagRun).where(DagRun.dag_id == dag.dag_id)
    query = query.where(DagRun.run_id == run_id) if run_id else query.order_by(DagRun.id.desc()).limit(1)
    with owners_lock():
        dag_run = session.scalars(query).first()
        if dag_run is None:
            which = f"no run {run_id}" if run_id else "no run yet"
            raise DbtflowError(
                f"The DAG {dag.dag_id} has {which}: there is nothing to retry.",
                f"start one with `dbtflow run PROJECT_DIR`{' (or check the run id)' if run_id else ''}.",
            )
        if str(dag_run.state) in UNFINISHED_RUN_STATES:
            _fail_unowned(scheduler_dag, dag_run, session)
        all_tis = dag_run.get_task_instances(session=session)
        not_succeeded = {ti.task_id for ti in all_tis if ti.state != TaskInstanceState.SUCCESS}
        # And their downstream (Airflow's clear with include_downstream).
        downstream = {
            d
            for task_id in not_succeeded
            if task_id in dag.task_dict
            for d in dag.get_task(task_id).get_flat_relative_ids(upstream=False)
        }
        tis = [ti for ti in all_tis if ti.task_id in not_succeeded or ti.task_id in downstream]
        if not tis:
            raise DbtflowError(
                f"Every task of DAG run {dag_run.run_id} of {dag.dag_id} succeeded: nothing to retry.",
                "start a new run with `dbtflow run`.",
            )
        clear_task_instances(tis, session, dag_run_state=DagRunState.QUEUED, run_on_latest_version=True)
        for ti in tis:
            # A task that starts in the triggerer gets a new start date but would keep its old end date.
            ti.start_date = ti.end_date = None
        session.commit()
        session.refresh(dag_run)
        dag_run.set_state(DagRunState.RUNNING)
        session.commit()
        record_owner(dag.dag_id, dag_run.run_id)
    return dag_run, scheduler_dag, {ti.task_id for ti in tis}


def _fail_unowned(scheduler_dag: Any, dag_run: Any, session: Any) -> None:
    """Fail an unfinished run before clearing it, unless a live process drives it."""
    owner = owner_of(dag_run.dag_id, dag_run.run_id)
    if owner is not None and owner.alive and owner.pid != os.getpid():
        raise DbtflowError(
            f"DAG run {dag_run.run_id} of {dag_run.dag_id} is still running "
            f"(dbtflow, pid {owner.pid} on {owner.host}).",
            "wait for it to end, or stop it (Ctrl-C in its terminal), then retry.",
        )
    who = (
        "no dbtflow process drives it" if owner is None else f"its dbtflow process (pid {owner.pid}) is gone"
    )
    fail_run(scheduler_dag, dag_run.run_id, f"retried while unfinished: {who}", session)
    session.refresh(dag_run)


def unreported_successes(dag_id: str, run_id: str, nodes: Sequence[str]) -> set[str]:
    """Of ``nodes``, those whose newest result in the run succeeded and no task try reported yet."""
    from dbtflow.state.store import StateStore

    newest = StateStore().node_states(dag_id, run_id, list(nodes)).newest
    return {
        uid
        for uid, stored in newest.items()
        if stored.consumed_by is None and not stored.result.failed and not stored.result.skipped
    }
