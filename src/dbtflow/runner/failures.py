"""Why each failed task of a run failed, shown after the results table and in ``--summary-json``.

Without it, a failed run ends with ``failed customers`` and a table, and dbt's own words ("Binder
Error: Referenced column ... not found", "Got 3 results, configured to fail if != 0") are only
in a task log somewhere under ``$DBTFLOW_HOME``. The reason of a task comes from the best place
that has it:

* the failed node results of its nodes in dbtflow's state store (the streamed and per_task
  executions record every result there as dbt reports it), with dbt's message and, for a test,
  its failure count;
* otherwise the last error of its log (the exception that failed the task, which names the
  failed nodes for the single and grouped patterns, or a hook, a dead process...).

Locally the log is the file of the try that failed; for a deployment, the same log through
the REST API.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dbtflow.project.results import NodeResult
from dbtflow.runner.display import TaskRow

#: Lines of a dbt message shown per node (a compile error's first lines say what and where).
MESSAGE_LINES = 4
#: Entries (unindented lines) of a log's last error shown, as for a task whose failure is no node's.
LOG_ERROR_LINES = 8
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_UNIQUE_ID = re.compile(r"[a-z_]+\.[\w-]+\.\S+")
_ERROR_LEVELS = ("error", "critical", "fatal", "exception")


@dataclass(frozen=True)
class FailureReason:
    """Why one task failed: the text, where its log is, and how to retry it."""

    task_id: str
    error: str
    #: A local log file, or the REST API path of the log of a deployment's task.
    log: str | None


def node_lines(result: NodeResult) -> list[str]:
    """One node's failure: its id, status (with a test's failure count) and dbt's first lines."""
    lines = [line.rstrip() for line in _ANSI.sub("", result.message or "").splitlines() if line.strip()]
    first, *rest = lines or [""]
    status = result.status
    if result.failures:
        status += f" ({result.failures} failing row{'s' if result.failures != 1 else ''})"
    head = f"{result.unique_id}: {status}: {' '.join(first.split())}".rstrip(": ")
    # Dedented together, so that a caret under a SQL line still points at its column.
    more = textwrap.dedent("\n".join(rest[: MESSAGE_LINES - 1])).splitlines()
    return [head, *(f"    {line}" for line in more)]


def newest_failed(results: Iterable[NodeResult]) -> dict[str, NodeResult]:
    """The nodes whose newest result (results in the order recorded) is a failure."""
    newest: dict[str, NodeResult] = {}
    for result in results:
        newest[result.unique_id] = result
    return {uid: r for uid, r in newest.items() if r.failed}


def last_log_error(records: Iterable[Any]) -> str | None:
    """The last error of a task log (its records: JSON lines or API entries, as dicts or text).

    An exception that failed the task wins over a logged error line: its text names the cause.
    """
    last: str | None = None
    for record in records:
        if isinstance(record, str):
            try:
                record = json.loads(record)
            except ValueError:
                if " ERROR " in record or record.startswith("ERROR"):
                    last = record
                continue
        if not isinstance(record, Mapping):
            continue
        # "exception" in a task log file; "error_detail" in some API answers.
        details = record.get("exception") or record.get("error_detail")
        if isinstance(details, list) and details:
            exc = details[-1] if isinstance(details[-1], Mapping) else {}
            value = str(exc.get("exc_value") or "").strip()
            kind = str(exc.get("exc_type") or "")
            if value or kind:
                last = value if kind in ("AirflowException", "") else f"{kind}: {value}"
                continue
        if str(record.get("level", "")).lower() in _ERROR_LEVELS and record.get("event"):
            last = str(record["event"])
    if last is None:
        return None
    return _clip(_ANSI.sub("", last)) or None


def _clip(text: str) -> str:
    """A log error's first lines: each entry (a line that is not indented, as one per failed node)
    with its first few indented lines, and at most ``LOG_ERROR_LINES`` entries."""
    kept: list[str] = []
    entries = indented = 0
    for line in (line.rstrip() for line in text.splitlines() if line.strip()):
        if line.startswith((" ", "\t")):
            indented += 1
            if indented < MESSAGE_LINES:
                kept.append(line)
            continue
        entries += 1
        indented = 0
        if entries > LOG_ERROR_LINES:
            kept.append("...")
            break
        kept.append(line)
    return "\n".join(kept)


