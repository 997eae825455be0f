"""Running DAG files through Airflow's ``dag.test()`` inside the test process."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import AIRFLOW_HOME


@contextmanager
def dag_file(name: str, source: str) -> Iterator[Path]:
    """A DAG file in the embedded Airflow's dags folder, removed afterwards.

    ``dag.test()`` parses the whole dags folder, so each test keeps only its own file there.
    """
    path = AIRFLOW_HOME.dags_folder / f"{name}.py"
    path.write_text("# airflow dag\n" + textwrap.dedent(source))
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def load_dag(path: Path, dag_id: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(path), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def run_dag(path: Path, dag_id: str) -> tuple[str, dict[str, tuple[str, int]]]:
    """``dag.test()`` the DAG; return the run state and each task's (state, try_number)."""
    dag = load_dag(path, dag_id)
    run = dag.test()
    states = {ti.task_id: (str(ti.state), ti.try_number) for ti in run.get_task_instances()}
    return str(run.state), states
