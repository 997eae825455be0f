"""Which models are slow and which are getting slower, from the run-time history.

A model's trend over its recent successful runs is the Theil-Sen slope: the median of the slopes
between every pair of runs, which one outlier cannot move. It is reported per run (against the
run's order) and per week (against wall-clock time). A model is flagged as growing when its slope
per run is at least ``min_growth`` of its median duration and at least ``min_slope_s`` (drift of a
few milliseconds on a tiny model is noise), and most pairs of runs agree on the direction (a sign
test over the pairs), so noise around a flat line is not flagged.

Hand-written rather than taken from scipy: it is a dozen lines, and dbtflow does not otherwise
need numpy or scipy.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

from dbtflow.monitoring.history import NodeRun
from dbtflow.project.status import SUCCEEDED_STATUSES

WEEK_S = 7 * 86400


@dataclass(frozen=True)
class Trend:
    """One node's recent run times and their trend."""

    unique_id: str
    runs: int
    median_s: float
    last_s: float
    slope_per_run_s: float
    slope_per_week_s: float
    #: Share of run pairs in which the later run was slower (0.5 for noise around a flat line).
    agreement: float
    growing: bool


def theil_sen(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The median of the slopes between every pair of points with different x."""
    slopes = [
        (y2 - y1) / (x2 - x1) for (x1, y1), (x2, y2) in combinations(zip(xs, ys, strict=True), 2) if x2 != x1
    ]
    return statistics.median(slopes) if slopes else 0.0


def _agreement(ys: Sequence[float]) -> float:
    pairs = [(a, b) for a, b in combinations(ys, 2) if a != b]
    return sum(1 for a, b in pairs if b > a) / len(pairs) if pairs else 0.5


def trend(
    unique_id: str,
    runs: Sequence[NodeRun],
    *,
    min_growth: float = 0.02,
    min_slope_s: float = 0.02,
    min_runs: int = 5,
) -> Trend:
    """The trend of one node's runs (oldest first, successful ones only)."""
    times = [r.execution_s for r in runs]
    median = statistics.median(times) if times else 0.0
    per_run = theil_sen([float(i) for i in range(len(times))], times) if len(times) > 1 else 0.0
    per_second = theil_sen([r.started_at for r in runs], times) if len(times) > 1 else 0.0
    agreement = _agreement(times)
    growing = len(times) >= min_runs and per_run >= max(min_growth * median, min_slope_s) and agreement >= 0.8
    return Trend(
        unique_id=unique_id,
        runs=len(times),
        median_s=median,
        last_s=times[-1] if times else 0.0,
        slope_per_run_s=per_run,
        slope_per_week_s=per_second * WEEK_S,
        agreement=agreement,
        growing=growing,
    )


def trends(history: Iterable[NodeRun], *, last: int = 20, min_growth: float = 0.02) -> list[Trend]:
    """Every node's trend over its ``last`` successful runs, slowest (by median) first."""
    by_node: dict[str, list[NodeRun]] = defaultdict(list)
    for run in history:
        if run.status in SUCCEEDED_STATUSES:
            by_node[run.unique_id].append(run)
    found = [trend(uid, runs[-last:], min_growth=min_growth) for uid, runs in by_node.items()]
    return sorted(found, key=lambda t: t.median_s, reverse=True)
