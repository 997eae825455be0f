"""What a retry of the producer task (``dbt_build``) builds: the nodes whose tasks still wait,
never a node below one whose task failed (dbt would skip it; its task ends upstream_failed).
Real DAG and graph of the example project; the run's task states through dbtflow's reader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbtflow import DbtProject, dbt_dag
from dbtflow.airflow.task_states import use_reader
from dbtflow.state.task_try import TaskTry

from conftest import STG_TRIPS_AND_DOWNSTREAM


@pytest.fixture
def producer(bikeshare_dir: Path, warehouse: Path) -> Iterator[Any]:
    dag = dbt_dag(DbtProject(bikeshare_dir), dag_id="producer_selection")
    yield dag.get_task("dbt_build")
    use_reader(None)


def test_a_retry_leaves_out_what_is_below_a_failed_task(producer: Any) -> None:
    node_tasks: dict[str, str] = producer.node_tasks
    states: dict[str, str | None] = {task_id: None for task_id in node_tasks.values()}
    states |= {"raw_trips": "success", "stg_trips": "failed", "stg_stations": "success"}
    use_reader(lambda dag_id, run_id: states)
    wanted = set(producer._still_wanted(TaskTry("producer_selection", "r", "dbt_build", 2)))
    assert wanted, "nothing left to build"
    assert not wanted & STG_TRIPS_AND_DOWNSTREAM, sorted(wanted & STG_TRIPS_AND_DOWNSTREAM)
    assert "model.bikeshare.stg_bikes" in wanted and "model.bikeshare.stg_stations" not in wanted
    # Without the failure, the nodes below stg_trips are built again (their tasks still wait).
    states["stg_trips"] = None
    wanted = set(producer._still_wanted(TaskTry("producer_selection", "r", "dbt_build", 2)))
    assert wanted >= STG_TRIPS_AND_DOWNSTREAM
