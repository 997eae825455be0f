"""Shared fixtures: an isolated dbtflow home (with its embedded Airflow), copies of the example
projects, and helpers to run the CLI and to query DuckDB.

The environment is set at import time, before anything imports Airflow, so every test (and
every ``dbtflow`` subprocess) uses the throw-away home and never ``~/.dbtflow``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "src" / "dbtflow" / "examples" / "bikeshare"
LIBRARY = REPO / "examples" / "library"
LIBRARY_UTILS = REPO / "examples" / "library_utils"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

_HOME = Path(tempfile.mkdtemp(prefix="dbtflow-tests-"))
os.environ["DBTFLOW_HOME"] = str(_HOME)
os.environ.pop("DBTFLOW_STATE_URL", None)
os.environ.pop("DBT_PROFILES_DIR", None)

from fake_dbt_cloud import self_signed_certificate  # noqa: E402

# The fake dbt Cloud's certificate is the only one trusted in tests. It is set before anything
# imports aiohttp, which builds its verifying TLS context once, at import.
TLS_CERT, TLS_KEY = self_signed_certificate(_HOME / "tls")
os.environ["SSL_CERT_FILE"] = os.environ["REQUESTS_CA_BUNDLE"] = str(TLS_CERT)

from dbtflow.runner.home import embedded_airflow  # noqa: E402

AIRFLOW_HOME = embedded_airflow()
AIRFLOW_HOME.activate()


#: Files that take minutes (a real Airflow deployment, or many `dbtflow run`s), slowest first.
#: `make test` runs files on two workers in collection order (`--dist loadfile
#: --no-loadscope-reorder`): started first, these overlap the many short files instead of ending
#: the run on one worker (xdist's default order puts the files with the fewest tests, the
#: one-test deployment files, last).
SLOW_FILES = (
    "deployment/test_scheduler.py",
    "deployment/test_celery.py",
    "airflow/test_hooks.py",
    "monitoring/test_monitoring.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow files first (see ``SLOW_FILES``); otherwise the collection order is kept."""

    def rank(item: pytest.Item) -> int:
        path = item.path.relative_to(REPO / "tests").as_posix()
        return SLOW_FILES.index(path) if path in SLOW_FILES else len(SLOW_FILES)

    items.sort(key=rank)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("DBTFLOW_KEEP_TEST_HOME"):
        print(f"\ndbtflow test home kept at {_HOME}")
    else:
        shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_dag_id_owners() -> None:
    """Each test starts as a new user would: no DAG id of `dbtflow run` belongs to a folder yet.

    The whole session shares one home, and a DAG id belongs to the first folder that ran it there
    (another folder with a project of the same name gets a DAG id of its own): without this, the
    tests that run their own copy of the example (`dbtflow_bikeshare`) would depend on their order.
    Tests of that rule run both folders within one test.
    """
    for record in (AIRFLOW_HOME.airflow_home / "requests").glob("*.json"):
        record.unlink(missing_ok=True)


def _descendants() -> dict[int, psutil.Process]:
    try:
        return {p.pid: p for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return {}


@pytest.fixture(scope="module", autouse=True)
def _module_processes() -> Iterator[None]:
    """Stop the processes a test module started and left running when it ends.

    A process forked from the test process can outlive its test (a forked dbt, a server, a
    listener's process pool) and hold the shared home's SQLite or DuckDB files: the next modules
    of the worker then waited on their locks (a 28 s fixture took 1238 s in the full suite,
    2026-12-03; the cause is not proven). What was left is listed in
    ``$DBTFLOW_HOME/left-processes.log`` (with ``DBTFLOW_KEEP_TEST_HOME=1``, kept)."""
    before = set(_descendants())
    yield
    own = psutil.Process().cmdline()
    stopped = []
    for pid, process in _descendants().items():
        if pid in before:
            continue
        try:
            cmdline = process.cmdline()
            line = " ".join(cmdline)
            # Forks of this process (a listener's pool, titled as the worker) and multiprocessing's
            # resource tracker belong to this process's own machinery: listed, not stopped.
            kept = cmdline == own or line.startswith("[pytest-xdist") or "multiprocessing" in line
            with (_HOME / "left-processes.log").open("a") as log:
                log.write(f"{'kept' if kept else 'stopped'} {pid} {line[:300]}\n")
            if not kept:
                process.terminate()
                stopped.append(process)
        except psutil.Error:
            pass
    psutil.wait_procs(stopped, timeout=5)
    for process in stopped:
        with contextlib.suppress(psutil.Error):
            process.kill()


def _remove_dag_files_made_since(before: set[Path]) -> None:
    for path in set(AIRFLOW_HOME.dags_folder.glob("*.py")) - before:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="module", autouse=True)
