"""One dbt invocation over many nodes (the single and grouped patterns), and its retry.

The first try runs the command (``dbt build`` by default) for the selection from the cached
manifest. A later try, given the document kept from the previous one, runs ``dbt retry`` against
it, so only the nodes that failed or were skipped run again; when the previous try left no
document (dbt never got to run) or nothing in it failed, the command runs again in full.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbtflow.project.cache import cache_entry
from dbtflow.project.config import DbtProject
from dbtflow.project.event_time import EventTimeWindow
from dbtflow.project.events import DbtEvent
from dbtflow.project.invoke import DbtRun, run_dbt, tmp_root
from dbtflow.project.manifest import load_manifest
from dbtflow.project.results import NodeResult, results_from_run_results
from dbtflow.project.run_results_document import merge, retryable, slim

PARTIAL_PARSE_FILE = "partial_parse.msgpack"


@dataclass
class BatchOutcome:
    """What one try did, and the document to keep for the next try."""

    run: DbtRun
    #: ``"build"`` (or the chosen command) for a full run, ``"retry"`` for ``dbt retry``.
    mode: str
    #: The unique ids a retry ran again (empty for a full run).
    retried: list[str] = field(default_factory=list)
    #: The newest result of every node this task covers (previous tries merged in).
    document: dict[str, Any] | None = None

    @property
    def results(self) -> list[NodeResult]:
        return results_from_run_results(self.document) if self.document else self.run.results


def run_batch(
    project: DbtProject,
    command: Sequence[str],
    *,
    previous: Mapping[str, Any] | None = None,
    threads: int | None = None,
    on_event: Callable[[DbtEvent], None] | None = None,
    event_time: EventTimeWindow | None = None,
) -> BatchOutcome:
    """Run ``command`` (``["build", "--select", ...]``), or ``dbt retry`` when ``previous`` has
    failed or skipped nodes.

    ``event_time`` (the DAG run's data interval) goes to the command; ``dbt retry`` reuses the
    window of the invocation it retries, and runs again only a microbatch model's failed batches.
    """
    to_retry = retryable(previous) if previous else []
    if previous is None or not to_retry:
        run = run_dbt(
            project,
            command,
            manifest=load_manifest(project),
            on_event=on_event,
            threads=threads,
            event_time=event_time,
        )
        document = slim(run.run_results) if run.run_results else None
        return BatchOutcome(run=run, mode=command[0], document=document)
    with tempfile.TemporaryDirectory(prefix="dbtflow-retry-", dir=tmp_root()) as work:
        state, target = Path(work) / "state", Path(work) / "target"
        state.mkdir()
        target.mkdir()
        artifacts_file = state / "run_results.json"
        artifacts_file.write_text(json.dumps(previous))
        _seed_partial_parse(project, target)
        run = run_dbt(
            project,
            ["retry", "--state", str(state)],
            on_event=on_event,
            threads=threads,
            target_dir=target,
        )
    document = merge(previous, run.run_results) if run.run_results else slim(previous)
    return BatchOutcome(run=run, mode="retry", retried=to_retry, document=document)


def _seed_partial_parse(project: DbtProject, target: Path) -> None:
    """Give ``dbt retry`` (which always parses) the cached parse's state, so it parses partially."""
    cached = cache_entry(project).target_dir / PARTIAL_PARSE_FILE
    if cached.exists():
        shutil.copyfile(cached, target / PARTIAL_PARSE_FILE)
