"""A task's results as every dbtflow task publishes them: ``TaskSummary`` through XCom (the JSON
shape earlier versions stored), ``TaskResults``' verdict, and ``publish`` / ``end_event``."""

from __future__ import annotations

import json
import logging

import pytest
from airflow.sdk.exceptions import AirflowException
from airflow.triggers.base import TaskFailedEvent, TaskSuccessEvent

from dbtflow.airflow.publish import end_event, publish
from dbtflow.project.results import NodeResult
from dbtflow.project.task_results import TaskResults, failed_nodes, missing_nodes
from dbtflow.project.task_summary import NodeSummary, TaskSummary

SEED = "seed.bikeshare.raw_trips"
STG = "model.bikeshare.stg_trips"
FCT = "model.bikeshare.fct_trips"
TEST = "test.bikeshare.not_null_fct_trips_trip_id.1a2b3c"
DIM = "model.bikeshare.dim_stations"

RESULTS = [
    NodeResult(SEED, "success", "INSERT 120", execution_time=0.51234, rows_affected=120),
    NodeResult(STG, "success", "OK", execution_time=0.0456),
    NodeResult(FCT, "error", "Binder Error: column trip_km not found", execution_time=0.2),
    NodeResult(TEST, "skipped", "skipped: an upstream node failed"),
    NodeResult(DIM, "warn", "Got 1 result, configured to warn if != 0", execution_time=1.0, failures=1),
]

#: What dbtflow's XCom held for these results before ``TaskSummary`` (the dict ``summarize`` made).
STORED = {
    "counts": {"success": 2, "error": 1, "skipped": 1, "warn": 1},
    "nodes": {
        SEED: {"status": "success", "execution_time": 0.512, "rows_affected": 120},
        STG: {"status": "success", "execution_time": 0.046, "rows_affected": None},
        FCT: {
            "status": "error",
            "execution_time": 0.2,
            "rows_affected": None,
            "message": "Binder Error: column trip_km not found",
        },
        TEST: {"status": "skipped", "execution_time": 0.0, "rows_affected": None},
        DIM: {"status": "warn", "execution_time": 1.0, "rows_affected": None},
    },
    "failed": [FCT],
}


def test_the_summary_is_stored_as_before() -> None:
    assert TaskSummary.of(RESULTS).to_xcom() == STORED
    # `ran` is sorted, as it always was.
    with_ran = TaskSummary.of(RESULTS, ran=[SEED, STG]).to_xcom()
    assert with_ran == {**STORED, "ran": [STG, SEED]}
    assert TaskSummary.of(RESULTS, job_run_id=70403103).to_xcom() == {**STORED, "job_run_id": 70403103}


@pytest.mark.parametrize("extra", [{}, {"ran": [SEED, STG]}, {"job_run_id": 70403103}, {"ran": []}])
def test_the_summary_round_trips_through_xcom_json(extra: dict[str, object]) -> None:
    stored = json.loads(json.dumps({**STORED, **extra}))
    summary = TaskSummary.from_xcom(stored)
    assert summary.to_xcom() == stored
    assert TaskSummary.from_xcom(json.loads(json.dumps(summary.to_xcom()))) == summary
    assert summary.failed == (FCT,)
    assert summary.nodes[FCT] == NodeSummary("error", 0.2, None, "Binder Error: column trip_km not found")
    assert summary.nodes[SEED].message is None and summary.nodes[SEED].rows_affected == 120
    assert summary.ran == (tuple(extra["ran"]) if "ran" in extra else None)  # type: ignore[arg-type]
    assert summary.job_run_id == extra.get("job_run_id")


def test_models_lists_models_seeds_and_snapshots_by_status() -> None:
    summary = TaskSummary.from_xcom(STORED)
    assert summary.models({"success"}) == [SEED, STG]
    assert summary.models({"error", "fail"}) == [FCT]
    assert summary.models({"skipped"}) == []  # a test is not a model
    # What another task returned (the freshness gate's stale sources) reads as an empty summary.
    assert TaskSummary.from_xcom({"stale": ["source.bikeshare.raw.trips"]}).models({"success"}) == []


def test_failed_and_missing_nodes_say_why_a_task_fails() -> None:
    failure = failed_nodes(RESULTS)
    assert failure is not None
    assert failure.startswith("dbt reported 1 failure(s):\n")
    assert f"{FCT}: error: Binder Error" in failure and DIM not in failure
    assert failed_nodes(RESULTS, heading="dbt reported failures:") == failure.replace(
        "dbt reported 1 failure(s):", "dbt reported failures:"
    )
    assert failed_nodes([r for r in RESULTS if not r.failed]) is None
    assert missing_nodes([SEED, "model.bikeshare.gone", "model.bikeshare.also_gone"], RESULTS) == (
        "dbt returned no result for model.bikeshare.also_gone, model.bikeshare.gone: it did not run them."
    )
    assert missing_nodes([SEED, FCT], RESULTS) is None


def test_publish_logs_the_table_and_returns_the_summary(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test_publish")
    recorded: list[str] = []
    with caplog.at_level(logging.INFO, logger="test_publish"):
        value = publish(TaskResults.of(RESULTS), log, history=lambda: recorded.append("history"))
    assert value == STORED
    assert recorded == ["history"]
    table = caplog.records[0].getMessage()
    assert table.startswith("dbt results:\nnode")
    assert all(uid in table for uid in (SEED, STG, FCT, TEST, DIM))


def test_publish_raises_why_the_task_failed(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test_publish")
    cause = ValueError("run 7 failed")
    task = TaskResults.of(RESULTS, failure=failed_nodes(RESULTS), title="dbt Cloud run 7 results")
    with caplog.at_level(logging.INFO, logger="test_publish"), pytest.raises(AirflowException) as raised:
        publish(task, log, cause=cause)
    assert str(raised.value) == failed_nodes(RESULTS)
    assert raised.value.__cause__ is cause
    assert caplog.records[0].getMessage().startswith("dbt Cloud run 7 results:\n")
    with pytest.raises(AirflowException) as uncaused:
        publish(TaskResults.of(RESULTS, failure="dbt returned no result for x"), log)
    assert uncaused.value.__cause__ is None


def test_end_event_ends_a_trigger_task_with_its_summary_or_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test_end_event")
    with caplog.at_level(logging.INFO, logger="test_end_event"):
        ok = end_event(TaskResults.of([r for r in RESULTS if not r.failed]), log, table=False)
    assert isinstance(ok, TaskSuccessEvent)
    assert ok.xcoms == {"return_value": TaskSummary.of(r for r in RESULTS if not r.failed).to_xcom()}
    assert caplog.records == []
    with caplog.at_level(logging.INFO, logger="test_end_event"):
        failed = end_event(TaskResults.of(RESULTS, failure="The dbt invocation 3 stopped: killed."), log)
    assert isinstance(failed, TaskFailedEvent)
    assert [(r.levelno, r.getMessage().split("\n")[0]) for r in caplog.records] == [
        (logging.INFO, "dbt results:"),
        (logging.ERROR, "The dbt invocation 3 stopped: killed."),
    ]
