"""The head-start dbt of ``dbtflow run`` sends its nodes' OpenLineage events even when the parent
(made from the DAG run) arrives after dbt has finished: on a loaded machine a small project is
built before Airflow has created the run."""

from __future__ import annotations

import time
from pathlib import Path

from dbtflow.project.config import DbtProject
from dbtflow.project.manifest import load_graph
from dbtflow.runner.forked_dbt import ForkedDbt
from dbtflow.state.invocations import InvocationState
from dbtflow.state.store import StateStore
from dbtflow.state.task_try import TaskTry
from lineage_receiver import NAMESPACE, lineage_receiver


def test_node_events_wait_for_a_parent_that_comes_after_dbt_finished(
    bikeshare_dir: Path, warehouse: Path, tmp_path: Path
) -> None:
    project = DbtProject(bikeshare_dir)
    seeds = sorted(uid for uid in load_graph(project).nodes if uid.startswith("seed."))
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(state_url)
    task = TaskTry("head_start_lineage", "run-1", "dbt_build", 1)
    head = ForkedDbt(project, state_url=state_url)
    head.fork()
    with lineage_receiver() as receiver:
        try:
            head.start(task, seeds, lineage_follows=True)
            deadline = time.monotonic() + 300
            while not _ended(store, task):
                assert time.monotonic() < deadline, "the head start's dbt did not end"
                time.sleep(0.2)
            transport = {"type": "http", "url": receiver.url, "endpoint": "lineage"}
            # dbt is done; only now does the parent come, as when Airflow was slow to create the run.
            head.send_lineage_parent(
                {
                    "dag_id": task.dag_id,
                    "namespace": NAMESPACE,
                    "run_id": "01932c2e-0000-7000-8000-000000000001",
                    "job_name": f"{task.dag_id}.{task.task_id}",
                    "root_run_id": "01932c2e-0000-7000-8000-000000000002",
                    "root_job_name": task.dag_id,
                    "root_namespace": NAMESPACE,
                    "client_config": {"transport": transport},
                }
            )
            head.finish()
        finally:
            head.stop()
        by_node = receiver.node_events(task.dag_id)
    assert sorted(by_node) == seeds, sorted(by_node)
    assert all(sorted(e["eventType"] for e in events) == ["COMPLETE", "START"] for events in by_node.values())


def _ended(store: StateStore, task: TaskTry) -> bool:
    invocations = store.invocations_of_run(task.dag_id, task.run_id)
    return bool(invocations) and all(inv.state != InvocationState.RUNNING for inv in invocations)
