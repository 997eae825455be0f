"""The process that sends OpenLineage events beside dbt, the HTTP session it sends with, and a
node lineage whose parent follows."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import Job, Run, RunEvent, RunState

from dbtflow.airflow.lineage import NodeLineage
from dbtflow.airflow.lineage_sender import SenderProcess, settle_http_session
from dbtflow.project.config import DbtProject
from dbtflow.project.results import NodeResult
from lineage_receiver import lineage_receiver


def _writer(out: Path) -> Callable[[], Callable[[str], None]]:
    def setup() -> Callable[[str], None]:
        started = os.getpid()

        def work(item: str) -> None:
            with out.open("a") as f:
                f.write(json.dumps([started, os.getpid(), item]) + "\n")

        return work

    return setup


def test_the_sender_handles_every_item_in_order_in_another_process(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    sender: SenderProcess[str] = SenderProcess(_writer(out), name="test")
    for i in range(50):
        sender.put(f"item {i}")
    assert sender.close(30.0)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r[2] for r in rows] == [f"item {i}" for i in range(50)]
    pids = {r[1] for r in rows} | {r[0] for r in rows}
    assert pids == {sender.process.pid} and os.getpid() not in pids


def test_ctrl_c_reaching_the_process_group_does_not_end_the_sender(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    sender: SenderProcess[str] = SenderProcess(_writer(out), name="test")
    sender.put("before")
    os.kill(sender.process.pid, signal.SIGINT)
    time.sleep(0.5)
    sender.put("after")
    assert sender.close(30.0)
    assert [json.loads(line)[2] for line in out.read_text().splitlines()] == ["before", "after"]


def test_a_sender_that_cannot_start_drops_its_items_and_lets_its_parent_finish(tmp_path: Path) -> None:
    def setup() -> Callable[[str], None]:
        raise RuntimeError("no client here")

    log_file = tmp_path / "sender.log"
    log = logging.getLogger("test_lineage_sender")
    handler = logging.FileHandler(log_file)
    log.addHandler(handler)
    try:
        sender: SenderProcess[str] = SenderProcess(setup, log, name="broken")
        sender.put("lost")
        assert sender.close(30.0)
    finally:
        log.removeHandler(handler)
    assert "dbtflow-broken could not start: no client here" in log_file.read_text()


def test_the_sender_ends_by_itself_when_its_parent_dies(tmp_path: Path) -> None:
    pid_file = tmp_path / "sender.pid"
    child = os.fork()
    if child == 0:  # pragma: no cover - the parent that dies without closing its sender
        try:
            sender: SenderProcess[str] = SenderProcess(_writer(tmp_path / "out.jsonl"), name="orphan")
            pid_file.write_text(str(sender.process.pid))
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    sender_pid = int(pid_file.read_text())
    deadline = time.monotonic() + 30
    while _alive(sender_pid):
        assert time.monotonic() < deadline, "the sender outlived its parent"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _client(url: str) -> OpenLineageClient:
    return OpenLineageClient(config={"transport": {"type": "http", "url": url, "endpoint": "lineage"}})


def test_a_settled_session_keeps_the_environments_settings_and_stops_reading_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine lineage.example.com login ol-user password ol-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.com:3128")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    client = _client("https://lineage.example.com")
    url = "https://lineage.example.com/lineage"
    expected = requests.Session().merge_environment_settings(url, {}, None, True, None)
    settle_http_session(client)
    session = client.transport.session  # type: ignore[attr-defined]
    assert session.trust_env is False
    assert session.proxies == expected["proxies"] == {"https": "http://proxy.example.com:3128"}
    assert client.transport.verify == expected["verify"] == str(tmp_path / "ca.pem")  # type: ignore[attr-defined]
    assert session.auth == ("ol-user", "ol-secret")


def test_a_settled_session_still_reaches_the_receiver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # bypassed for the receiver
    with lineage_receiver() as receiver:
        client = _client(receiver.url)
        settle_http_session(client)
        assert client.transport.session.proxies == {}  # type: ignore[attr-defined]
        event = RunEvent(
            eventType=RunState.START,
            eventTime="2026-12-04T00:00:00+00:00",
            run=Run(runId="0193c3b2-0000-7000-8000-000000000000"),
            job=Job(namespace="dbtflow_tests", name="settled"),
            producer="dbtflow-tests",
        )
        client.emit(event)
        assert [e["job"]["name"] for e in receiver.events] == ["settled"]


def _parent(receiver_url: str) -> dict[str, Any]:
    return {
        "dag_id": "follows",
        "namespace": "dbtflow_tests",
        "run_id": "0193c3b2-0000-7000-8000-000000000001",
        "job_name": "follows.dbt_build",
        "root_run_id": "0193c3b2-0000-7000-8000-000000000002",
        "root_job_name": "follows",
        "root_namespace": "dbtflow_tests",
        "client_config": {"transport": {"type": "http", "url": receiver_url, "endpoint": "lineage"}},
    }


@pytest.mark.parametrize("parent_comes", [True, False])
def test_results_before_a_following_parent_are_held_until_it_comes(
    bikeshare_dir: Path, warehouse: Path, parent_comes: bool
) -> None:
    """``dbtflow run`` starts dbt before the DAG run exists; the lineage parent follows."""
    project = DbtProject(bikeshare_dir)
    results = [
        NodeResult("seed.bikeshare.raw_trips", "success", started_at="2026-12-04T00:00:00Z"),
        NodeResult("model.bikeshare.stg_trips", "error", message="boom"),
    ]
    with lineage_receiver() as receiver:
        lineage = NodeLineage(project, None, logging.getLogger(__name__))
        lineage(results)
        lineage.set_parent(_parent(receiver.url) if parent_comes else None)
        lineage([NodeResult("model.bikeshare.fct_trips", "success")])
        lineage.close()
        events = receiver.node_events("follows")
    if not parent_comes:
        assert events == {}
        return
    assert {uid: [e["eventType"] for e in found] for uid, found in events.items()} == {
        "seed.bikeshare.raw_trips": ["START", "COMPLETE"],
        "model.bikeshare.stg_trips": ["START", "FAIL"],
        "model.bikeshare.fct_trips": ["START", "COMPLETE"],
    }
    parent = events["model.bikeshare.fct_trips"][0]["run"]["facets"]["parent"]
    assert parent["run"]["runId"] == "0193c3b2-0000-7000-8000-000000000001"
