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
  wrapper; ``tests/airflow/test_triggerer_cache.py`` fails when the call or the global moves.
- **Upstream:** no Airflow issue tracks it as of 2026-12-03 (the closest work, apache/airflow#55068
  and #69988, load the serialized DAG per version on the triggerer job's side, not in the
  runner). Remove this module when ``create_runtime_ti`` reuses one deserialized DAG per DAG
  version, or stops deserializing the whole DAG for one task.
- **The triggerer's own process** (the supervisor of the trigger runner) pays the same cost a
  second way in 3.3.2: ``TriggerRunnerSupervisor._create_workload`` reads
  ``SerializedDagModel.dag`` (a property that deserializes the whole DAG on every read) for each
  trigger it hands to the runner, only to look one task up: quadratic in DAG size when every node
  task defers. ``install_in_supervisor`` makes that property remember the last few DAGs by
  ``(dag_version_id, dag_hash)``, in a process started as ``airflow triggerer`` only. dbtflow's
  provider information (``airflow/provider.py``), which every Airflow command loads before it
  runs, calls it. Remove it when ``_create_workload`` reads the DAG through ``DBDagBag``'s cache.
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
from types import ModuleType
from typing import Any

from dbtflow import settings
from dbtflow.airflow.after_import import after_import, in_triggerer

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


def _warn_missing(where: str) -> None:
    log.warning(
        "dbtflow: %s is gone in this Airflow version, so each deferred dbtflow task deserializes "
        "its whole DAG in the triggerer (slower, still correct); see "
        "dbtflow/airflow/triggerer_cache.py for what to update or remove",
        where,
    )


SERIALIZED_DAG_MODULE = "airflow.models.serialized_dag"


def install_in_supervisor() -> OrderedDict[tuple[str, str], Any] | None:
    """Remember deserialized DAGs in ``SerializedDagModel.dag``, in an ``airflow triggerer`` only.

    Provider information is read while Airflow's command line is built, before the triggerer
    command imports its modules (importing the ORM models then is a circular import): the command
    line's own words say which process this is, and the patch waits for Airflow to import the
    module. Returns the cache (keyed by DAG version and hash) when it is in place now.
    """
    if not settings.triggerer_dag_cache() or not in_triggerer():
        return None
    module = sys.modules.get(SERIALIZED_DAG_MODULE)
    if module is not None:
        return _cache_serialized_dags(module)
    after_import(SERIALIZED_DAG_MODULE, _cache_serialized_dags)
    return None


def _cache_serialized_dags(module: ModuleType) -> OrderedDict[tuple[str, str], Any] | None:
    model = getattr(module, "SerializedDagModel", None)
    current = getattr(model, "__dict__", {}).get("dag")
    if model is None or not isinstance(current, property) or current.fget is None:
        _warn_missing(f"{SERIALIZED_DAG_MODULE}.SerializedDagModel.dag")
        return None
    existing: OrderedDict[tuple[str, str], Any] | None = getattr(current.fget, "dbtflow_cache", None)
    if existing is not None:
        return existing
    deserialize = current.fget
    dags: OrderedDict[tuple[str, str], Any] = OrderedDict()
    lock = threading.Lock()

    def dag(self: Any) -> Any:
        key = (str(self.dag_version_id), str(self.dag_hash))
        with lock:
            found = dags.get(key)
            if found is not None:
                dags.move_to_end(key)
                return found
        value = deserialize(self)
        with lock:
            dags[key] = value
            while len(dags) > KEEP:
                dags.popitem(last=False)
        return value

    dag.dbtflow_cache = dags  # type: ignore[attr-defined]
    model.dag = property(dag, doc=current.__doc__)
    return dags


def install() -> CachingDagSerialization | None:
    """Put the cache in the trigger runner module, if this process is a trigger runner."""
    if not settings.triggerer_dag_cache():
        return None
    module = sys.modules.get(RUNNER_MODULE)
    if module is None:
        return None  # not a trigger runner: nothing to do
    current = getattr(module, PATCHED_NAME, None)
    if current is None or not hasattr(current, "from_dict"):
        _warn_missing(f"{RUNNER_MODULE}.{PATCHED_NAME}.from_dict")
        return None
    if isinstance(current, CachingDagSerialization):
        return current
    cache = CachingDagSerialization(current)
    setattr(module, PATCHED_NAME, cache)
    return cache
