"""A scheduler or triggerer restarted on its machine ends its dead predecessor's job at once.

Pins the Airflow internals ``dbtflow.airflow.dead_jobs`` relies on, and checks it on the embedded
Airflow's real metadata database, with real processes standing for another running scheduler.
The deployment test (``tests/deployment/test_scheduler.py``) checks it where it matters: a
scheduler and triggerer SIGKILLed and started again."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from airflow.jobs.job import Job
from airflow.models.trigger import Trigger
from airflow.utils.session import create_session
from airflow.utils.state import JobState

from airflow_command import printed_after_command
from dbtflow.airflow import dead_jobs


def test_the_airflow_internals_it_relies_on_are_still_there() -> None:
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    loop = inspect.getsource(SchedulerJobRunner._run_scheduler_loop)
    assert "self.adopt_or_reset_orphaned_tasks()" in loop.split("call_regular_interval")[0], (
        "the scheduler no longer looks for dead schedulers' tasks at start: re-read it and update "
        "or remove dbtflow.airflow.dead_jobs"
    )
    adopt = inspect.getsource(SchedulerJobRunner.adopt_or_reset_orphaned_tasks)
    assert "Job.state.is_distinct_from(JobState.RUNNING)" in adopt
    assert "Job.end_date.is_(None)" in inspect.getsource(Trigger.assign_unassigned)
    assert {"job_type", "state", "hostname", "end_date"} <= set(Job.__table__.columns.keys())


@pytest.fixture
def jobs(airflow_db: Path) -> Iterator[tuple[Job, Job]]:
    """Our own running SchedulerJob and a dead one, on a host of their own."""
    host = f"host-{uuid.uuid4().hex[:8]}"
    with create_session() as session:
        made = [Job(job_type="SchedulerJob", state=JobState.RUNNING, hostname=host) for _ in range(2)]
        session.add_all(made)
        session.flush()
        session.expunge_all()
    yield made[0], made[1]
    with create_session() as session:
        for job in made:
            session.delete(session.get(Job, job.id))


def _state(job_id: int) -> tuple[str | None, object]:
    with create_session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.state, job.end_date


def test_a_dead_scheduler_of_this_host_is_ended(jobs: tuple[Job, Job]) -> None:
    own, dead = jobs
    assert dead_jobs.end_dead_jobs("scheduler", own) == [dead.id]
    state, end_date = _state(dead.id)
    assert state == JobState.FAILED and end_date is not None
    assert _state(own.id) == (JobState.RUNNING, None)


def _fake_airflow(tmp_path: Path, command: str, env: dict[str, str]) -> psutil.Process:
    """A real process whose command line is ``python .../airflow <command>``, not a child of this
    one (a process's own children are its executor's workers): started through a shell that exits."""
    script = tmp_path / "airflow"
    script.write_text("import time\ntime.sleep(120)\n")
    started = subprocess.run(
        ["sh", "-c", f'"{sys.executable}" "{script}" {command} >/dev/null 2>&1 & echo $!'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    process = psutil.Process(int(started.stdout.strip()))
    deadline = time.monotonic() + 30
    while command not in process.cmdline():  # until it has exec'd
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return process


def test_nothing_is_ended_while_another_scheduler_of_this_airflow_runs(
    jobs: tuple[Job, Job], tmp_path: Path
) -> None:
    own, dead = jobs
    other = _fake_airflow(tmp_path, "scheduler", dict(os.environ))
    try:
        assert dead_jobs.others_running("scheduler")
        assert dead_jobs.end_dead_jobs("scheduler", own) == []
        assert _state(dead.id) == (JobState.RUNNING, None)
    finally:
        other.kill()


def test_a_scheduler_of_another_airflow_does_not_count(tmp_path: Path) -> None:
    other = _fake_airflow(tmp_path, "scheduler", {**os.environ, "AIRFLOW_HOME": str(tmp_path / "elsewhere")})
    try:
        assert not dead_jobs.others_running("scheduler")
    finally:
        other.kill()


@pytest.mark.parametrize("command", ["scheduler", "triggerer"])
def test_the_command_installs_it(command: str) -> None:
    module, runner = dead_jobs.COMMANDS[command][1:]
    printed = printed_after_command(
        command,
        f"from {module} import {runner} as R",
        "print(getattr(R._execute, 'dbtflow_dead_jobs', False))",
    )
    assert printed == "True"
