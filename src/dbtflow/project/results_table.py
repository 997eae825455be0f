"""Plain-text reports of node results (a results table, a failure list), for task logs and the CLI."""

from __future__ import annotations

import re
from collections.abc import Iterable

from dbtflow.project.results import NodeResult


def results_table(results: Iterable[NodeResult]) -> str:
    """A fixed-width table: one line per node with status, time and rows affected (then each
    microbatch model's batches)."""
    results = list(results)
    rows = [
        (
            r.unique_id,
            r.status,
            f"{r.execution_time:.2f}s",
            "" if r.rows_affected is None else str(r.rows_affected),
        )
        for r in results
    ]
    header = ("node", "status", "time", "rows")
    widths = [
        max(len(header[i]), *(len(row[i]) for row in rows)) if rows else len(header[i]) for i in range(4)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines += batch_lines(results)
    return "\n".join(lines)


def batch_lines(results: Iterable[NodeResult]) -> list[str]:
    """One line per microbatch model: each of its batches with its status."""
    return [
        f"{r.unique_id} batches: " + ", ".join(f"{batch} {status}" for batch, status in r.batches.items())
        for r in results
        if r.batches
    ]


#: Terminal colour codes (dbt Cloud and coloured runs leave them in messages).
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def failure_summary(results: Iterable[NodeResult]) -> str:
    """One entry per failed node: its id, status and dbt's message.

    A message's first line follows the id; its other lines (a unit test's diff of actual against
    expected rows) follow, indented, so that a table stays a table.
    """
    entries = []
    for r in results:
        if not r.failed:
            continue
        lines = [line.rstrip() for line in _ANSI.sub("", r.message or "").splitlines() if line.strip()]
        first, *rest = lines or [""]
        head = f"{r.unique_id}: {r.status}: {' '.join(first.split())}"
        entries.append("\n".join([head, *(f"    {line}" for line in rest)]))
    return "\n".join(entries)
