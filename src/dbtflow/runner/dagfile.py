"""The DAG file that ``dbtflow run`` writes for a project, so the user needs no dags folder.

The file is an ordinary dbtflow DAG file: it is loaded through Airflow's own DAG loader, and it
can be copied into a real deployment as it is.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbtflow.files import write_atomic

_TEMPLATE = '''"""Airflow DAG written by `dbtflow run` for the dbt project at {path}.

It is regenerated on every run; copy it into a dags folder to schedule the project.
"""

import datetime  # noqa: F401  (used by the arguments' reprs)
{imports}
from dbtflow import DbtProject, dbt_dag

dag = dbt_dag(
    DbtProject({project_args}),
    dag_id={dag_id!r},
{dag_args})
'''


@dataclass(frozen=True)
class DagFileSpec:
    """Everything a generated DAG file passes to ``DbtProject`` and ``dbt_dag``."""

    dag_id: str
    project_path: Path
    profiles_dir: Path | None = None
    target: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    profile: str | None = None
    profile_name: str | None = None
    manifest_path: Path | None = None
    dag_args: dict[str, Any] = field(default_factory=dict)
    #: A cron expression or preset: the DAG's runs cover data intervals of it, in UTC (Airflow 3's
    #: plain ``schedule="@daily"`` gives runs an empty interval, which maps to no event time).
    schedule: str | None = None

    def source(self) -> str:
        project_args = [repr(str(self.project_path))]
        if self.profiles_dir is not None:
            project_args.append(f"profiles_dir={str(self.profiles_dir)!r}")
        if self.target is not None:
            project_args.append(f"target={self.target!r}")
        if self.vars:
            project_args.append(f"vars={self.vars!r}")
        if self.profile is not None:
            project_args.append(f"profile={self.profile!r}")
        if self.profile_name is not None:
            project_args.append(f"profile_name={self.profile_name!r}")
        if self.manifest_path is not None:
            project_args.append(f"manifest_path={str(self.manifest_path)!r}")
        dag_args = "".join(f"    {key}={value!r},\n" for key, value in self.dag_args.items())
        imports = ""
        if self.schedule is not None:
            imports = "from airflow.timetables.interval import CronDataIntervalTimetable\n"
            dag_args += f"    schedule=CronDataIntervalTimetable({self.schedule!r}, timezone='UTC'),\n"
        return _TEMPLATE.format(
            imports=imports,
            path=self.project_path,
            project_args=", ".join(project_args),
            dag_id=self.dag_id,
            dag_args=dag_args,
        )

    def write(self, dags_folder: Path) -> Path:
        path = dags_folder / f"{self.dag_id}.py"
        write_atomic(path, self.source().encode())
        return path


def default_dag_id(project_name: str, pattern: str = "per_model", folder: Path | None = None) -> str:
    """``dbtflow_<project>``, with ``_<pattern>`` for patterns other than per_model (each pattern
    has its own task layout, so each gets its own DAG and run history), and with ``folder`` a
    short hash of that folder's absolute path (for a second folder holding a project of the
    same name)."""
    suffix = "" if pattern == "per_model" else f"_{pattern}"
    if folder is not None:
        suffix += "_" + hashlib.blake2b(str(folder).encode(), digest_size=4).hexdigest()
    return "dbtflow_" + re.sub(r"[^A-Za-z0-9_]", "_", project_name) + suffix
