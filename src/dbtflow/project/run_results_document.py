"""``run_results.json`` documents as dbtflow keeps them between tries of a task.

A kept document is dbt's own artifact with what a retry does not need taken out (each node's
compiled SQL, the command line and the vars, which may hold values users consider private), so
``dbt retry --state`` reads it as it is. After a retry, the retry's results are merged into the
previous document, so the kept document always holds the newest result of every node the task
covers, under the arguments of the original command: retrying it again retries exactly what
is still failed or skipped.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from dbtflow.project.status import RETRYABLE_STATUSES

_DROPPED_RESULT_FIELDS = ("compiled_code",)


def slim(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document without compiled SQL, the command line and the vars."""
    kept = copy.deepcopy(dict(document))
    args = kept.get("args")
    if isinstance(args, dict):
        args["vars"] = {}
        args.pop("invocation_command", None)
        # As dbt writes them: the document built in memory holds --event-time-start/-end as datetimes.
        for name, value in args.items():
            if isinstance(value, datetime):
                args[name] = value.isoformat()
    for entry in kept.get("results", ()):
        for name in _DROPPED_RESULT_FIELDS:
            if name in entry:
                entry[name] = None
    return kept


def retryable(document: Mapping[str, Any]) -> list[str]:
    """The unique ids that ``dbt retry`` would run again."""
    return [e["unique_id"] for e in document.get("results", ()) if e.get("status") in RETRYABLE_STATUSES]


def merge(previous: Mapping[str, Any], retry: Mapping[str, Any]) -> dict[str, Any]:
    """``previous`` with each node's result replaced by the retry's, where the retry ran it."""
    newer = {e["unique_id"]: e for e in retry.get("results", ())}
    merged = slim(previous)
    merged["results"] = [newer.pop(e["unique_id"], e) for e in merged.get("results", ())]
    merged["results"] += list(newer.values())
    merged["metadata"] = copy.deepcopy(retry.get("metadata", merged.get("metadata")))
    merged["elapsed_time"] = float(previous.get("elapsed_time") or 0) + float(retry.get("elapsed_time") or 0)
    return slim(merged)