def read_log_file(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def reasons(
    rows: Sequence[TaskRow],
    results: Iterable[NodeResult],
    log_of: Mapping[str, str | None],
    log_records: Callable[[str], Iterable[Any]],
) -> dict[str, FailureReason]:
    """The reason of each failed task.

    ``results`` are the run's node results in the order recorded, ``log_of`` the log of each
    failed task's failed try, and ``log_records(task_id)`` that log's records. A task's failed
    nodes already shown under a task with fewer nodes (a node's own task, before ``dbt_build``
    that holds them all) are not repeated: that task gets its log's last error instead.
    """
    failed_nodes = newest_failed(results)
    shown: set[str] = set()
    found: dict[str, FailureReason] = {}
    for row in sorted((r for r in rows if r.state == "failed"), key=lambda r: (len(r.nodes), r.task_id)):
        mine = [failed_nodes[uid] for uid in row.nodes if uid in failed_nodes and uid not in shown]
        if mine:
            shown.update(r.unique_id for r in mine)
            error = "\n".join(line for r in mine for line in node_lines(r))
        else:
            logged = last_log_error(log_records(row.task_id)) or "no error in its log (see the log)"
            error = _without_shown(logged, shown)
        found[row.task_id] = FailureReason(row.task_id, error, log_of.get(row.task_id))
    # Where nodes are unknown (a deployment's tasks), a log's error that lists the failed nodes
    # of tasks naming fewer of them (dbt_build's) drops them in the same way.
    named = {task_id: named_nodes(reason.error) for task_id, reason in found.items()}
    for task_id, reason in found.items():
        fewer = {uid for uids in named.values() if len(uids) < len(named[task_id]) for uid in uids}
        if fewer:
            found[task_id] = replace(reason, error=_without_shown(reason.error, fewer))
    return found


def named_nodes(error: str | None) -> set[str]:
    """The nodes whose failure a reason lists (its lines ``<unique id>: <status>...``)."""
    heads = (line.split(":", 1)[0] for line in (error or "").splitlines() if ": " in line)
    return {head for head in heads if _UNIQUE_ID.fullmatch(head)}


def _without_shown(text: str, shown: set[str]) -> str:
    """A log's error without the entries of nodes already shown (``dbt_build`` lists its
    failed nodes, which their own tasks show just above); what else failed (a hook) stays."""
    kept: list[str] = []
    skipping = False
    for line in text.splitlines():
        if line.startswith((" ", "\t")) and skipping:
            continue
        skipping = line.split(":", 1)[0] in shown
        if not skipping:
            kept.append(line)
    return "\n".join(kept) or text


def with_errors(rows: Sequence[TaskRow], found: Mapping[str, FailureReason]) -> list[TaskRow]:
    """The rows, each failed one with its reason's text."""
    return [replace(r, error=found[r.task_id].error) if r.task_id in found else r for r in rows]


def local_reasons(dag_id: str, run_id: str, rows: Sequence[TaskRow]) -> dict[str, FailureReason]:
    """Reasons of a run of the embedded Airflow: the state store and the task log files."""
    if not any(r.state == "failed" for r in rows):
        return {}
    from dbtflow.state.store import StateStore

    logs = _local_log_paths(dag_id, run_id)
    try:
        results = [stored.result for stored in StateStore().results_of_run(dag_id, run_id)]
    except Exception:  # a run whose tasks never wrote to the store: the logs say why
        results = []
    return reasons(
        rows,
        results,
        {task_id: str(path) for task_id, path in logs.items()},
        lambda task_id: read_log_file(logs[task_id]) if task_id in logs else [],
    )


def _local_log_paths(dag_id: str, run_id: str) -> dict[str, Path]:
    """The log file of each failed task's failed try (as ``LocalDagRun.log_path`` renders it)."""
    from airflow import settings
    from airflow.configuration import conf
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.helpers import log_filename_template_renderer
    from airflow.utils.state import TaskInstanceState

    render = log_filename_template_renderer()
    base = Path(conf.get("logging", "base_log_folder"))
    session = settings.get_session()()
    try:
        tis = (
            session.query(TaskInstance)
            .filter_by(dag_id=dag_id, run_id=run_id, state=TaskInstanceState.FAILED)
            .all()
        )
        return {ti.task_id: base / render(ti=ti, try_number=ti.try_number) for ti in tis}
    finally:
        session.close()