def _module_dag_files() -> Iterator[None]:
    """Remove the DAG files a test module left in the shared dags folder (``dbtflow run`` writes
    one per project it runs) when the module ends.

    Airflow 3.3's ``dag.test()`` parses the whole dags folder before it runs (``sync_bag_to_db``),
    and a file whose project no longer parses (its warehouse variable was set by the test that
    ran it) costs a failed ``dbt parse`` each time: left behind, they made each ``dag.test()``
    late in a worker cost minutes (a 14 s fixture took 149 s in the full suite, 2026-12-03)."""
    before = set(AIRFLOW_HOME.dags_folder.glob("*.py"))
    yield
    _remove_dag_files_made_since(before)


@pytest.fixture(autouse=True)
def _test_dag_files(_module_dag_files: None) -> Iterator[None]:
    """The same for one test: what its own body wrote (its module's fixtures keep theirs)."""
    before = set(AIRFLOW_HOME.dags_folder.glob("*.py"))
    yield
    _remove_dag_files_made_since(before)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The embedded Airflow's metadata database, created once per session."""
    AIRFLOW_HOME.ensure_database()
    return AIRFLOW_HOME.database


def copy_project(source: Path, dest: Path) -> Path:
    shutil.copytree(
        source, dest, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages", "*.duckdb*")
    )
    return dest


@pytest.fixture(scope="session")
def bikeshare_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide copy of the example project (tests must not modify it)."""
    return copy_project(EXAMPLE, tmp_path_factory.mktemp("shared") / "bikeshare")


@pytest.fixture
def warehouse(bikeshare_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty DuckDB warehouse for the shared example project.

    The file path stays the same across tests (only the file is removed), so the project's
    parse cache, keyed by the profile's values, is reused.
    """
    path = bikeshare_dir.parent / "warehouse.duckdb"
    for stale in path.parent.glob("warehouse.duckdb*"):
        stale.unlink()
    monkeypatch.setenv("BIKESHARE_DUCKDB", str(path))
    yield path


@pytest.fixture
def own_bikeshare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the example project that a test may modify, with its own warehouse."""
    project = copy_project(EXAMPLE, tmp_path / "bikeshare")
    monkeypatch.setenv("BIKESHARE_DUCKDB", str(tmp_path / "own.duckdb"))
    return project


@pytest.fixture(scope="session")
def library_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The second example (sources, a local package, versions, selectors), as a new user has it."""
    root = tmp_path_factory.mktemp("library")
    copy_project(LIBRARY_UTILS, root / "library_utils")
    return copy_project(LIBRARY, root / "library")


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``dbtflow`` in a subprocess with the test environment."""
    return subprocess.run(
        [sys.executable, "-m", "dbtflow.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def run_dbt_cli(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``dbt`` command line in the project folder."""
    dbt = Path(sys.executable).parent / "dbt"
    return subprocess.run(
        [str(dbt), *args, "--project-dir", str(project), "--profiles-dir", str(project)],
        capture_output=True,
        text=True,
        cwd=project,
        env={**os.environ, "DO_NOT_TRACK": "1", **(env or {})},
        timeout=600,
    )


