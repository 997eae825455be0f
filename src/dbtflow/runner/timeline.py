"""Where the time of one ``dbtflow run`` (or ``retry``) went, for the last line of its output.

The DAG run's own time is only part of what the user waited for: the project's parse (or its
cached graph's load) and Airflow's start-up come before it. The final line names both beside the
command's whole time, so that none of it is hidden (``StartUp``, filled in by
``dbtflow.runner.run`` and shown by ``dbtflow.runner.display``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


def process_age_s() -> float:
    """Seconds since this process started: the command's whole time so far."""
    import psutil  # (Airflow's dependency)

    return max(0.0, time.time() - psutil.Process().create_time())


@dataclass
class StartUp:
    """The phases before the DAG run: the parse, then Airflow's start (from the plan made to the
    DAG run created and about to be driven: Airflow's import, the DAG file's load, the metadata
    database, the run's creation)."""

    parse_s: float = 0.0
    #: When the parse ended and Airflow's start began (``time.monotonic()``).
    planned_at: float = field(default_factory=time.monotonic)
    airflow_start_s: float | None = None

    def airflow_started(self) -> None:
        """The DAG run is about to be driven: Airflow's start ends now."""
        self.airflow_start_s = time.monotonic() - self.planned_at

    def describe(self) -> str:
        """``27.3 s in all: parse 9.1 s, Airflow start 1.2 s``."""
        phases = [f"parse {self.parse_s:.1f} s"]
        if self.airflow_start_s is not None:
            phases.append(f"Airflow start {self.airflow_start_s:.1f} s")
        return f"{process_age_s():.1f} s in all: {', '.join(phases)}"
