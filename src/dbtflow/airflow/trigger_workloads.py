"""dbtflow's triggers reach Airflow's trigger runner without a copy of their whole DAG.

A task that starts in the triggerer (``start_from_trigger``: every streamed node task) is handed
to the trigger runner with its DAG's serialized document and its DAG run, so that the runner can
render the task's templates. Airflow 3.3.2's ``TriggerRunnerSupervisor._create_workload`` puts the
whole document in each trigger's workload: at 1000 node tasks, 1000 copies of a 1000-task
document (over a gigabyte) go to the runner in one message, and the supervisor and the runner
deadlocked here on 2026-12-03 (the supervisor blocked sending it while the runner blocked writing
logs to the supervisor; py-spy dumps of both). dbtflow's triggers render no templates and read
their task instance's identity only, which Airflow gives a trigger without a document too (its
``TaskInstanceDTO``). So, in an ``airflow triggerer`` process, workloads of dbtflow's triggers are
sent without ``dag_data``/``dag_run_data``, and built without loading the document at all;
other triggers' are untouched.

- **Airflow internals:** ``airflow.jobs.triggerer_job_runner.TriggerRunnerSupervisor._create_workload``
  (it builds ``RunTrigger(..., dag_data=serialized_dag_model.data, ...)`` for a start-from-trigger
  task, and the workload of a plain deferred task when its ``dag_bag`` finds no serialized DAG)
  and ``TriggerRunner.create_triggers`` (a workload without ``dag_data`` gets
  ``trigger.task_instance = ti``), apache-airflow-core 3.3 (3.3.2 read);
  ``tests/airflow/test_trigger_workloads.py`` fails when either changes.
- **Remove it when** Airflow sends a DAG document once per DAG version, or only the task's part.
"""

from __future__ import annotations

import functools
import logging
from types import ModuleType
from typing import Any

from dbtflow.airflow.after_import import after_import, in_triggerer

RUNNER_MODULE = "airflow.jobs.triggerer_job_runner"
#: The triggers whose workloads need no DAG document (they render no templates).
OWN_TRIGGERS = "dbtflow.airflow.triggers."
log = logging.getLogger(__name__)


def install_in_triggerer() -> None:
    """Slim dbtflow's workloads, in an ``airflow triggerer`` process only (see the module)."""
    if in_triggerer():
        after_import(RUNNER_MODULE, _wrap)


class _NoDagDocuments:
    """A ``DBDagBag`` stand-in that finds no serialized DAG.

    Airflow's ``_create_workload`` loads the run's serialized DAG model for every trigger of a
    task (a query and a JSON decode of the whole document, then its deserialization), only to
    see whether the task starts from the trigger and to ship the document. For dbtflow's
    triggers, which need no document, that was the triggerer's largest cost: 1511 of its
    supervisor's 7932 samples in a 500-chain run (py-spy, 2026-12-03).
    """

    def get_serialized_dag_model_for_run(self, dag_run: Any, *, session: Any) -> None:
        return None

    def get_serialized_dag_model(self, version_id: Any, session: Any) -> None:
        return None


NO_DAG_DOCUMENTS = _NoDagDocuments()


def _is_own(trigger: Any) -> bool:
    return trigger is not None and str(getattr(trigger, "classpath", "")).startswith(OWN_TRIGGERS)


def slim(workload: Any) -> Any:
    """``workload`` without the DAG document, when it is one of dbtflow's triggers'."""
    if workload is None or not str(getattr(workload, "classpath", "")).startswith(OWN_TRIGGERS):
        return workload
    if getattr(workload, "dag_data", None) is None:
        return workload
    return workload.model_copy(update={"dag_data": None, "dag_run_data": None})


def _wrap(module: ModuleType) -> None:
    supervisor = getattr(module, "TriggerRunnerSupervisor", None)
    create = getattr(supervisor, "_create_workload", None)
    if create is None:
        log.warning(
            "dbtflow: %s.TriggerRunnerSupervisor._create_workload is gone in this Airflow version; "
            "dbtflow's triggers get their whole DAG (slower at hundreds of tasks). See "
            "dbtflow/airflow/trigger_workloads.py for what to update or remove",
            RUNNER_MODULE,
        )
        return
    if getattr(create, "dbtflow_slim", False):
        return

    @functools.wraps(create)
    def create_workload(self: Any, trigger: Any, dag_bag: Any, *args: Any, **kwargs: Any) -> Any:
        if _is_own(trigger):
            # Airflow's own path for a deferred task's trigger, which ships no document: it is
            # taken when no serialized DAG is found, so none is loaded (see NO_DAG_DOCUMENTS).
            dag_bag = NO_DAG_DOCUMENTS
        return slim(create(self, trigger, dag_bag, *args, **kwargs))

    create_workload.dbtflow_slim = True  # type: ignore[attr-defined]
    supervisor._create_workload = create_workload  # type: ignore[union-attr]
