"""One deserialized DAG per DAG version in Airflow's trigger runner, not one per trigger.

A task that starts in the triggerer (``start_from_trigger``, every streamed node task) reaches the
trigger runner with its whole serialized DAG, and Airflow 3.3 deserializes that DAG for each such
trigger (``TriggerRunner.create_runtime_ti``) to find the one task. For a DAG of ``n`` tasks that
is ``n`` deserializations of ``n`` tasks: 0.16 s each at 1000 tasks here, minutes of triggerer CPU
per run. This keeps the last few deserialized DAGs, keyed by a hash of the serialized document
(a changed DAG is a different document), in the trigger runner process only: it takes effect
where ``airflow.jobs.triggerer_job_runner`` is already imported, and changes nothing elsewhere.
``DBTFLOW_TRIGGERER_DAG_CACHE=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections import OrderedDict
from typing import Any

SWITCH_ENV = "DBTFLOW_TRIGGERER_DAG_CACHE"
RUNNER_MODULE = "airflow.jobs.triggerer_job_runner"
#: DAG versions kept (a triggerer serves many DAGs; the recent ones are the running ones).
KEEP = 8


class CachingDagSerialization:
    """Airflow's ``DagSerialization`` with a memory of ``from_dict`` for the trigger runner."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped
        self.dags: OrderedDict[str, Any] = OrderedDict()
        self.lock = threading.Lock()
        self.deserialized = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

    def from_dict(self, serialized: dict[str, Any]) -> Any:
        # Not sorted: the same document arrives with the same key order (0.01 s at 1000 tasks).
        key = hashlib.blake2b(json.dumps(serialized, default=str).encode(), digest_size=16).hexdigest()
        with self.lock:
            dag = self.dags.get(key)
            if dag is not None:
                self.dags.move_to_end(key)
                return dag
        dag = self.wrapped.from_dict(serialized)
        with self.lock:
            self.deserialized += 1
            self.dags[key] = dag
            while len(self.dags) > KEEP:
                self.dags.popitem(last=False)
        return dag


def install() -> CachingDagSerialization | None:
    """Put the cache in the trigger runner module, if this process is a trigger runner."""
    if os.environ.get(SWITCH_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    module = sys.modules.get(RUNNER_MODULE)
    current = getattr(module, "DagSerialization", None)
    if current is None:
        return None
    if isinstance(current, CachingDagSerialization):
        return current
    cache = CachingDagSerialization(current)
    module.DagSerialization = cache  # type: ignore[union-attr]
    return cache
