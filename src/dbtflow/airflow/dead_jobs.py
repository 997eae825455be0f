"""A scheduler or triggerer restarted on its machine ends its dead predecessor's job at once.

Airflow 3.3 treats a ``SchedulerJob`` as dead only once its heartbeat is older than ``[scheduler]
scheduler_health_check_threshold`` (30 s), and looks for dead schedulers' tasks at start and then
every ``[scheduler] orphaned_tasks_check_interval`` (300 s); a ``TriggererJob``'s triggers move to
another triggerer only once its heartbeat is older than ``[triggerer]
triggerer_health_check_threshold`` (30 s). So after the scheduler and the triggerer of one machine
died together and were started again at once (the LocalExecutor's case: its workers, the
``dbt_build`` task and dbt die with the scheduler), the ``dbt_build`` task stayed ``running`` and
its node tasks waited in the dead triggerer's hands for 30 s to 5 minutes (issue 23).

When ``airflow scheduler`` or ``airflow triggerer`` starts, before its first pass, dbtflow ends
(``failed``, with an end date) every running job of the same kind recorded on this host when no
other process of the same Airflow (the same ``AIRFLOW_HOME`` and metadata URL in its environment)
runs that command on this host: such a job's process is gone. Airflow's own start-up check then
resets the dead scheduler's tasks at once, and the new triggerer adopts the dead one's triggers
on its first pass. Where another such process runs, or cannot be looked at, nothing is changed.

- **Airflow internals:** ``SchedulerJobRunner._execute`` (it calls ``adopt_or_reset_orphaned_tasks``
  first, which resets the tasks of schedulers whose job is not ``running``),
  ``TriggererJobRunner._execute``, ``Trigger.assign_unassigned`` (a triggerer with an end date is not
  alive) and the ``Job`` model's ``job_type``, ``state``, ``hostname`` and ``end_date``,
  apache-airflow-core 3.3 (3.3.2 read); ``tests/airflow/test_dead_jobs.py`` fails when they change.
  Installed in ``airflow scheduler`` and ``airflow triggerer`` processes through dbtflow's provider
  information.
- **Upstream:** no Airflow issue found as of 2026-12-04. **Remove it when** Airflow ends a job
  whose process is gone on its own host when a successor starts.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from dbtflow.airflow.after_import import after_import

log = logging.getLogger(__name__)

#: The command, its job type and the module of its job runner.
COMMANDS = {
    "scheduler": ("SchedulerJob", "airflow.jobs.scheduler_job_runner", "SchedulerJobRunner"),
    "triggerer": ("TriggererJob", "airflow.jobs.triggerer_job_runner", "TriggererJobRunner"),
}
#: What makes two Airflow processes parts of one Airflow.
SAME_AIRFLOW = ("AIRFLOW_HOME", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")


def install() -> None:
    """Patch this process's job runner, when it is ``airflow scheduler`` or ``airflow triggerer``."""
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command in COMMANDS:
        _, module, runner = COMMANDS[command]
        after_import(module, lambda m: patch(m, runner, command))


def patch(module: ModuleType, runner_name: str, command: str) -> None:
    runner = getattr(module, runner_name)
    execute = runner._execute
    if getattr(execute, "dbtflow_dead_jobs", False):
        return

    def _execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            end_dead_jobs(command, self.job)
        except Exception:  # never in the way of the component's start
            log.exception("dbtflow: could not look for dead %s jobs on this host", command)
        return execute(self, *args, **kwargs)

    _execute.dbtflow_dead_jobs = True  # type: ignore[attr-defined]
    _execute.__wrapped__ = execute  # type: ignore[attr-defined]
    runner._execute = _execute


def end_dead_jobs(command: str, own_job: Any) -> list[int]:
    """End the running jobs of ``command``'s kind on this host but ``own_job``, when no other
    process of this Airflow runs ``command`` here; the ids of the jobs ended."""
    from airflow.jobs.job import Job
    from airflow.utils.session import create_session
    from airflow.utils.state import JobState
    from sqlalchemy import select

    job_type = COMMANDS[command][0]
    if others_running(command):
        return []
    with create_session() as session:
        dead = list(
            session.scalars(
                select(Job).where(
                    Job.job_type == job_type,
                    Job.state == JobState.RUNNING,
                    Job.hostname == own_job.hostname,
                    Job.id != own_job.id,
                )
            )
        )
        for job in dead:
            job.state = JobState.FAILED
            job.end_date = datetime.now(UTC)
    if dead:
        log.warning(
            "dbtflow: ended %s job(s) %s of this host: no other `airflow %s` of this Airflow runs "
            "here, so their processes are gone; their tasks and triggers are taken over now.",
            job_type,
            ", ".join(str(job.id) for job in dead),
            command,
        )
    return [job.id for job in dead]


def others_running(command: str) -> bool:
    """Whether a process of this Airflow other than this one (and its own children and parents)
    runs ``airflow <command>`` on this host; true when one cannot be looked at."""
    import psutil

    me = psutil.Process()
    mine = {me.pid, *(p.pid for p in me.children(recursive=True)), *(p.pid for p in me.parents())}
    ours = tuple(os.environ.get(key) for key in SAME_AIRFLOW)
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if process.info["pid"] in mine or not _runs(cmdline, command):
            continue
        try:
            environ = process.environ()
        except (psutil.AccessDenied, psutil.ZombieProcess):
            return True
        except psutil.NoSuchProcess:
            continue
        if tuple(environ.get(key) for key in SAME_AIRFLOW) == ours:
            return True
    return False


def _runs(cmdline: list[str], command: str) -> bool:
    """Whether a command line is ``[python] .../airflow <command> ...``."""
    for index, word in enumerate(cmdline[:3]):
        if os.path.basename(word) == "airflow":
            return cmdline[index + 1 : index + 2] == [command]
    return False
