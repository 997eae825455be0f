"""A failing project hook (``on-run-start`` / ``on-run-end``) fails the run, as ``dbt build``
exits 1 on it, in every pattern; streamed, the producer task ``dbt_build`` fails naming the hook
while the model tasks keep the results dbt gave them.

Real dbt on DuckDB through the embedded Airflow (``dbtflow run``)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import AIRFLOW_HOME, run_cli

#: The hook dbt runs after the build; the table does not exist, so the hook (and dbt) fails.
FAILING_END_HOOK = "select * from no_such_table_for_end_hook"
FAILING_START_HOOK = "select * from no_such_table_for_start_hook"


def _add_hook(project: Path, key: str, sql: str) -> None:
    config = project / "dbt_project.yml"
    config.write_text(config.read_text() + f'\n{key}: ["{sql}"]\n')


def _run(project: Path, tmp_path: Path, dag_id: str, *flags: str) -> tuple[str, str, dict[str, str], str]:
    """``dbtflow run``, expected to exit 1; run id, run state, task states and the CLI output."""
    summary = tmp_path / f"{dag_id}.json"
    done = run_cli(
        "run", str(project), "--dag-id", dag_id, "--progress", "none", "--summary-json", str(summary), *flags
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    data = json.loads(summary.read_text())
    return data["run_id"], data["state"], {t["task_id"]: t["state"] for t in data["tasks"]}, output


def _log(dag_id: str, run_id: str, task_id: str) -> str:
    logs = sorted(
        AIRFLOW_HOME.log_folder.glob(f"dag_id={dag_id}/run_id={run_id}/task_id={task_id}/attempt=*.log")
    )
    assert logs, f"no log of {task_id} in {dag_id}/{run_id}"
    return "\n".join(log.read_text() for log in logs)


def test_a_failing_on_run_end_hook_fails_the_streamed_producer_and_every_pattern(
    own_bikeshare: Path, airflow_db: Path, tmp_path: Path
) -> None:
    _add_hook(own_bikeshare, "on-run-end", FAILING_END_HOOK)

    # Streamed per_model (the default): dbt built every node, then its hook failed.
    run_id, state, tasks, _ = _run(own_bikeshare, tmp_path, "hook_end_streamed")
    assert state == "failed"
    assert tasks.pop("dbt_build") == "failed"
    assert len(tasks) > 5 and set(tasks.values()) == {"success"}, tasks
    log = _log("hook_end_streamed", run_id, "dbt_build")
    assert "no task of this DAG owns" in log and "bikeshare-on-run-end-0" in log, log[-3000:]
    assert "no_such_table_for_end_hook" in log, log[-3000:]

    # Every other way of running the project fails on the hook too: the task whose dbt invocation
    # ran it fails naming it (per_task: each invocation runs the hook, so the first tasks fail).
    for dag_id, flags, first_task in (
        ("hook_end_single", ("--pattern", "single"), "dbt_build"),
        ("hook_end_grouped", ("--pattern", "grouped"), "seeds"),
        ("hook_end_per_task", ("--execution", "per_task"), "raw_trips"),
    ):
        run_id, state, tasks, _ = _run(own_bikeshare, tmp_path, dag_id, *flags)
        assert state == "failed", (dag_id, tasks)
        assert tasks[first_task] == "failed", (dag_id, tasks)
        # No dbt task succeeded; the dbt_assets teardown (issue 17) ends success with nothing to
        # emit, and a teardown does not count in the run's state.
        dbt_tasks = {task_id: s for task_id, s in tasks.items() if task_id != "dbt_assets"}
        assert "success" not in dbt_tasks.values(), (dag_id, tasks)
        log = _log(dag_id, run_id, first_task)
        assert "bikeshare-on-run-end-0" in log and "no_such_table_for_end_hook" in log, (dag_id, log[-3000:])


def test_a_failing_on_run_start_hook_fails_the_streamed_producer(
    own_bikeshare: Path, airflow_db: Path, tmp_path: Path
) -> None:
    _add_hook(own_bikeshare, "on-run-start", FAILING_START_HOOK)
    run_id, state, tasks, _ = _run(own_bikeshare, tmp_path, "hook_start_streamed")
    assert state == "failed"
    assert tasks.pop("dbt_build") == "failed"
    # dbt 1.11 goes on after a failing on-run-start hook (`dbt build`: PASS=28 ERROR=1, exit 1):
    # the nodes' tasks show what it built.
    assert len(tasks) > 5 and set(tasks.values()) == {"success"}, tasks
    log = _log("hook_start_streamed", run_id, "dbt_build")
    assert "no task of this DAG owns" in log and "bikeshare-on-run-start-0" in log, log[-3000:]
    assert "no_such_table_for_start_hook" in log, log[-3000:]
