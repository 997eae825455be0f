"""``dbtflow run`` starts dbt on the planned DAG run before Airflow has registered the DAG and
created the run; a failure in between stops dbt instead of letting it build a run that will not
exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb

from conftest import run_cli

# The failure is injected into dbtflow's own step (Airflow's registration of the DAG), in a fresh
# process as the command line runs: everything else (Airflow, dbt, the forked dbt) is real.
SCRIPT = """
import sys
import dbtflow.runner.run as run
from dbtflow.errors import DbtflowError

def register(dagbag):
    raise DbtflowError("the metadata database refused the DAG (injected)", "nothing to fix: a test.")

run._register = register
from dbtflow.cli import main
sys.exit(main(["run", sys.argv[1], "--progress", "none"]))
"""


def test_a_failure_after_dbt_started_stops_it(own_bikeshare: Path, airflow_db: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(own_bikeshare)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the metadata database refused the DAG (injected)" in done.stderr
    # dbt had its nodes and the run's id when the registration failed; it was stopped, not left to
    # build the whole project for a DAG run that was never created.
    warehouse = tmp_path / "own.duckdb"
    built: set[str] = set()
    if warehouse.exists():
        with duckdb.connect(str(warehouse), read_only=True) as con:
            built = {
                row[0] for row in con.execute("select table_name from information_schema.tables").fetchall()
            }
    assert "fct_trips" not in built, sorted(built)


def test_the_run_is_created_as_planned(own_bikeshare: Path, airflow_db: Path, tmp_path: Path) -> None:
    """The head-start dbt claimed its nodes for the run id that Airflow's run then got."""
    from dbtflow.state.store import StateStore

    summary = tmp_path / "summary.json"
    done = run_cli("run", str(own_bikeshare), "--progress", "none", "--summary-json", str(summary))
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(summary.read_text())
    store = StateStore()
    invocations = store.invocations_of_run(outcome["dag_id"], outcome["run_id"])
    assert [(i.task_id, i.state) for i in invocations] == [("dbt_build", "success")], invocations
