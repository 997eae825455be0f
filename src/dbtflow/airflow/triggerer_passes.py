"""The triggerer's supervisor reads and cleans its trigger list at most once a second.

Airflow 3.3's ``TriggerRunnerSupervisor.run_once`` runs ``load_triggers`` (``Trigger.assign_unassigned``:
a count, three sorted selects and a commit; then ``Trigger.ids_for_triggerer``) and ``clean_unused``
(an update of task instances and a delete of triggers) on every pass, and a pass ends as soon as
the trigger runner writes anything: a task's log record, its state sync, a request. While
dbtflow's node tasks end in the triggerer one after another, passes come several times a second,
and those queries were 28 % of the triggerer's CPU at 100 nodes (py-spy, GIL samples, PostgreSQL
metadata, 2026-12-03), next to 40 % for applying the events themselves.

Here a pass applies its trigger events and failures as before (``handle_events``,
``handle_failed_triggers``: a task still ends as soon as its trigger fires), but reads and cleans
the trigger list only when a second has passed since it last did. The two keep Airflow's order:
the clean comes right before the read, after every event handled so far, so that a trigger that
fired is deleted before the read could hand it to the runner again. A new trigger (a task that
deferred) reaches the runner within a second more at most, as Airflow's own pass takes one second
when nothing happens.

- **Airflow internal:** ``airflow.jobs.triggerer_job_runner.TriggerRunnerSupervisor.run_once``
  (its body: ``load_triggers``, ``_service_subprocess(1)``, ``handle_events``,
  ``handle_failed_triggers``, ``clean_unused``, ``heartbeat``, ``emit_metrics``),
  apache-airflow-core 3.3 (3.3.2 read); ``tests/airflow/test_triggerer_passes.py`` fails when it
  changes. Installed in ``airflow triggerer`` processes only (through dbtflow's provider
  information), for every trigger there.
- **Upstream:** no Airflow issue found as of 2026-12-03. **Remove it when** the triggerer reads its
  trigger list on a timer rather than on every pass.

A pass also applies its trigger events in one transaction: ``handle_events`` gives each event
to Airflow's own ``Trigger.submit_event`` as before, in one shared session committed once, where
Airflow opens a session, a connection and a commit per event (its ``submit_event`` queries and
commit were a third of the cost of applying a node task's end, 2026-12-03). An event counts as
persisted (``persisted_event_seqs``, which lets a shared stream advance) only after the commit. If
the shared transaction fails, it is rolled back and the pass's events are applied one at a time
by Airflow's own ``handle_events``, which raises as it would have.

- **Airflow internal:** ``TriggerRunnerSupervisor.handle_events`` (its body: ``popleft``,
  ``on_trigger_event``, ``persisted_event_seqs.append``, ``stats.incr``) and ``on_trigger_event``
  (``Trigger.submit_event``), apache-airflow-core 3.3 (3.3.2 read); the same test fails when they
  change. **Remove it when** Airflow applies a pass's events in one transaction.
"""

from __future__ import annotations

import logging
import time
from types import ModuleType
from typing import Any

from dbtflow.airflow.after_import import after_import, in_triggerer

log = logging.getLogger(__name__)

RUNNER_MODULE = "airflow.jobs.triggerer_job_runner"
#: At most one read and clean of the trigger list per this many seconds.
LIST_EVERY_S = 1.0
#: When each supervisor (by id) last read its trigger list: one per triggerer process.
_listed_at: dict[int, float] = {}


def install_in_triggerer() -> None:
    """Patch ``run_once`` in an ``airflow triggerer`` process (from the provider information)."""
    if in_triggerer():
        after_import(RUNNER_MODULE, patch)


def patch(module: ModuleType) -> None:
    supervisor = module.TriggerRunnerSupervisor
    if getattr(supervisor.run_once, "dbtflow_passes", False):
        return

    def run_once(self: Any) -> None:
        now = time.monotonic()
        # Kept here, not on the supervisor: it is an attrs class with slots.
        due = now - _listed_at.get(id(self), float("-inf")) >= LIST_EVERY_S
        if due:
            _listed_at[id(self)] = now
            self.clean_unused()
            self.load_triggers()
        self._service_subprocess(1)
        self.handle_events()
        self.handle_failed_triggers()
        self.heartbeat()
        self.emit_metrics()

    run_once.dbtflow_passes = True  # type: ignore[attr-defined]
    run_once.__wrapped__ = supervisor.run_once  # type: ignore[attr-defined]
    supervisor.run_once = run_once
    supervisor.handle_events = _events_together(module, supervisor.handle_events)


def _events_together(module: ModuleType, airflows_own: Any) -> Any:
    """``handle_events`` applying the pass's events in one transaction (see the docstring)."""

    def handle_events(self: Any) -> None:
        if not self.events:
            return
        entries = list(self.events)
        self.events.clear()
        try:
            with module.create_session() as session:
                for entry in entries:
                    submit = module.Trigger.submit_event
                    submit(trigger_id=entry.trigger_id, event=entry.event, session=session)
        except Exception:
            log.warning(
                "dbtflow: applying %d trigger events in one transaction failed; applying them one at a time",
                len(entries),
                exc_info=True,
            )
            self.events.extendleft(reversed(entries))
            airflows_own(self)
            return
        tags = module.prune_dict({"team_name": self.team_name})
        for entry in entries:
            if entry.persist_seq is not None:
                self.persisted_event_seqs.append(entry.persist_seq)
            module.stats.incr("triggers.succeeded", tags=tags)

    handle_events.__wrapped__ = airflows_own  # type: ignore[attr-defined]
    return handle_events
