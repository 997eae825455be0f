"""Tasks that a trigger ends ``success`` send no callback request that the dag-processor ignores.

When a trigger ends a task (``TaskSuccessEvent``, every streamed node task of a dbtflow run),
Airflow 3.3's handler writes a ``TaskCallbackRequest`` for it to the metadata database, success
included. The dag-processor fetches those requests (``max_callbacks_per_loop``, 20, at a time),
parses the DAG file again for each batch, and then does nothing for a success request: its
``_execute_task_callbacks`` returns at once when the request is not a failure callback. Measured on
2026-12-03 (a 500-model chain under a real scheduler, PostgreSQL metadata): the triggerer wrote
502 success requests in one run, and the dag-processor re-parsed the 500-task DAG file (about
1-4 s each) for batch after batch while dbt ran, taking the CPU from dbt on a 2-core machine.
This drops a success ``TaskCallbackRequest`` where it would be written; failure and retry requests,
which the dag-processor does run, and the DAG's own callbacks are untouched.

- **Airflow internals:** ``airflow.callbacks.database_callback_sink.DatabaseCallbackSink.send``,
  called by the ``BaseTaskEndEvent`` handler of ``airflow.models.trigger.handle_event_submit``; and
  ``airflow.dag_processing.processor._execute_task_callbacks``, which ignores success requests;
  apache-airflow-core 3.3 (3.3.2 read). ``tests/airflow/test_success_callbacks.py`` fails when the
  dag-processor starts running success requests or the sink's ``send`` moves.
- **Where:** in ``airflow triggerer`` processes (through dbtflow's provider information) and in
  ``dbtflow run``'s own loop, for every task they end, dbtflow's or not: the request is a no-op for
  every task in Airflow 3.3.
- **Upstream:** no Airflow issue found as of 2026-12-03. **Remove it when** the dag-processor runs
  success callbacks of tasks ended by a trigger (then the request is needed), or the handler stops
  sending requests for success.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from dbtflow.airflow.after_import import after_import, in_triggerer

SINK_MODULE = "airflow.callbacks.database_callback_sink"


def is_ignored_request(callback: Any) -> bool:
    """Whether the dag-processor would do nothing with ``callback``: a task's success request."""
    return type(callback).__name__ == "TaskCallbackRequest" and not callback.is_failure_callback


def install() -> None:
    """Drop ignored requests in this process (now, or when Airflow imports the sink)."""
    after_import(SINK_MODULE, _patch)


def install_in_triggerer() -> None:
    """``install`` in an ``airflow triggerer`` process only (called from the provider information)."""
    if in_triggerer():
        install()


def _patch(module: ModuleType) -> None:
    sink = module.DatabaseCallbackSink
    send = sink.__dict__["send"]
    if getattr(send, "dbtflow_drops_ignored", False):
        return

    def send_unless_ignored(self: Any, callback: Any, **kwargs: Any) -> None:
        if is_ignored_request(callback):
            return
        send(self, callback, **kwargs)

    send_unless_ignored.dbtflow_drops_ignored = True  # type: ignore[attr-defined]
    send_unless_ignored.__wrapped__ = send  # type: ignore[attr-defined]
    sink.send = send_unless_ignored
