"""A task that a trigger ends ``success`` writes no callback request, since the dag-processor
ignores it; failure requests are still written and still run.

Real Airflow throughout: its dag-processor's callback function on a real DAG file, its callback
sink on the embedded metadata database, its command line, and a real ``dbtflow run``."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_command import printed_after_command
from dbtflow.airflow import success_callbacks

from conftest import run_cli

CALLBACK_DAG = """
from pathlib import Path
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

OUT = Path({out!r})

def record(kind):
    def callback(context):
        (OUT / kind).write_text(context["ti"].task_id)
    return callback

with DAG("callbacks_dag", schedule=None):
    EmptyOperator(task_id="t", on_success_callback=record("success"), on_failure_callback=record("failure"))
"""


def _request(state: str) -> Any:
    from airflow.api_fastapi.execution_api.datamodels.taskinstance import TaskInstance
    from airflow.callbacks.callback_requests import TaskCallbackRequest
    from airflow.utils.state import TaskInstanceState

    ti = TaskInstance(
        id=uuid.uuid4(),
        task_id="t",
        dag_id="callbacks_dag",
        run_id="manual__1",
        try_number=1,
        dag_version_id=uuid.uuid4(),
    )
    return TaskCallbackRequest(
        filepath="callbacks_dag.py",
        bundle_name="dags-folder",
        bundle_version=None,
        ti=ti,
        task_callback_type=TaskInstanceState(state),
    )


def test_the_dag_processor_runs_failure_requests_and_ignores_success_ones(tmp_path: Path) -> None:
    """What makes dropping success requests safe: Airflow's own dag-processor code runs a failure
    request's callback and returns before a success request's. This fails, and the patch must go,
    when a newer Airflow starts running success requests."""
    import structlog
    from airflow.dag_processing.dagbag import DagBag
    from airflow.dag_processing.processor import _execute_callbacks

    (tmp_path / "callbacks_dag.py").write_text(CALLBACK_DAG.format(out=str(tmp_path)))
    dagbag = DagBag(dag_folder=str(tmp_path))
    assert "callbacks_dag" in dagbag.dags, dagbag.import_errors
    log = structlog.get_logger()

    _execute_callbacks(dagbag, [_request("success")], log)
    assert not (tmp_path / "success").exists()
    _execute_callbacks(dagbag, [_request("failed")], log)
    assert (tmp_path / "failure").read_text() == "t"
    assert success_callbacks.is_ignored_request(_request("success"))
    assert not success_callbacks.is_ignored_request(_request("failed"))
    assert not success_callbacks.is_ignored_request(_request("up_for_retry"))


def _stored_requests(airflow_db: Path) -> list[str]:
    with sqlite3.connect(airflow_db) as con:
        return [row[0] for row in con.execute("select data from callback")]


def test_the_sink_drops_success_requests_and_keeps_failure_ones(airflow_db: Path) -> None:
    from airflow.callbacks.database_callback_sink import DatabaseCallbackSink
    from airflow.utils.session import create_session

    success_callbacks.install()
    marker = f"run_{uuid.uuid4().hex}"
    success, failure = _request("success"), _request("failed")
    for request in (success, failure):
        request.ti.run_id = marker
        with create_session() as session:
            DatabaseCallbackSink().send(callback=request, session=session)
    stored = [data for data in _stored_requests(airflow_db) if marker in data]
    assert len(stored) == 1, stored
    request = json.loads(json.loads(stored[0])["__var"]["req_data"])
    assert request["task_callback_type"] == "failed"


def test_the_triggerer_command_installs_it() -> None:
    """In the order a real ``airflow triggerer`` runs: provider information first, the sink later."""
    printed = printed_after_command(
        "triggerer",
        "from airflow.callbacks.database_callback_sink import DatabaseCallbackSink as S",
        "print(getattr(S.send, 'dbtflow_drops_ignored', False))",
    )
    assert printed == "True"


@pytest.mark.usefixtures("warehouse")
def test_a_streamed_run_leaves_no_success_request(bikeshare_dir: Path, airflow_db: Path) -> None:
    """``dbtflow run`` ends its node tasks through trigger events, as a triggerer does: before this,
    each success left a request in the metadata database that nothing ever read."""
    done = run_cli("run", str(bikeshare_dir), "--progress", "none", "--dag-id", "no_success_requests")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [data for data in _stored_requests(airflow_db) if "no_success_requests" in data]
