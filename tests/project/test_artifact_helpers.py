"""``slim``, ``retryable`` and ``merge`` on the ``run_results.json`` documents dbt really writes.

A first try of a build breaks one model (the model after it is skipped) with a secret among its
``--vars``; its retry (``dbt retry`` against the slimmed document, which drops the vars, so the
model builds) runs exactly those two again. The helpers are then checked against both documents:
what a kept document must not hold, which nodes a retry must run, and what the merged document
must say after the retry.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from dbtflow import DbtProject
from dbtflow.project.batch import run_batch
from dbtflow.project.run_results_document import merge, retryable, slim
from dbtflow.project.status import NodeStatus

from conftest import EXAMPLE, copy_project

BROKEN = "model.bikeshare.broken_report"
AFTER = "model.bikeshare.after_broken"
STG_STATIONS = "model.bikeshare.stg_stations"
SECRET = "s3cret-token-value"
#: Broken only while the `break` var is set: `dbt retry` runs without the first try's vars.
BROKEN_SQL = """\
{% if var('break', false) %}
select * from this_table_does_not_exist
{% else %}
select 1 as ok
{% endif %}
"""


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The raw document of a failed first try, and the raw document of its retry."""
    root = tmp_path_factory.mktemp("artifact_helpers")
    path = copy_project(EXAMPLE, root / "bikeshare")
    (path / "models" / "marts" / "broken_report.sql").write_text(BROKEN_SQL)
    (path / "models" / "marts" / "after_broken.sql").write_text("select ok from {{ ref('broken_report') }}\n")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BIKESHARE_DUCKDB", str(root / "warehouse.duckdb"))
        project = DbtProject(path)
        select = ["--select", "+stg_stations", "broken_report", "after_broken"]
        vars_flag = ["--vars", json.dumps({"break": True, "api_token": SECRET})]
        first = run_batch(project, ["build", *select, *vars_flag])
        assert first.run.run_results is not None and first.document is not None
        retry = run_batch(project, ["build", *select, *vars_flag], previous=first.document)
        assert retry.mode == "retry" and retry.run.run_results is not None
    return {"first": first.run.run_results, "kept": first.document, "retry": retry.run.run_results}


def _statuses(document: dict[str, Any]) -> dict[str, str]:
    return {e["unique_id"]: e["status"] for e in document["results"]}


def test_the_first_try_failed_the_broken_model_and_skipped_the_one_after_it(
    documents: dict[str, Any],
) -> None:
    """What the other tests rely on: dbt's own document of the failed try."""
    statuses = _statuses(documents["first"])
    assert statuses[BROKEN] == "error" and statuses[AFTER] == "skipped", statuses
    assert statuses[STG_STATIONS] == "success", statuses
    assert SECRET in json.dumps(documents["first"]["args"])
    assert any(e.get("compiled_code") for e in documents["first"]["results"])


def test_slim_drops_vars_command_line_and_compiled_sql_and_keeps_every_result(
    documents: dict[str, Any],
) -> None:
    raw = documents["first"]
    before = copy.deepcopy(raw)
    kept = slim(raw)
    assert SECRET not in json.dumps(kept)
    assert kept["args"]["vars"] == {}
    assert "invocation_command" not in kept["args"]
    assert all(e.get("compiled_code") is None for e in kept["results"])
    # What `dbt retry` needs stays: every result with its status, the rest of the args, metadata.
    assert _statuses(kept) == _statuses(raw)
    assert kept["args"]["which"] == raw["args"]["which"] == "build"
    assert kept["args"]["select"] == raw["args"]["select"]
    assert kept["metadata"] == raw["metadata"]
    assert raw == before, "slim must not change the document it is given"


def test_retryable_is_what_failed_or_was_skipped(documents: dict[str, Any]) -> None:
    assert sorted(retryable(documents["first"])) == [AFTER, BROKEN]
    assert retryable(documents["retry"]) == []


@pytest.mark.parametrize(
    ("status", "retried"),
    [
        (NodeStatus.ERROR, True),
        (NodeStatus.FAIL, True),
        (NodeStatus.SKIPPED, True),
        (NodeStatus.RUNTIME_ERROR, True),
        (NodeStatus.PARTIAL_SUCCESS, True),
        (NodeStatus.SUCCESS, False),
        (NodeStatus.PASS, False),
        (NodeStatus.WARN, False),
        (NodeStatus.NO_OP, False),
    ],
)
def test_retryable_follows_dbt_retry_for_each_status(
    documents: dict[str, Any], status: NodeStatus, retried: bool
) -> None:
    """dbt's ``RETRYABLE_STATUSES``: a warning or a pass is not run again, a test failure is."""
    document = copy.deepcopy(documents["first"])
    for entry in document["results"]:
        entry["status"] = "success"
    document["results"][0]["status"] = status.value
    assert retryable(document) == ([document["results"][0]["unique_id"]] if retried else [])


def test_merge_takes_each_node_from_the_retry_where_it_ran(documents: dict[str, Any]) -> None:
    kept, retry = documents["kept"], documents["retry"]
    before = copy.deepcopy(kept)
    merged = merge(kept, retry)
    statuses = _statuses(merged)
    # Every node the task covers, once, in the first try's order; the retried ones now succeeded.
    assert [e["unique_id"] for e in merged["results"]] == [e["unique_id"] for e in kept["results"]]
    assert statuses[BROKEN] == statuses[AFTER] == "success"
    assert statuses[STG_STATIONS] == "success"
    stg = next(e for e in merged["results"] if e["unique_id"] == STG_STATIONS)
    assert stg == next(e for e in kept["results"] if e["unique_id"] == STG_STATIONS)
    # The retry's run metadata, both tries' time, the original command's args, nothing private.
    assert merged["metadata"] == retry["metadata"] != kept["metadata"]
    assert merged["elapsed_time"] == pytest.approx(kept["elapsed_time"] + retry["elapsed_time"])
    assert merged["args"]["which"] == "build" and merged["args"]["vars"] == {}
    assert all(e.get("compiled_code") is None for e in merged["results"])
    assert retryable(merged) == []
    assert kept == before, "merge must not change the previous document"


def test_merge_adds_a_node_only_the_retry_ran(documents: dict[str, Any]) -> None:
    kept = copy.deepcopy(documents["kept"])
    kept["results"] = [e for e in kept["results"] if e["unique_id"] != AFTER]
    merged = merge(kept, documents["retry"])
    assert [e["unique_id"] for e in merged["results"]][-1] == AFTER
    assert len(merged["results"]) == len(kept["results"]) + 1


def test_merging_a_second_retry_keeps_what_the_first_fixed(documents: dict[str, Any]) -> None:
    """A document merged twice still holds the newest result of every node."""
    once = merge(documents["kept"], documents["retry"])
    later = copy.deepcopy(documents["retry"])
    later["results"] = [e for e in later["results"] if e["unique_id"] == AFTER]
    later["results"][0]["status"] = "error"
    twice = merge(once, later)
    statuses = _statuses(twice)
    assert statuses[AFTER] == "error" and statuses[BROKEN] == "success"
    assert retryable(twice) == [AFTER]
