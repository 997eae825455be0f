"""``dbtflow ui`` seen in a real browser (headless Chromium), as a user sees it after one good and
one failed ``dbtflow run`` of the example and ``dbtflow docs``, with no ``dbtflow report`` run:

- the failed run's grid lists the model tasks with their states;
- the failed task's log shows dbt's error;
- the navigation entry opens the live report inside the UI; its plots load, and the Gantt chart
  draws the failed model in the failure color;
- the project's dbt docs open;
- the asset graph of the example split into two DAGs (``split_staging`` by tag, ``split_marts``
  scheduled on ``upstream_assets``; each run once with ``dag.test()``) is one connected graph: both
  DAGs and every model, seed and snapshot they built, through the same ``/ui/dependencies`` call
  the UI's asset page makes, and drawn on that page;
- Ctrl-C stops ``dbtflow ui`` with exit status 130 and no traceback.

One set-up (runs, docs, api-server) is shared by the module: it is most of the time. Screenshots
are saved in each test's ``tmp_path/screenshots``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from dbtflow import DbtProject, model_asset
from dbtflow.airflow.lineage import stop_listeners
from dbtflow.monitoring.plots import STATUS_CLASSES
from dbtflow.project.manifest import load_graph
from dbtflow.runner.ui import free_port_or

from conftest import EXAMPLE, copy_project, run_cli
from dagtest import dag_file, load_dag
from web.browser import Screenshots

DAG = "dbtflow_bikeshare"
FAILURE_RGB = tuple(int(STATUS_CLASSES["failed"][1][i : i + 2], 16) for i in (1, 3, 5))
#: The example split by tag: its seeds and staging views, then its marts scheduled on what they read.
SPLIT = """
from dbtflow import DbtProject, dbt_dag, upstream_assets
project = DbtProject({project!r})
staging = dbt_dag(project, dag_id="split_staging", pattern="single", select=["tag:raw", "tag:staging"])
marts = dbt_dag(
    project, dag_id="split_marts", pattern="single", select="tag:marts",
    schedule=upstream_assets(project, select="tag:marts"),
)
"""


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("ui")
    project = copy_project(EXAMPLE, root / "bikeshare")
    env = {"BIKESHARE_DUCKDB": str(root / "warehouse.duckdb")}
    good = run_cli("run", str(project), "--progress", "none", env=env)
    assert good.returncode == 0, good.stdout + good.stderr
    model = project / "models" / "marts" / "dim_stations.sql"
    model.write_text(model.read_text().replace("s.opened_on", "s.no_such_column"))
    summary = root / "failed.json"
    bad = run_cli("run", str(project), "--progress", "none", "--summary-json", str(summary), env=env)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    run_id = json.loads(summary.read_text())["run_id"]
    port = free_port_or(0)
    server = subprocess.Popen(
        [sys.executable, "-m", "dbtflow.cli", "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    try:
        # While the api-server starts: the docs (the plugin lists the projects documented before
        # it loaded, so the navigation entry of this one may need a restart; the page does not).
        docs = run_cli("docs", str(project), env=env)
        assert docs.returncode == 0, docs.stdout + docs.stderr
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.communicate()
            try:
                if httpx.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "dbtflow ui did not answer in 120 s"
            time.sleep(0.5)
        yield {"url": url, "run_id": run_id, "server": server}
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


def _run_page(ui: dict[str, Any]) -> str:
    return f"{ui['url']}/dags/{DAG}/runs/{quote(ui['run_id'], safe='')}"


def test_the_failed_runs_grid_lists_the_model_tasks_with_their_states(
    ui: dict[str, Any], page: Any, screenshot: Screenshots
) -> None:
    page.goto(_run_page(ui))
    page.get_by_text("dim_stations").first.wait_for()
    page.get_by_text("Task Instances").first.wait_for()
    page.wait_for_timeout(1000)
    screenshot("run-grid")
    body = page.inner_text("body")
    for task in ("dbt_build", "stg_stations", "dim_stations", "fct_trips", "station_daily_usage"):
        assert task in body, task
    # The failed model's dependants end upstream_failed, as Airflow shows them.
    assert "Failed" in body and "Success" in body and "Upstream Failed" in body


def test_the_failed_tasks_log_shows_dbts_error(
    ui: dict[str, Any], page: Any, screenshot: Screenshots
) -> None:
    page.goto(f"{_run_page(ui)}/tasks/dim_stations")
    page.get_by_text("Binder Error").first.wait_for()
    screenshot("failed-task-log")
    assert "no_such_column" in page.inner_text("body")


def test_the_report_opens_in_the_ui_with_its_plots_and_the_failure_color(
    ui: dict[str, Any], page: Any, screenshot: Screenshots
) -> None:
    page.goto(f"{ui['url']}/plugin/dbtflow-reports")  # the "dbt run times" navigation entry
    frame = page.frame_locator("iframe").first
    frame.get_by_text(DAG).first.wait_for()
    screenshot("reports-index-in-ui")
    frame.get_by_text(DAG).first.click()
    frame.get_by_text("model.bikeshare.dim_stations").first.wait_for()
    screenshot("dag-report-in-ui")
    page.goto(f"{ui['url']}/dbtflow/reports/{DAG}/")
    page.wait_for_load_state("networkidle")
    images = page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])"
    )
    assert len(images) == 3 and all(loaded for _, loaded in images), images
    assert "failed: model.bikeshare.dim_stations" in page.inner_text("body")
    # The Gantt chart draws the failed model in the failure color (its pixels, read back).
    failure_pixels = page.evaluate(
        """([r, g, b]) => { const img = document.querySelector("img[src^='gantt.png']");
        const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
        const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
        const d = ctx.getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] === r && d[i+1] === g && d[i+2] === b) n++;
        return n; }""",
        list(FAILURE_RGB),
    )
    assert failure_pixels > 50, failure_pixels
    row_color = page.eval_on_selector(
        "tr[id='model.bikeshare.dim_stations'] .status", "e => getComputedStyle(e).backgroundColor"
    )
    assert row_color == "rgb({}, {}, {})".format(*FAILURE_RGB)
    screenshot("dag-report")


def test_the_projects_dbt_docs_open(ui: dict[str, Any], page: Any, screenshot: Screenshots) -> None:
    page.goto(f"{ui['url']}/dbtflow/docs/bikeshare/")
    # dbt's docs app lists the project's models once it has loaded manifest.json and catalog.json.
    page.wait_for_selector("span.filename-normal:has-text('dim_stations')", state="attached")
    assert "dbt" in page.title()
    screenshot("dbt-docs")
    for file in ("manifest.json", "catalog.json"):
        assert httpx.get(f"{ui['url']}/dbtflow/docs/bikeshare/{file}", timeout=30).status_code == 200


@pytest.fixture(scope="module")
def split(ui: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The example split into two DAGs, each run once with ``dag.test()`` (the marts part after
    the staging part), in the Airflow the UI shows; the DAG file stays while the module runs (a
    ``dag.test()`` elsewhere would otherwise mark its DAGs stale)."""
    project = copy_project(EXAMPLE, tmp_path_factory.mktemp("split") / "bikeshare")
    profiles = project / "profiles.yml"
    warehouse = str(project.parent / "split.duckdb")
    profiles.write_text(
        profiles.read_text().replace("{{ env_var('BIKESHARE_DUCKDB', 'bikeshare.duckdb') }}", warehouse)
    )
    with dag_file("split_project", SPLIT.format(project=str(project))) as path:
        runs = {dag_id: load_dag(path, dag_id).test() for dag_id in ("split_staging", "split_marts")}
        states = {dag_id: str(run.state) for dag_id, run in runs.items()}
        assert states == {"split_staging": "success", "split_marts": "success"}, states
        # What each run did, for the assertions' messages: its tasks' states and tries.
        tasks = {
            dag_id: {ti.task_id: (str(ti.state), ti.try_number) for ti in run.get_task_instances()}
            for dag_id, run in runs.items()
        }
        # The OpenLineage listener (enabled by an earlier test of this worker) sends a run's last
        # event from a process pool forked from this process, holding the browser driver's pipe
        # open: closing Playwright then waited for the pool's process (600 s, 2026-12-03).
        stop_listeners(None)
        yield {"project": DbtProject(project), "tasks": tasks}


