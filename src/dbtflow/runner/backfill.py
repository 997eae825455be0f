"""``dbtflow backfill``: one DAG run per data interval of a date range, on the embedded Airflow.

Why Airflow's own backfill: the runs it makes are the ones a deployment would make
(``airflow backfill create`` and the REST API call the same function): a ``Backfill`` record,
one DAG run per interval of the DAG's timetable between the two dates (by logical date, both
included, only intervals that have ended), each with its data interval and run type
``backfill``, and its rule for intervals that already have a run (``--reprocess``: ``none``
leaves them, ``failed`` clears and re-runs the failed ones, ``completed`` every one). Under a
scheduler the runs are then started ``max_active_runs`` at a time; the embedded Airflow has no
scheduler, so they are started here one after the other, oldest first, each driven to its end
by the loop of ``dbtflow run`` (``dbtflow.runner.loop``), and the backfill is marked complete as
the scheduler marks it. Every task passes its run's interval to dbt
(``dbtflow.airflow.event_time``), so a microbatch model builds each interval in that interval's
run, once. There is no head start (``dbtflow.runner.forked_dbt``): each run's dbt starts in its
producer task, which reads the interval from its context like any deployment's.

``airflow.models.backfill._create_backfill`` is private in Airflow 3.3; it is the one function
both of Airflow's public entry points use, and there is no public in-process equivalent.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from typing import Any

from dbtflow.errors import DbtflowError
from dbtflow.runner.dag_ids import request_file
from dbtflow.runner.dag_runs import scheduler_view
from dbtflow.runner.home import embedded_airflow
from dbtflow.runner.interrupt import _interruptible
from dbtflow.runner.loop import RunOutcome
from dbtflow.runner.owners import owners_lock, record_owner
from dbtflow.runner.run import RunRequest, _drive, _load_and_sync, _prepare

#: ``--reprocess``: Airflow's ``ReprocessBehavior`` values.
REPROCESS_CHOICES = ("none", "failed", "completed")
DEFAULT_SCHEDULE = "@daily"


@dataclass
class BackfillOutcome:
    """The runs a backfill drove, and the intervals it left alone (with Airflow's reason)."""

    dag_id: str
    runs: list[RunOutcome] = field(default_factory=list)
    #: (logical date, reason) of each interval that got no run: it has one (``--reprocess``).
    left: list[tuple[str, str]] = field(default_factory=list)

    @property
    def state(self) -> str:
        return "success" if all(run.state == "success" for run in self.runs) else "failed"

    @property
    def tasks(self) -> list[Any]:
        return [task for run in self.runs for task in run.tasks]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "state": self.state,
            "runs": [run.to_dict() for run in self.runs],
            "left": [{"logical_date": day, "reason": reason} for day, reason in self.left],
        }


def stored_request(dag_id: str, progress: str) -> RunRequest:
    """The arguments of the last ``dbtflow run`` (or backfill) of ``dag_id`` under this home."""
    path = request_file(dag_id)
    if not path.exists():
        raise DbtflowError(
            f"{dag_id} is neither a dbt project folder nor a DAG that `dbtflow run` has run under "
            f"{embedded_airflow().home}.",
            "pass the project's folder (with run's options), or a DAG id that `dbtflow run` printed.",
        )
    return replace(RunRequest.from_json(path.read_text()), progress=progress)


def backfill(request: RunRequest, start: date, end: date, *, reprocess: str = "none") -> BackfillOutcome:
    """Create the backfill's DAG runs from ``start`` to ``end`` (logical dates, UTC, both included)
    and drive them one after the other."""
    if reprocess not in REPROCESS_CHOICES:
        raise DbtflowError(
            f"Unknown --reprocess {reprocess!r}.", f"use one of {', '.join(REPROCESS_CHOICES)}."
        )
    if start > end:
        raise DbtflowError(f"--from {start} is after --to {end}.", "give the earlier date as --from.")
    request = replace(request, schedule=request.schedule or DEFAULT_SCHEDULE, head_start=False)
    prepared = _prepare(request)
    dag = _load_and_sync(prepared)
    backfill_id, run_ids, left = _create_runs(dag.dag_id, start, end, reprocess)
    outcome = BackfillOutcome(dag_id=dag.dag_id, left=left)
    for logical_date, reason in left:
        print(f"{dag.dag_id}: no run for {logical_date}: {reason} (--reprocess decides).")
    try:
        for run_id in run_ids:
            dag_run = _start_run(dag.dag_id, run_id)
            scheduler_dag = scheduler_view(dag)
            with _interruptible(scheduler_dag, run_id, None):
                outcome.runs.append(_drive(request, prepared, dag, scheduler_dag, dag_run))
    finally:
        _complete(backfill_id)
    return outcome


