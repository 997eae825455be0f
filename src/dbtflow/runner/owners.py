"""Which process drives each DAG run of ``dbtflow run``, and failing the runs whose process is gone.

``dbtflow run`` and ``dbtflow retry`` drive a DAG run from their own process: no scheduler
watches it. When that process is killed (SIGKILL, the OOM killer, a closed laptop, a CI
time-out), nothing would ever end the run: Airflow would show it running for good, its tasks
deferred or with no state. So the driving process records itself as the run's owner
(``ProcessId``: pid, start time, host) in ``$DBTFLOW_HOME/airflow/owners/<dag_id>.json``, and
the next dbtflow command that opens the embedded Airflow (run, retry, ui) fails every running
run whose owner is gone (``fail_abandoned_runs``).

A run is failed as Airflow's own "mark failed" does it (``fail_run``): its running and deferred
tasks fail, those not started are skipped, the run fails. The dbt invocations it left
``running`` in the state store are recorded ``died`` (``StateStore.mark_died``), with the time
this was noticed. The processes that ran dbt for it died with their runner
(``dbtflow.runner.processes.die_with_parent``), so nothing builds for it any more, and
``dbtflow retry`` resumes it.

Runs with no owner record (made by ``dbtflow airflow dags test``, or before owners were
recorded) are left alone here; ``dbtflow retry`` of such a run fails it first.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dbtflow.files import write_atomic
from dbtflow.runner.home import embedded_airflow
from dbtflow.runner.processes import ProcessId

#: DAG run states of a run that some process should be driving.
UNFINISHED_RUN_STATES = ("running", "queued")


def _folder() -> Path:
    folder = embedded_airflow().airflow_home / "owners"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def owners_lock() -> Iterator[None]:
    """Serialize owner changes with the sweep: a run is created or cleared and its owner recorded
    under this lock, so a sweep never sees a running run without its new owner."""
    with (_folder() / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _records(dag_id: str) -> dict[str, dict[str, Any]]:
    path = _folder() / f"{dag_id}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(dag_id: str, records: dict[str, dict[str, Any]]) -> None:
    path = _folder() / f"{dag_id}.json"
    if records:
        write_atomic(path, (json.dumps(records, indent=2) + "\n").encode())
    else:
        path.unlink(missing_ok=True)


def record_owner(dag_id: str, run_id: str) -> None:
    """Record this process as the one driving the run (call under ``owners_lock``)."""
    records = _records(dag_id)
    records[run_id] = ProcessId.current().to_dict()
    _write(dag_id, records)


def owner_of(dag_id: str, run_id: str) -> ProcessId | None:
    record = _records(dag_id).get(run_id)
    return None if record is None else ProcessId.from_dict(record)


def fail_run(scheduler_dag: Any, run_id: str, reason: str, session: Any) -> None:
    """Fail a DAG run as Airflow's "mark failed" does (running and deferred tasks failed, those
    not started skipped), and record its dbt invocations still ``running`` but gone as died.

    Call it once the run's processes are gone: a live invocation is left as it is.
    """
    from airflow.api.common.mark_tasks import set_dag_run_state_to_failed
    from airflow.models.dagrun import DagRun
    from airflow.utils.state import DagRunState, State, TaskInstanceState
    from sqlalchemy import select

    from dbtflow.state.invocations import InvocationState
    from dbtflow.state.store import StateStore

    set_dag_run_state_to_failed(dag=scheduler_dag, run_id=run_id, commit=True, session=session)
    session.commit()
    # Airflow leaves teardown tasks (dbt_assets) and the run's state to a scheduler, which this
    # run has not: end them as it ended the others.
    dag_run = session.scalars(
        select(DagRun).where(DagRun.dag_id == scheduler_dag.dag_id, DagRun.run_id == run_id)
    ).one()
    for ti in dag_run.get_task_instances(session=session):
        if ti.state not in State.finished:
            running = ti.state in (TaskInstanceState.RUNNING, TaskInstanceState.DEFERRED)
            ti.set_state(TaskInstanceState.FAILED if running else TaskInstanceState.SKIPPED, session=session)
    if dag_run.state != DagRunState.FAILED:
        dag_run.set_state(DagRunState.FAILED)
    session.commit()
    store = StateStore()
    for invocation in store.invocations_of_run(scheduler_dag.dag_id, run_id):
        if invocation.state == InvocationState.RUNNING and not invocation.alive:
            store.mark_died(invocation.id, f"{reason}; {invocation.describe_death()}")


def fail_abandoned_runs() -> list[tuple[str, str]]:
    """Fail every unfinished DAG run whose recorded owner is gone; return their (dag id, run id).

    Records of runs that have ended are dropped on the way.
    """
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from airflow.models.serialized_dag import SerializedDagModel
    from sqlalchemy import select

    failed: list[tuple[str, str]] = []
    session = settings.get_session()()
    try:
        with owners_lock():
            for path in sorted(_folder().glob("*.json")):
                dag_id = path.stem
                records = _records(dag_id)
                rows = session.execute(
                    select(DagRun.run_id, DagRun.state).where(
                        DagRun.dag_id == dag_id, DagRun.run_id.in_(list(records))
                    )
                ).all()
                unfinished = {row.run_id for row in rows if str(row.state) in UNFINISHED_RUN_STATES}
                for run_id in list(records):
                    owner = ProcessId.from_dict(records[run_id])
                    if run_id in unfinished and owner.alive:
                        continue
                    if run_id in unfinished:
                        dag = SerializedDagModel.get_dag(dag_id, session=session)
                        if dag is None:
                            continue
                        reason = f"the dbtflow process driving this run (pid {owner.pid}) is gone"
                        fail_run(dag, run_id, reason, session)
                        failed.append((dag_id, run_id))
                    del records[run_id]
                _write(dag_id, records)
    finally:
        session.close()
    return failed
