"""Astronomer Cosmos, the comparison: its own virtualenv, its DAG file, its LOCAL runs.

Cosmos is never a dependency of dbtflow: ``ensure_cosmos`` installs it (pinned to the Airflow,
dbt-core and dbt-duckdb versions of this environment, so both sides run the same dbt) into
``benchmarks/work/cosmos-venv`` the first time a benchmark needs it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from benchmarks.harness import COSMOS_VENV, COSMOS_VERSION, WORK, log, timed
from benchmarks.projects import Project, ensure_manifest, fresh_database

COSMOS_DAG = """# airflow DAG
from datetime import datetime
from cosmos import DbtDag, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import ExecutionMode, InvocationMode, LoadMode
dag = DbtDag(
    dag_id={dag_id!r},
    project_config=ProjectConfig(dbt_project_path={path!r}, manifest_path={manifest!r}),
    profile_config=ProfileConfig(
        profile_name={profile!r}, target_name={target!r}, profiles_yml_filepath={profiles!r}
    ),
    render_config=RenderConfig(load_method=LoadMode.{load}, should_detach_multiple_parents_tests=True),
    execution_config=ExecutionConfig(
        execution_mode=ExecutionMode.{mode}, invocation_mode=InvocationMode.DBT_RUNNER
    ),
    operator_args={{"install_deps": False}},
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
)
"""


def cosmos_dag_source(project: Project, dag_id: str, mode: str = "LOCAL", load: str = "DBT_MANIFEST") -> str:
    return COSMOS_DAG.format(
        dag_id=dag_id,
        path=str(project.path),
        manifest=str(project.path / "target" / "manifest.json"),
        profile=project.profile,
        target=project.target,
        profiles=str(project.path / "profiles.yml"),
        load=load,
        mode=mode,
    )


def airflow_env(home: Path, dags: Path, base: dict[str, str]) -> dict[str, str]:
    env = {
        **base,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    }
    for key in list(env):
        if key.startswith("AIRFLOW__LOGGING"):
            env.pop(key)
    return env


def ensure_cosmos() -> None:
    python = COSMOS_VENV / "bin" / "python"
    if python.exists():
        return
    log("installing Astronomer Cosmos into its own virtualenv")
    subprocess.run([sys.executable, "-m", "venv", str(COSMOS_VENV)], check=True)
    pins = [
        f"astronomer-cosmos=={COSMOS_VERSION}",
        f"apache-airflow=={metadata.version('apache-airflow')}",
        "apache-airflow-providers-standard",
        f"dbt-core=={metadata.version('dbt-core')}",
        f"dbt-duckdb=={metadata.version('dbt-duckdb')}",
        "psycopg2-binary",  # for --metadata postgres (and asyncpg: Airflow 3.3 makes an async engine)
        "asyncpg",
    ]
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], check=True)


def cosmos_local(project: Project) -> float:
    """Cosmos per-model tasks (LOCAL, dbtRunner) through ``airflow dags test``."""
    dags = WORK / "cosmos-dags"
    shutil.rmtree(dags, ignore_errors=True)
    dags.mkdir(parents=True)
    dag_id = f"cosmos_local_{project.path.name}"
    (dags / f"{dag_id}.py").write_text(cosmos_dag_source(project, dag_id))
    ensure_manifest(project)
    database = fresh_database(project)
    home = WORK / "cosmos-airflow"
    env = airflow_env(home, dags, project.env(database))
    airflow = str(COSMOS_VENV / "bin" / "airflow")
    if not (home / "airflow.db").exists():
        timed([airflow, "db", "migrate"], env=env)
    return timed([airflow, "dags", "test", dag_id], env=env)
