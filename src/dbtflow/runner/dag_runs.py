"""The embedded Airflow's DAG and its runs in the metadata database: registering the DAG, the
scheduler's view of it, and creating a manual run.

``dbtflow run`` plans its run first (``plan_run``) so that the head-start dbt can build on it while
Airflow registers the DAG, then creates the run with the planned values (``create_run``).
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast


def sync_dag(dagbag: Any) -> Any:
    """Register the dags-folder bundle and write the DAG's serialized form to the metadata database."""
    from airflow import settings
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db

    session = settings.get_session()()
    DagBundlesManager().sync_bundles_to_db(session=session)
    session.commit()
    sync_bag_to_db(dagbag, "dags-folder", None)


def scheduler_view(dag: Any) -> Any:
    """The scheduler's copy of the DAG (its serialized form), with the DAG's callbacks."""
    from airflow.serialization.serialized_objects import DagSerialization

    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    # Callbacks are not serialized; the scheduler's copy needs them to run them at the end.
    scheduler_dag.on_success_callback = dag.on_success_callback  # type: ignore[attr-defined]
    scheduler_dag.on_failure_callback = dag.on_failure_callback  # type: ignore[attr-defined]
    return scheduler_dag


@dataclass(frozen=True)
class PlannedRun:
    """A manual DAG run chosen before it exists: its id, dates and data interval are all that the
    head-start dbt needs (to claim its nodes for the producer task's try), so ``dbtflow run``
    starts dbt on it while Airflow registers the DAG, then creates the run with these values."""

    run_id: str
    logical_date: datetime
    data_interval_start: datetime
    data_interval_end: datetime
    conf: dict[str, Any] | None = None

    @property
    def run_after(self) -> datetime:
        return self.logical_date


def plan_run(dag: Any, conf: dict[str, Any] | None = None) -> PlannedRun:
    """A manual run of ``dag`` starting now (with ``conf``), as ``airflow dags trigger`` makes one."""
    from airflow.models.dagrun import DagRun
    from airflow.sdk import timezone
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.utils.types import DagRunType

    now = timezone.utcnow()
    interval = coerce_to_core_timetable(dag.timetable).infer_manual_data_interval(run_after=now)
    return PlannedRun(
        run_id=DagRun.generate_run_id(run_type=DagRunType.MANUAL, logical_date=now, run_after=now),
        logical_date=now,
        data_interval_start=interval.start,
        data_interval_end=interval.end,
        conf=conf,
    )


def create_run(dag: Any, planned: PlannedRun) -> tuple[Any, Any]:
    """Create the planned manual DAG run (state running) and return it with the scheduler's view
    of the DAG."""
    from airflow import settings
    from airflow.models.dagrun import get_or_create_dagrun
    from airflow.timetables.base import DataInterval
    from airflow.utils.types import DagRunTriggeredByType

    scheduler_dag = scheduler_view(dag)
    session = settings.get_session()()
    run = get_or_create_dagrun(
        dag=scheduler_dag,
        run_id=planned.run_id,
        logical_date=planned.logical_date,
        # Airflow's own values (pendulum DateTimes), as ``plan_run`` got them.
        data_interval=DataInterval(
            cast(Any, planned.data_interval_start), cast(Any, planned.data_interval_end)
        ),
        run_after=planned.run_after,
        conf=planned.conf,
        triggered_by=DagRunTriggeredByType.CLI,
        triggering_user_name=getpass.getuser(),
        start_date=planned.logical_date,
        session=session,
    )
    session.commit()
    return run, scheduler_dag
