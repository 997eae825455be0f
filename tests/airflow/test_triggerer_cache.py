"""Airflow's trigger runner deserializes a dbtflow DAG once per version, not once per trigger.

Real Airflow serialization of a real dbtflow DAG; the cache sits where Airflow's trigger runner
looks ``DagSerialization`` up."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_command import printed_after_command
from dbtflow import DbtProject, dbt_dag
from dbtflow.airflow import triggerer_cache


@pytest.fixture
def runner_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """The trigger runner's module with Airflow's own ``DagSerialization``, restored afterwards."""
    import airflow.jobs.triggerer_job_runner as module
    from airflow.serialization.serialized_objects import DagSerialization

    monkeypatch.setattr(module, "DagSerialization", DagSerialization)
    yield module


def _document(bikeshare_dir: Path, dag_id: str) -> str:
    from airflow.serialization.serialized_objects import DagSerialization

    dag = dbt_dag(DbtProject(bikeshare_dir), dag_id=dag_id)
    return json.dumps(DagSerialization.to_dict(dag))


def test_the_trigger_runner_deserializes_each_dag_version_once(
    runner_module: object, bikeshare_dir: Path, warehouse: Path
) -> None:
    original = runner_module.DagSerialization  # type: ignore[attr-defined]
    cache = triggerer_cache.install()
    assert cache is not None and runner_module.DagSerialization is cache  # type: ignore[attr-defined]
    assert triggerer_cache.install() is cache, "installing twice keeps one cache"
    document = _document(bikeshare_dir, "cached")
    # Each trigger's workload carries its own copy of the document, as decoded from the supervisor.
    task_ids = ["stg_trips", "fct_trips", "dbt_build"]
    tasks = [cache.from_dict(json.loads(document)).get_task(task_id) for task_id in task_ids]
    assert [t.task_id for t in tasks] == task_ids
    assert tasks[0].start_from_trigger and tasks[0].unique_ids[0] == "model.bikeshare.stg_trips"
    assert cache.deserialized == 1
    # A changed DAG is another document: deserialized anew, and what it holds is the new DAG.
    other = cache.from_dict(json.loads(_document(bikeshare_dir, "changed")))
    assert other.dag_id == "changed" and cache.deserialized == 2
    # Everything else is Airflow's own.
    assert cache.to_dict == original.to_dict


def test_the_cache_can_be_switched_off_and_stays_out_of_other_processes(
    runner_module: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(triggerer_cache.SWITCH_ENV, "0")
    assert triggerer_cache.install() is None
    assert not isinstance(runner_module.DagSerialization, triggerer_cache.CachingDagSerialization)  # type: ignore[attr-defined]
    monkeypatch.delenv(triggerer_cache.SWITCH_ENV)
    monkeypatch.delitem(sys.modules, triggerer_cache.RUNNER_MODULE)
    assert triggerer_cache.install() is None, "not a trigger runner: nothing to do"


def test_the_airflow_internal_it_patches_is_still_there() -> None:
    """Fails when Airflow changes what ``triggerer_cache`` depends on (see its docstring)."""
    import inspect

    import airflow.jobs.triggerer_job_runner as module

    assert hasattr(module, triggerer_cache.PATCHED_NAME), "the global the cache replaces moved"
    source = inspect.getsource(module.TriggerRunner.create_runtime_ti)
    assert f"{triggerer_cache.PATCHED_NAME}.from_dict(" in source, (
        "create_runtime_ti no longer deserializes the DAG per trigger: "
        "re-read it and remove or update dbtflow.airflow.triggerer_cache"
    )


def test_a_trigger_runner_without_the_internal_gets_a_warning(
    runner_module: object, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(runner_module, triggerer_cache.PATCHED_NAME)
    with caplog.at_level("WARNING", logger=triggerer_cache.__name__):
        assert triggerer_cache.install() is None
    assert "triggerer_cache.py" in caplog.text and "DagSerialization" in caplog.text


@pytest.fixture
def dag_property(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Airflow's own ``SerializedDagModel.dag`` property, restored afterwards."""
    from airflow.models.serialized_dag import SerializedDagModel

    monkeypatch.setattr(SerializedDagModel, "dag", SerializedDagModel.__dict__["dag"])
    yield SerializedDagModel.__dict__["dag"]


def _serialized_row(bikeshare_dir: Path, dag_id: str) -> object:
    import uuid

    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.serialization.serialized_objects import LazyDeserializedDAG

    row = SerializedDagModel(LazyDeserializedDAG.from_dag(dbt_dag(DbtProject(bikeshare_dir), dag_id=dag_id)))
    row.dag_version_id = uuid.uuid4()
    return row


def test_the_triggerer_process_deserializes_each_dag_version_once(
    dag_property: object, monkeypatch: pytest.MonkeyPatch, bikeshare_dir: Path, warehouse: Path
) -> None:
    import airflow.jobs.triggerer_job_runner  # noqa: F401  (imported by `airflow triggerer`)

    monkeypatch.setattr(sys, "argv", ["airflow", "triggerer"])
    cache = triggerer_cache.install_in_supervisor()
    assert cache is not None and triggerer_cache.install_in_supervisor() is cache
    row = _serialized_row(bikeshare_dir, "supervised")
    first = row.dag  # type: ignore[attr-defined]
    assert row.dag is first, "a second read of one DAG version is the same deserialized DAG"  # type: ignore[attr-defined]
    assert first.get_task("stg_trips").start_from_trigger
    other = _serialized_row(bikeshare_dir, "supervised_changed")
    assert other.dag is not first and other.dag.dag_id == "supervised_changed"  # type: ignore[attr-defined]
    assert len(cache) == 2


def test_other_processes_keep_airflows_property(
    dag_property: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.serialized_dag import SerializedDagModel

    monkeypatch.setattr(sys, "argv", ["airflow", "scheduler"])
    assert triggerer_cache.install_in_supervisor() is None
    assert SerializedDagModel.__dict__["dag"] is dag_property


def test_the_triggerer_internal_it_patches_is_still_there() -> None:
    """Fails when Airflow's triggerer stops reading the whole DAG per trigger (see the module)."""
    import inspect

    from airflow.jobs.triggerer_job_runner import TriggerRunnerSupervisor
    from airflow.models.serialized_dag import SerializedDagModel

    assert isinstance(SerializedDagModel.__dict__["dag"], property)
    source = inspect.getsource(TriggerRunnerSupervisor._create_workload)
    assert "serialized_dag_model.dag.get_task(" in source, (
        "_create_workload no longer deserializes the DAG per trigger: "
        "re-read it and remove or update triggerer_cache.install_in_supervisor"
    )


def test_the_triggerer_command_gets_the_cache_when_airflow_imports_its_models() -> None:
    """In the order a real ``airflow triggerer`` runs: provider information first, models later."""
    printed = printed_after_command(
        "triggerer",
        "assert 'dbtflow.airflow.provider' in sys.modules, 'provider information not read'",
        "from airflow.models.serialized_dag import SerializedDagModel",
        "print(hasattr(SerializedDagModel.__dict__['dag'].fget, 'dbtflow_cache'))",
    )
    assert printed == "True"
