"""Run one dbt command in this process through ``dbtRunner``, with dbtflow's standard flags.

Every invocation gets its own target and log folders (so concurrent tasks never overwrite each
other's artifacts and nothing lands in the project folder), dbt's own console output switched
off (its events go to the callbacks instead), anonymous usage tracking off, and the profile's
secrets in the process environment only while dbt runs. dbt allows one invocation at a time per
process; a lock enforces it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbtflow.errors import DbtflowError
from dbtflow.project.config import DbtProject
from dbtflow.project.event_time import EventTimeWindow, event_time_flags
from dbtflow.project.events import BatchResults, DbtEvent, event_record, node_result
from dbtflow.project.profile import environment
from dbtflow.project.results import NodeResult, results_from_run_results
from dbtflow.settings import dbtflow_home

_INVOCATION_LOCK = threading.Lock()
_QUIET_ENV = {"DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DO_NOT_TRACK": "1"}

EventSink = Callable[[DbtEvent], None]
ResultSink = Callable[[NodeResult], None]


@dataclass
class DbtRun:
    """The outcome of one dbt invocation."""

    args: list[str]
    success: bool
    elapsed_s: float
    results: list[NodeResult] = field(default_factory=list)
    run_results: dict[str, Any] | None = None
    error: str | None = None
    #: ``dbt parse`` returns the ``Manifest``; ``dbt ls`` returns its output lines.
    payload: Any = None


def selection_args(
    select: Sequence[str] = (), exclude: Sequence[str] = (), selector: str | None = None
) -> list[str]:
    """dbt's ``--select`` / ``--exclude`` / ``--selector`` flags for a selection."""
    args: list[str] = []
    if select:
        args += ["--select", *select]
    if exclude:
        args += ["--exclude", *exclude]
    if selector:
        args += ["--selector", selector]
    return args


def run_dbt(
    project: DbtProject,
    command: Sequence[str],
    *,
    manifest: Any = None,
    on_event: EventSink | None = None,
    on_result: ResultSink | None = None,
    target_dir: Path | None = None,
    threads: int | None = None,
    for_parse: bool = False,
    write_json: bool = False,
    event_time: EventTimeWindow | None = None,
) -> DbtRun:
    """Run ``dbt <command>`` for the project in this process.

    ``manifest`` is an already parsed ``Manifest``: dbt then skips parsing. ``target_dir`` keeps
    dbt's artifacts there; without it they go to a temporary folder that is removed afterwards
    (``run_results.json`` is read first). dbt writes its JSON artifacts only with ``write_json``
    (or for ``parse``): writing ``manifest.json`` costs about 0.3 s per invocation.
    ``event_time`` is the DAG run's data interval: microbatch models build its batches
    (``dbtflow.project.event_time``; ``dbt build`` and ``dbt run`` only).
    """
    from dbt.cli.main import dbtRunner

    batches = BatchResults()

    def callback(event: Any) -> None:
        if on_event is not None:
            on_event(event_record(event))
        if on_result is not None:
            batches.see(event)
            result = node_result(event)
            if result is not None:
                result = batches.result(result)  # None: one batch of a microbatch model ended
            if result is not None:
                on_result(result)

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dbtflow-", dir=tmp_root())))
        target = target_dir or workdir / "target"
        prepared = project.profile_source.prepare(workdir / "profile", for_parse=for_parse)
        args = [
            *command,
            "--project-dir", str(project.path),
            "--profiles-dir", str(prepared.profiles_dir),
            "--profile", prepared.profile_name,
            "--log-path", str(workdir / "logs"),
            "--log-level", "none",
            "--log-level-file", "none",
            "--no-use-colors",
            "--no-send-anonymous-usage-stats",
        ]  # fmt: skip
        # `dbt deps` takes neither a target path nor a target.
        if command[0] != "deps":
            args += ["--target-path", str(target)]
            if prepared.target:
                args += ["--target", prepared.target]
        if not write_json and command[0] not in ("parse", "deps"):
            args.append("--no-write-json")
        if project.vars:
            args += ["--vars", project.vars_json]
        if threads:
            args += ["--threads", str(threads)]
        args += event_time_flags(command[0], event_time)
        args += list(project.extra_args)
        # dbt reads --state and --defer from these where a command takes them (and only there).
        deferral = {"DBT_STATE": str(project.defer_state), "DBT_DEFER": "true"} if project.defer_state else {}
        stack.enter_context(environment({**_QUIET_ENV, **deferral, **prepared.env}))
        stack.enter_context(_INVOCATION_LOCK)
        lock_key = project.profile_source.writer_lock_key()
        if lock_key is not None and command[0] not in ("parse", "ls", "list", "deps"):
            stack.enter_context(_writer_lock(lock_key))
        runner = dbtRunner(manifest=manifest, callbacks=[callback] if (on_event or on_result) else [])
        started = time.perf_counter()
        try:
            outcome = runner.invoke(args)
        finally:
            _release_embedded_databases()
        elapsed = time.perf_counter() - started
        run_results = _read_json(target / "run_results.json") or _run_results_of(outcome.result)
        results = results_from_run_results(run_results) if run_results else []
        error = None
        if outcome.exception is not None:
            error = _one_line(outcome.exception)
        if target_dir is None:
            shutil.rmtree(target, ignore_errors=True)
        return DbtRun(
            args=_redacted(args),
            success=bool(outcome.success),
            elapsed_s=elapsed,
            results=results,
            run_results=run_results,
            error=error,
            payload=outcome.result if command[0] in ("parse", "ls", "list") else None,
        )


