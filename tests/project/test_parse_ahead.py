"""A first parse in Airflow's dag-processor goes on after Airflow's import timeout ends the load.

Real dbt on a copy of the example, with Airflow's own import-timeout context (the one its Python
DAG importer wraps a file's load in), in a process that calls itself the dag-processor."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import EXAMPLE, copy_project

SCRIPT = """
import sys
sys.argv = ["airflow", "dag-processor"]
from airflow.dag_processing.importers.python_importer import _timeout
from dbtflow import DbtProject
from dbtflow.errors import DbtflowError
from dbtflow.project.cache import cache_entry
from dbtflow.project.manifest import load_graph

project = DbtProject(sys.argv_project)
print("GRAPH", cache_entry(project).graph_file, flush=True)
try:
    with _timeout(0.5, error_message="DagBag import timeout"):
        load_graph(project)
    print("LOADED", flush=True)
except DbtflowError as exc:
    print("ERROR", " ".join(str(exc).split()), flush=True)
"""


def test_a_first_parse_outlives_airflows_import_timeout(tmp_path: Path) -> None:
    project = copy_project(EXAMPLE, tmp_path / "bikeshare")
    env = {
        **os.environ,
        "DBTFLOW_HOME": str(tmp_path / "home"),  # nothing cached yet
        "BIKESHARE_DUCKDB": str(tmp_path / "w.duckdb"),
    }
    script = SCRIPT.replace("sys.argv_project", repr(str(project)))
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    # The load was ended by the timeout, with a line that says so and what to do...
    assert "ERROR" in lines, done.stdout + done.stderr[-2000:]
    assert "Airflow's DAG import timeout ended this file's load" in lines["ERROR"]
    assert "dagbag_import_timeout" in lines["ERROR"] and "dbtflow render" in lines["ERROR"]
    # ...and dbt's parse went on without it: the cache is written with no further load.
    graph_file = Path(lines["GRAPH"])
    deadline = time.monotonic() + 240
    while not graph_file.exists():
        assert time.monotonic() < deadline, "the parse did not go on after the load was timed out"
        time.sleep(0.5)
    # The next load uses it at once.
    again = subprocess.run(
        [sys.executable, "-c", script.replace("_timeout(0.5,", "_timeout(60,")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert "LOADED" in again.stdout, again.stdout + again.stderr[-2000:]
