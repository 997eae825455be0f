"""dbtflow's triggers reach Airflow's trigger runner without their DAG's document.

Pins the two Airflow internals ``dbtflow.airflow.trigger_workloads`` depends on, and checks the
slimming on Airflow's own workload type, in the order a real ``airflow triggerer`` starts."""

from __future__ import annotations

import inspect

from airflow.executors.workloads.trigger import RunTrigger

from airflow_command import printed_after_command
from dbtflow.airflow import trigger_workloads


def _workload(classpath: str) -> RunTrigger:
    return RunTrigger(
        id=1,
        classpath=classpath,
        encrypted_kwargs="x",
        dag_data={"dag": {"dag_id": "d", "tasks": ["..."] * 1000}},
        dag_run_data={"dag_id": "d", "run_id": "r"},
    )


def test_dbtflows_workloads_go_without_the_dag_document_and_others_keep_it() -> None:
    ours = trigger_workloads.slim(_workload("dbtflow.airflow.triggers.NodeResultTrigger"))
    assert (
        ours.dag_data is None and ours.dag_run_data is None and ours.classpath.endswith("NodeResultTrigger")
    )
    other = _workload("airflow.providers.standard.triggers.temporal.DateTimeTrigger")
    assert trigger_workloads.slim(other) is other and other.dag_data is not None


def test_the_airflow_internals_it_relies_on_are_still_there() -> None:
    from airflow.jobs.triggerer_job_runner import TriggerRunner, TriggerRunnerSupervisor

    create_workload = inspect.getsource(TriggerRunnerSupervisor._create_workload)
    assert "dag_data=serialized_dag_model.data" in create_workload, (
        "_create_workload no longer ships the whole DAG: re-read it and update or remove "
        "dbtflow.airflow.trigger_workloads"
    )
    # dbtflow's triggers are built on the path where the dag bag finds no serialized DAG.
    assert list(inspect.signature(TriggerRunnerSupervisor._create_workload).parameters)[1:3] == [
        "trigger",
        "dag_bag",
    ]
    assert "dag_bag.get_serialized_dag_model_for_run(" in create_workload
    assert "or dag_bag.get_serialized_dag_model(" in create_workload
    assert "if serialized_dag_model:" in create_workload
    assert create_workload.rstrip().endswith(
        "ti=ser_ti,\n            timeout_after=trigger.task_instance.trigger_timeout,\n        )"
    ), "the workload of a trigger whose DAG is not found changed: re-read _create_workload"
    create_triggers = inspect.getsource(TriggerRunner.create_triggers)
    assert "if workload.dag_data:" in create_triggers
    assert "trigger_instance.task_instance = ti" in create_triggers, (
        "a trigger without a DAG document no longer gets its task instance"
    )


def test_the_triggerer_command_installs_it_when_airflow_imports_the_runner() -> None:
    printed = printed_after_command(
        "triggerer",
        "from airflow.jobs.triggerer_job_runner import TriggerRunnerSupervisor as S",
        "print(getattr(S._create_workload, 'dbtflow_slim', False))",
    )
    assert printed == "True"
