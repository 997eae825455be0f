"""Which DAG id ``dbtflow run`` gives a project, so that one project never takes over another's.

Under one ``$DBTFLOW_HOME`` every DAG id of the embedded Airflow belongs to one project folder:
its request file (``requests/<dag_id>.json``, the arguments ``dbtflow retry`` reuses) records the
folder. A DAG id names the DAG file, the run history and the streaming state, so two folders
holding projects of the same dbt name must not share one. The first folder to run keeps the
readable ``dbtflow_<name>``; another folder gets ``dbtflow_<name>_<hash of its path>``, the same
on every run. An explicit ``--dag-id`` that another folder owns is refused.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dbtflow.errors import DbtflowError
from dbtflow.runner.dagfile import default_dag_id
from dbtflow.runner.home import embedded_airflow


def _requests_folder() -> Path:
    return embedded_airflow().airflow_home / "requests"


def request_file(dag_id: str) -> Path:
    """Where ``dbtflow run`` keeps the request that made a DAG, for ``dbtflow retry DAG_ID``."""
    return _requests_folder() / f"{dag_id}.json"


def owner_of(dag_id: str) -> Path | None:
    """The project folder that ``dag_id`` belongs to, or ``None`` when no run recorded one (older
    request files may hold a relative path: those record nothing usable)."""
    try:
        folder = json.loads(request_file(dag_id).read_text()).get("project_dir")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(folder, str) or not Path(folder).is_absolute():
        return None
    return Path(folder)


@contextmanager
def requests_lock() -> Iterator[None]:
    """Serialize choosing a DAG id and writing its request file between ``dbtflow`` processes."""
    folder = _requests_folder()
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def choose_dag_id(project_dir: Path, project_name: str, pattern: str, dag_id: str | None) -> str:
    """The DAG id for a run of the project at ``project_dir`` (absolute); see the module docstring.

    Call it under ``requests_lock`` and write the request file before releasing the lock.
    """
    if dag_id:
        owner = owner_of(dag_id)
        if owner is not None and owner != project_dir:
            raise DbtflowError(
                f"DAG id {dag_id} belongs to the dbt project at {owner}, not to {project_dir}.",
                f"pass another --dag-id for {project_dir}, or delete {request_file(dag_id)} to give "
                "the id (and its run history) to this folder.",
            )
        return dag_id
    for candidate in (
        default_dag_id(project_name, pattern),
        default_dag_id(project_name, pattern, folder=project_dir),
    ):
        owner = owner_of(candidate)
        if owner is None or owner == project_dir:
            return candidate
    raise DbtflowError(
        f"The DAG ids {default_dag_id(project_name, pattern)} and {candidate} belong to other "
        f"folders ({owner_of(default_dag_id(project_name, pattern))} and {owner}), not to {project_dir}.",
        f"pass --dag-id with an id of your own for {project_dir}.",
    )
