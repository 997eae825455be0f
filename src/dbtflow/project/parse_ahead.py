"""A first parse in Airflow's dag-processor that survives the DAG-file import timeout.

A DAG file that finds no cached parse of its project parses it with dbt. Airflow's dag-processor
ends a file's load after ``[core] dagbag_import_timeout`` (30 s by default), and a first parse of
a large project on a loaded machine takes longer: measured on 2026-12-03, a 500-model chain was
timed out nine times in a row under a real scheduler, each attempt starting the parse again from
nothing and the DAG absent for six minutes, with an error that blamed the project.

So, in the dag-processor only, the parse runs in a forked child in a session of its own. The
file's load waits for it; if Airflow's timeout ends the load, the child goes on and writes the
cache, and the next load of the file (or one already waiting on the cache's lock) uses it. The
error then says what happened and what to do, instead of blaming the project. Elsewhere (``dbtflow
run``, ``airflow dags test``, workers) the parse runs in the process as before.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from dbtflow.errors import DbtflowError

T = TypeVar("T")
#: The file in which the child leaves the error that ended its parse, for the waiting load.
ERROR_FILE = "parse-error.json"


def in_dag_processor() -> bool:
    """Whether this process is (a child of) Airflow's dag-processor."""
    return sys.argv[1:2] == ["dag-processor"]


def parse_in_child(
    entry_root: Path, fill: Callable[[], None], read: Callable[[], T | None], project: str
) -> T:
    """Run ``fill`` (which parses and writes the cache under the cache's lock) in a forked child
    that outlives this process, wait for it, and return ``read()``."""
    error_file = entry_root / ERROR_FILE
    error_file.unlink(missing_ok=True)
    pid = os.fork()
    if pid == 0:  # the child: never returns
        _run_child(fill, error_file)
    try:
        _, status = os.waitpid(pid, 0)
    except BaseException as exc:
        if type(exc).__name__ != "AirflowTaskTimeout":
            raise
        raise DbtflowError(
            f"Airflow's DAG import timeout ended this file's load while dbt parsed {project} for the "
            f"first time; the parse goes on in the background (pid {pid}) and the file loads once "
            "it is done.",
            "wait for the dag-processor's next parse of the file; to load it at once, raise "
            "[core] dagbag_import_timeout (AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT) above the "
            f"project's parse time, or parse ahead with `dbtflow render {project}` under the same "
            "DBTFLOW_HOME.",
        ) from None
    found = read()
    if found is not None:
        return found
    if error_file.exists():
        error = json.loads(error_file.read_text())
        raise DbtflowError(error["cause"], error["fix"])
    raise DbtflowError(
        f"dbt's parse of {project} ended (exit status {os.waitstatus_to_exitcode(status)}) without "
        "caching the project.",
        f"run `dbt parse --project-dir {project}` to see what went wrong.",
    )


def _run_child(fill: Callable[[], None], error_file: Path) -> None:
    code = 1
    try:
        os.setsid()  # not ended with the file processor, nor by signals to its group
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        fill()
        code = 0
    except DbtflowError as exc:
        error_file.write_text(json.dumps({"cause": exc.cause, "fix": exc.fix}))
    except BaseException as exc:  # the child reports everything, then exits
        cause = f"dbt's parse failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
        error_file.write_text(json.dumps({"cause": cause, "fix": "see the dag-processor's log."}))
    finally:
        os._exit(code)