def test_the_asset_graph_of_a_split_project_is_connected(
    ui: dict[str, Any], split: dict[str, Any], page: Any, screenshot: Screenshots
) -> None:
    project = split["project"]
    graph = load_graph(project)
    # What the two DAGs build: the seeds, staging views and marts (not the snapshot, not tests).
    parts = {"raw", "staging", "marts"}
    built = sorted(
        n.name for n in graph.nodes.values()
        if n.resource_type in ("model", "seed") and not n.is_ephemeral and set(n.tags) & parts
    )  # fmt: skip
    token = httpx.get(f"{ui['url']}/auth/token", timeout=30).json()["access_token"]
    api = httpx.Client(base_url=ui["url"], headers={"Authorization": f"Bearer {token}"}, timeout=60)
    uris = {model_asset(project, name).uri: name for name in built}
    # Page by page: the API returns at most [api] maximum_page_limit (100) assets at a time, and
    # this worker's earlier tests made more (the first page lacked the marts' in CI, 2026-12-03).
    assets: list[dict[str, Any]] = []
    while True:
        reply = api.get("/api/v2/assets", params={"limit": 100, "offset": len(assets), "only_active": False})
        found = reply.json()["assets"]
        assets += found
        if not found or len(assets) >= reply.json()["total_entries"]:
            break
    ids = {uris[a["uri"]]: a["id"] for a in assets if a["uri"] in uris}
    assert set(ids) == set(built), (sorted(ids), built, split["tasks"])
    # What the UI's asset page asks for: the connected part of the DAG dependency graph holding
    # the asset. From a staging view, it reaches both DAGs and every asset either one built.
    component = api.get("/ui/dependencies", params={"node_id": f"asset:{ids['stg_trips']}"}).json()
    nodes = {n["id"] for n in component["nodes"]}
    assert {"dag:split_staging", "dag:split_marts"} <= nodes, nodes
    assert {f"asset:{i}" for i in ids.values()} <= nodes, (nodes, ids)
    edges = {(e["source_id"], e["target_id"]) for e in component["edges"]}
    assert (f"asset:{ids['stg_trips']}", "dag:split_marts") in edges, edges  # marts waits on it
    # The asset's own record: the marts DAG is scheduled on it, the staging DAG's alias made it.
    stg_trips = next(a for a in assets if a["id"] == ids["stg_trips"])
    assert {d["dag_id"] for d in stg_trips["scheduled_dags"]} == {"split_marts"}, stg_trips
    assert any(a["name"].startswith("dbtflow:split_staging:") for a in stg_trips["aliases"]), stg_trips

    page.goto(f"{ui['url']}/assets/{ids['stg_trips']}")
    for node in ("dag:split_staging", "dag:split_marts", f"asset:{ids['fct_trips']}"):
        page.locator(f".react-flow__node[data-id='{node}']").first.wait_for()
    page.wait_for_timeout(1000)
    screenshot("split-asset-graph")
    drawn = page.eval_on_selector_all(".react-flow__node", "ns => ns.map(n => n.getAttribute('data-id'))")
    assert {f"asset:{i}" for i in ids.values()} <= set(drawn), drawn


def test_ctrl_c_stops_the_ui_cleanly(ui: dict[str, Any]) -> None:
    server = ui["server"]
    server.send_signal(signal.SIGINT)
    stdout, stderr = server.communicate(timeout=30)
    assert server.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stdout + stderr
    assert "Airflow UI: http://127.0.0.1:" in stdout
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{ui['url']}/api/v2/monitor/health", timeout=5)