def _create_runs(
    dag_id: str, start: date, end: date, reprocess: str
) -> tuple[int, list[str], list[tuple[str, str]]]:
    """Airflow's backfill over the dates: its id, its DAG runs in order, the intervals it left."""
    from airflow import settings
    from airflow.models.backfill import (
        AlreadyRunningBackfill,
        BackfillDagRun,
        DagNonPeriodicScheduleException,
        InvalidBackfillDate,
        NoBackfillRunsToCreate,
        ReprocessBehavior,
        _create_backfill,
    )
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    try:
        created = _create_backfill(
            dag_id=dag_id,
            from_date=datetime.combine(start, time(), tzinfo=UTC),
            to_date=datetime.combine(end, time(), tzinfo=UTC),
            max_active_runs=1,
            reverse=False,
            dag_run_conf=None,
            triggering_user_name=getpass.getuser(),
            reprocess_behavior=ReprocessBehavior(reprocess),
            run_on_latest_version=True,
        )
    except (NoBackfillRunsToCreate, InvalidBackfillDate) as exc:
        raise DbtflowError(
            f"No interval of {dag_id} to backfill from {start} to {end}: {exc}",
            "give dates of intervals that have ended (logical dates, UTC).",
        ) from None
    except AlreadyRunningBackfill:
        raise DbtflowError(
            f"Another backfill of {dag_id} has not completed.",
            "let it end (or mark its runs failed in `dbtflow ui`), then backfill again.",
        ) from None
    except DagNonPeriodicScheduleException:
        raise DbtflowError(
            f"{dag_id} has no schedule with data intervals.", "pass --schedule (a cron expression or preset)."
        ) from None
    session = settings.get_session()()
    try:
        rows = session.execute(
            select(BackfillDagRun.logical_date, BackfillDagRun.exception_reason, DagRun.run_id)
            .outerjoin(DagRun, DagRun.id == BackfillDagRun.dag_run_id)
            .where(BackfillDagRun.backfill_id == created.id)
            .order_by(BackfillDagRun.sort_ordinal)
        ).all()
    finally:
        session.close()
    run_ids = [row.run_id for row in rows if row.run_id is not None]
    with owners_lock():  # from now on, a run whose dbtflow process dies is failed by the next sweep
        for run_id in run_ids:
            record_owner(dag_id, run_id)
    left = [(str(row.logical_date.date()), str(row.exception_reason)) for row in rows if row.run_id is None]
    return created.id, run_ids, left


def _start_run(dag_id: str, run_id: str) -> Any:
    """Start a queued backfill run, as the scheduler starts a queued run."""
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from airflow.sdk import timezone
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    session = settings.get_session()()
    try:
        dag_run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        ).one()
        dag_run.state = DagRunState.RUNNING
        dag_run.start_date = timezone.utcnow()
        session.commit()
        session.refresh(dag_run)
        session.expunge(dag_run)
        return dag_run
    finally:
        session.close()


def _complete(backfill_id: int) -> None:
    """Mark the backfill complete (as the scheduler does once none of its runs is unfinished); a
    run left unfinished (an interruption) is failed by the next ``dbtflow`` command's sweep."""
    from airflow import settings
    from airflow.models.backfill import Backfill
    from airflow.sdk import timezone

    session = settings.get_session()()
    try:
        record = session.get(Backfill, backfill_id)
        if record is not None and record.completed_at is None:
            record.completed_at = timezone.utcnow()
            session.commit()
    finally:
        session.close()
