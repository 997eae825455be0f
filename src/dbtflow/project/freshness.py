"""``dbt source freshness`` for a set of sources, read back from dbt's ``sources.json``."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dbtflow.project.config import DbtProject
from dbtflow.project.graph import DbtGraph
from dbtflow.project.invoke import require_success, run_dbt, tmp_root
from dbtflow.project.manifest import load_manifest


@dataclass(frozen=True)
class SourceFreshness:
    """One source's freshness as dbt measured it."""

    unique_id: str
    #: ``pass``, ``warn``, ``error`` (stale) or ``runtime error`` (could not be measured).
    status: str
    age_s: float | None = None
    max_loaded_at: str | None = None
    #: dbt's thresholds (``warn_after`` / ``error_after``) or its error message.
    detail: str = ""

    def describe(self) -> str:
        age = "age unknown" if self.age_s is None else f"{_human(self.age_s)} old"
        return f"{self.unique_id}: {self.status}, {age}" + (f" ({self.detail})" if self.detail else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gated_sources(graph: DbtGraph, nodes: Sequence[str]) -> list[str]:
    """The sources with a freshness rule that ``nodes`` read, directly or through other nodes."""
    return [uid for uid in graph.upstream_sources(nodes) if graph.sources[uid].has_freshness]


def check_freshness(project: DbtProject, sources: Sequence[str], graph: DbtGraph) -> list[SourceFreshness]:
    """Run ``dbt source freshness`` for ``sources`` (unique ids) and return each one's result."""
    if not sources:
        return []
    selectors = [f"source:{graph.sources[uid].source_name}.{graph.sources[uid].name}" for uid in sources]
    with tempfile.TemporaryDirectory(prefix="dbtflow-freshness-", dir=tmp_root()) as work:
        output = Path(work) / "sources.json"
        run = run_dbt(
            project,
            ["source", "freshness", "--select", *selectors, "--output", str(output)],
            manifest=load_manifest(project),
            write_json=True,
        )
        document = json.loads(output.read_text()) if output.exists() else None
    if document is None:
        require_success(run, what="dbt source freshness failed", fix="check the sources' freshness settings.")
        return []
    wanted = set(sources)
    return [_result(entry) for entry in document.get("results", ()) if entry.get("unique_id") in wanted]


def _result(entry: dict[str, Any]) -> SourceFreshness:
    status = str(entry.get("status"))
    criteria = entry.get("criteria") or {}
    detail = ", ".join(
        f"{name.replace('_', ' ')} {rule['count']} {rule['period']}(s)"
        for name in ("warn_after", "error_after")
        if (rule := criteria.get(name)) and rule.get("count")
    )
    if status == "runtime error":
        detail = " ".join(str(entry.get("error") or entry.get("message") or "").split())
    return SourceFreshness(
        unique_id=entry["unique_id"],
        status=status,
        age_s=entry.get("max_loaded_at_time_ago_in_s"),
        max_loaded_at=entry.get("max_loaded_at"),
        detail=detail,
    )


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