def warm_up(project: DbtProject, manifest: Any) -> None:
    """Pay dbt's first-invocation costs in this process (profile and project validation, adapter
    set-up, serializer code generation: about 0.6 s), so that processes forked from it start
    their dbt invocations at once."""
    run_dbt(project, ["ls", "--resource-type", "model"], manifest=manifest)


def require_success(run: DbtRun, *, what: str, fix: str) -> None:
    """Raise a ``DbtflowError`` when dbt itself failed (not when nodes failed)."""
    if run.error is not None:
        raise DbtflowError(f"{what}: {run.error}", fix)


@contextmanager
def _writer_lock(key: str) -> Iterator[None]:
    """Take turns with other processes of this machine that write the same single-writer database."""
    folder = dbtflow_home() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.blake2b(key.encode(), digest_size=12).hexdigest()
    with (folder / f"{name}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _release_embedded_databases() -> None:
    """Close the DuckDB database that dbt-duckdb keeps open in the process between invocations.

    DuckDB lets one process write a database file; a long-lived process (a test session, a
    worker running several tasks) would otherwise lock every other process out of the file.
    """
    module = sys.modules.get("dbt.adapters.duckdb.connections")
    if module is None:
        return
    manager = module.DuckDBConnectionManager
    with manager._LOCK:
        env, manager._ENV = manager._ENV, None
    if env is not None:
        env.close()


def tmp_root() -> str:
    """Where invocations keep their temporary folders (under the dbtflow home)."""
    root = dbtflow_home() / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return str(root)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with path.open() as fh:
            loaded = json.load(fh)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _run_results_of(result: Any) -> dict[str, Any] | None:
    """dbt's ``run_results.json`` document built from the invocation's result object (what dbt
    writes when JSON artifacts are on), or ``None`` for commands that do not run nodes."""
    from dbt.artifacts.schemas.run import RunExecutionResult, RunResultsArtifact

    if not isinstance(result, RunExecutionResult):
        return None
    artifact = RunResultsArtifact.from_execution_results(
        results=result.results,
        elapsed_time=result.elapsed_time,
        generated_at=result.generated_at,
        args=result.args,
    )
    document: dict[str, Any] = artifact.to_dict(omit_none=False)
    return document


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _redacted(args: list[str]) -> list[str]:
    """The argument list as it may be logged (``--vars`` can hold values users consider private)."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg == "--vars":
            out[i + 1] = "<vars>"
    return out
