"""One deserialized DAG per DAG version in Airflow's trigger runner, not one per trigger.

A task that starts in the triggerer (``start_from_trigger``, every streamed node task) reaches the
trigger runner with its whole serialized DAG, and Airflow 3.3 deserializes that DAG for each such
trigger (``TriggerRunner.create_runtime_ti``) to find the one task. For a DAG of ``n`` tasks that
is ``n`` deserializations of ``n`` tasks: 0.16 s each at 1000 tasks here, minutes of triggerer CPU
per run. This keeps the last few deserialized DAGs, keyed by a hash of the serialized document
(a changed DAG is a different document), in the trigger runner process only: it takes effect
where ``airflow.jobs.triggerer_job_runner`` is already imported, and changes nothing elsewhere.
``DBTFLOW_TRIGGERER_DAG_CACHE=0`` turns it off.

What it replaces, and when to remove it:

- **Airflow internal:** ``airflow.jobs.triggerer_job_runner.TriggerRunner.create_runtime_ti`` in
  apache-airflow-core 3.3 (3.3.2 read) calls the module global ``DagSerialization.from_dict`` on
  the trigger's ``encoded_dag`` once per trigger. This module swaps that global for a caching
  wrapper; ``tests/test_triggerer_cache.py`` fails when the call or the global moves.
- **Upstream:** no Airflow issue tracks it as of 2026-12-03 (the closest work, apache/airflow#55068
  and #69988, load the serialized DAG per version on the triggerer job's side, not in the
  runner). Remove this module when ``create_runtime_ti`` reuses one deserialized DAG per DAG
  version, or stops deserializing the whole DAG for one task.
- **If the internal moves:** inside a trigger runner where the global is gone, ``install`` logs one
  warning naming this module and does nothing: triggers still work, only slower.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
from collections import OrderedDict
from typing import Any

from dbtflow import settings

SWITCH_ENV = settings.TRIGGERER_DAG_CACHE
RUNNER_MODULE = "airflow.jobs.triggerer_job_runner"
#: The name in ``RUNNER_MODULE`` that this module replaces.
PATCHED_NAME = "DagSerialization"
log = logging.getLogger(__name__)
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
    if not settings.triggerer_dag_cache():
        return None
    module = sys.modules.get(RUNNER_MODULE)
    if module is None:
        return None  # not a trigger runner: nothing to do
    current = getattr(module, PATCHED_NAME, None)
    if current is None or not hasattr(current, "from_dict"):
        log.warning(
            "dbtflow: %s.%s.from_dict is gone in this Airflow version, so each deferred dbtflow "
            "task deserializes its whole DAG in the triggerer (slower, still correct); "
            "see dbtflow/airflow/triggerer_cache.py for what to update or remove",
            RUNNER_MODULE,
            PATCHED_NAME,
        )
        return None
    if isinstance(current, CachingDagSerialization):
        return current
    cache = CachingDagSerialization(current)
    setattr(module, PATCHED_NAME, cache)
    return cache
