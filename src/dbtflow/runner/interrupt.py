"""Ctrl-C during a ``dbtflow run``, ``retry`` or ``backfill``: dbt is stopped, the DAG run is marked
failed (as Airflow's "mark failed" does), and the command says how to resume it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from dbtflow.runner.forked_dbt import ForkedDbt
from dbtflow.runner.owners import UNFINISHED_RUN_STATES, fail_run


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a DAG run; it is marked failed, and ``dbtflow retry`` resumes it."""

    def __init__(self, dag_id: str, run_id: str) -> None:
        super().__init__(dag_id, run_id)
        self.dag_id, self.run_id = dag_id, run_id

    def __str__(self) -> str:
        return (
            f"interrupted: DAG run {self.run_id} is marked failed; "
            f"`dbtflow retry {self.dag_id}` resumes it (what succeeded is not built again)."
        )


@contextlib.contextmanager
def _interruptible(scheduler_dag: Any, run_id: str, forked_dbt: ForkedDbt | None) -> Iterator[None]:
    """On Ctrl-C, make sure dbt is stopped and the run failed (``LocalDagRun`` does both once it
    drives the run) and raise ``RunInterrupted``."""
    try:
        yield
    except KeyboardInterrupt as exc:
        if isinstance(exc, RunInterrupted):
            raise
        if forked_dbt is not None:
            forked_dbt.stop()
        from airflow import settings
        from airflow.models.dagrun import DagRun
        from sqlalchemy import select

        session = settings.get_session()()
        query = select(DagRun).where(DagRun.dag_id == scheduler_dag.dag_id, DagRun.run_id == run_id)
        dag_run = session.scalars(query).first()
        if dag_run is not None and str(dag_run.state) in UNFINISHED_RUN_STATES:
            fail_run(scheduler_dag, run_id, "dbtflow interrupted (Ctrl-C)", session)
        session.close()
        raise RunInterrupted(scheduler_dag.dag_id, run_id) from None
