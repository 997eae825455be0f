"""What ``dbtflow run`` shows: a live progress view while tasks run, and a table at the end.

After the table of a run that did not succeed come the failed tasks' reasons (see
``dbtflow.runner.failures``), each with its log, and the command that retries them.

On a terminal the live view (rich) shows counts by state, a progress bar and the tasks running
or waiting now; elsewhere (CI logs, pipes) it prints one line per finished task instead.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from dbtflow.runner.timeline import StartUp

_STYLE = {
    "success": "green",
    "failed": "red",
    "upstream_failed": "dark_orange",
    "up_for_retry": "yellow",
    "skipped": "magenta",
    "running": "cyan",
    "deferred": "blue",
    "queued": "white",
    "scheduled": "white",
}
FINISHED = frozenset({"success", "failed", "upstream_failed", "skipped", "removed"})
_LIVE_ROWS = 12


@dataclass(frozen=True)
class TaskRow:
    """One task instance as displayed and summarized."""

    task_id: str
    state: str
    try_number: int
    duration_s: float | None
    nodes: tuple[str, ...]
    #: Why a failed task failed (dbt's messages of its failed nodes, or its log's last error).
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "task_id": self.task_id,
            "state": self.state,
            "try_number": self.try_number,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "nodes": list(self.nodes),
            "error": self.error,
        }


class RunDisplay:
    """Live progress of one DAG run."""

    def __init__(
        self,
        title: str,
        total: int,
        *,
        live: bool | None = None,
        quiet: bool = False,
        startup: StartUp | None = None,
    ) -> None:
        #: What came before the DAG run (its final line says where the command's time went).
        self.startup = startup
        self.console = Console(stderr=False)
        self.quiet = quiet
        self.live_enabled = (self.console.is_terminal if live is None else live) and not quiet
        self.title = title
        self.total = total
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.bar = self.progress.add_task(title, total=total)
        self.live: Live | None = None
        self.reported: set[str] = set()
        self.started = time.monotonic()

    def __enter__(self) -> RunDisplay:
        if self.live_enabled:
            self.live = Live(self._render([]), console=self.console, refresh_per_second=8, transient=True)
            self.live.__enter__()
        elif not self.quiet:
            self.console.print(f"[bold]{self.title}[/bold]: {self.total} tasks")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def update(self, rows: Sequence[TaskRow]) -> None:
        done = sum(1 for r in rows if r.state in FINISHED)
        self.progress.update(self.bar, completed=done)
        if self.live is not None:
            self.live.update(self._render(rows))
            return
        if self.quiet:
            return
        for row in rows:
            if row.state in FINISHED and row.task_id not in self.reported:
                self.reported.add(row.task_id)
                took = "" if row.duration_s is None else f" in {row.duration_s:.1f}s"
                self.console.print(
                    Text.assemble(
                        ("  " + row.state.ljust(16), _STYLE.get(row.state, "")), f"{row.task_id}{took}"
                    )
                )

    def _render(self, rows: Sequence[TaskRow]) -> Group:
        counts = Counter(r.state for r in rows)
        summary = Text("  ".join(f"{state}: {n}" for state, n in sorted(counts.items())))
        active = [r for r in rows if r.state in ("running", "queued", "deferred", "up_for_retry")]
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("task")
        table.add_column("state")
        table.add_column("try", justify="right")
        for row in active[:_LIVE_ROWS]:
            table.add_row(row.task_id, Text(row.state, _STYLE.get(row.state, "")), str(row.try_number))
        if len(active) > _LIVE_ROWS:
            table.add_row(f"... and {len(active) - _LIVE_ROWS} more", "", "")
        return Group(self.progress, summary, table)

    def final_table(self, rows: Sequence[TaskRow], state: str, run_id: str) -> None:
        if self.quiet:
            return
        table = Table(title=f"{self.title} ({run_id})", header_style="bold")
        table.add_column("task")
        table.add_column("state")
        table.add_column("try", justify="right")
        table.add_column("duration", justify="right")
        table.add_column("nodes", justify="right")
        for row in rows:
            table.add_row(
                row.task_id,
                Text(row.state, _STYLE.get(row.state, "")),
                str(row.try_number),
                "" if row.duration_s is None else f"{row.duration_s:.2f}s",
                str(len(row.nodes)),
            )
        self.console.print(table)
        # One line, never wrapped: a log reader or a script finds it whole.
        self.console.print(self.summary_line(rows, state), soft_wrap=True)

    def summary_line(self, rows: Sequence[TaskRow], state: str) -> Text:
        """``DAG run success: 102 tasks in 13.0 s (27.3 s in all: parse 9.1 s, Airflow start
        1.2 s); 102 success``: the run's time, then the command's and where it went."""
        counts = Counter(r.state for r in rows)
        style = "bold green" if state == "success" else "bold red"
        whole = f" ({self.startup.describe()})" if self.startup is not None else ""
        return Text.assemble(
            (f"DAG run {state}", style),
            f": {len(rows)} tasks in {time.monotonic() - self.started:.1f} s{whole}; ",
            ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
        )

    def failures(self, rows: Sequence[TaskRow], logs: Mapping[str, str | None], retry_command: str) -> None:
        """Each failed task with its reason and log, then the command that retries them.

        Printed without wrapping: a log path or a retry command stays one line to copy.
        """
        from dbtflow.runner.failures import named_nodes  # (which imports this module)

        # Each node's own task first, ``dbt_build`` (which holds them all, and whose reason then
        # names no node of its own) last.
        failed = sorted(
            (r for r in rows if r.state == "failed"),
            key=lambda r: (len(r.nodes), not named_nodes(r.error), r.task_id),
        )
        if self.quiet or not failed:
            return
        self.console.print(Text("Failed tasks:", "bold red"))
        for row in failed:
            self.console.print(Text.assemble(("  " + row.task_id, "bold red")), soft_wrap=True)
            for line in (row.error or "").splitlines():
                self.console.print(Text("    " + line), soft_wrap=True)
            log = logs.get(row.task_id)
            if log:
                self.console.print(Text.assemble(("    log: ", "dim"), log), soft_wrap=True)
        self.console.print(
            Text.assemble("Retry them and their downstream: ", (retry_command, "bold")), soft_wrap=True
        )