def table_counts(database: Path, tables: list[str]) -> dict[str, int]:
    import duckdb

    with duckdb.connect(str(database), read_only=True) as con:
        return {t: con.execute(f"select count(*) from {t}").fetchone()[0] for t in tables}  # type: ignore[index]


# Fails on its first attempt only: each attempt leaves a file (outside any transaction). The hook
# is rendered when it runs, so each invocation writes its own file.
FAIL_ONCE_SQL = (
    '{{ config(pre_hook="copy (select 1 as x) to '
    "'{{ env_var('FLAG_DIR') }}/attempt_{{ invocation_id }}.csv'\") }}\n"
    "select case when (select count(*) from glob('{{ env_var(\"FLAG_DIR\") }}/attempt_*.csv')) < 2\n"
    "            then error('fails on its first attempt') else 1 end as ok\n"
)

SLOW_SQL = """select count(*) as n
from range({{ var('slow_n', 10) }}) as a, range({{ var('slow_n', 10) }}) as b
where (a.range * 7 + b.range) % 13 = 0
"""

#: SLOW_SQL while the file named by $SLOW_FLAG exists, a moment once it is gone. A test that
#: kills the slow build removes the flag right after (a retry takes seconds to start dbt again),
#: so the retry's build takes no minutes of CPU from the rest of the suite.
SLOW_WHILE_FLAGGED_SQL = """select count(*) as n
from (select * from range({{ var('slow_n', 10) }})
      where exists (select 1 from glob('{{ env_var("SLOW_FLAG") }}'))) as a,
     range({{ var('slow_n', 10) }}) as b
where (a.range * 7 + b.range) % 13 = 0
"""

#: The bikeshare models that depend on stg_trips, with it: what a retry after its failure rebuilds.
STG_TRIPS_AND_DOWNSTREAM = {
    "model.bikeshare.stg_trips",
    "model.bikeshare.fct_trips",
    "model.bikeshare.station_daily_usage",
    "model.bikeshare.bike_utilization",
    "model.bikeshare.trips_microbatch",
}


def history_of_run(dag_id: str, run_id: str, url: str | None = None) -> list[Any]:
    """The run-time history's records of one DAG run, oldest first."""
    from dbtflow.monitoring.history import History

    return [r for r in History(url).runs(dag_id) if r.run_id == run_id]


def built_since(before: list[Any], after: list[Any]) -> dict[str, str]:
    """Nodes the history recorded after ``before`` was read: unique id -> status."""
    remaining = list(before)
    new = {}
    for record in after:
        if record in remaining:
            remaining.remove(record)
        else:
            new[record.unique_id] = record.status
    return new


def overlapping_builds(records: list[Any]) -> list[str]:
    """History records of one node whose build intervals overlap (built twice at once)."""
    found = []
    for uid in {r.unique_id for r in records}:
        runs = sorted((r for r in records if r.unique_id == uid), key=lambda r: r.started_at)
        for a, b in itertools.pairwise(runs):
            if b.started_at < a.started_at + a.execution_s - 0.05:
                found.append(
                    f"{uid}: {a.run_id}/{a.task_id}#{a.try_number} and {b.run_id}/{b.task_id}#{b.try_number}"
                )
    return found


def pid_building(store: Any, dag_id: str, run_id: str, node: str, timeout: float = 240) -> int:
    """Wait until a live invocation of the run holds ``node`` (a model downstream of fct_trips)
    and fct_trips' result is in, so dbt is running ``node``; return the pid running dbt."""
    upstream = "model.bikeshare.fct_trips"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = store.node_states(dag_id, run_id, [node, upstream])
        holder = states.holders.get(node)
        if holder is not None and holder.alive and upstream in states.newest:
            time.sleep(1.0)  # dbt has started the slow statement
            return int(holder.pid)
        time.sleep(0.2)
    raise AssertionError(f"{node} was never being built in {run_id}")
