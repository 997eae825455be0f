"""The trigger runner hands a fired dbtflow trigger's event on within 0.2 s, not at its next tick.

Airflow 3.3's trigger runner (``TriggerRunner.arun``) collects the events its triggers fired and
syncs them to the triggerer's supervisor, which ends their tasks, once per pass of its loop, and
ends each pass with ``with anyio.move_on_after(1): await stop_event.wait()``: one second whatever
happened. A streamed node task whose result dbt had just recorded waited half a second on average
(up to one) for that tick, on top of the state reading and the scheduler's own loop: the last node
tasks of the 14-node project ended 0.9-1.3 s after ``dbt_build`` (2026-12-04).

Here a dbtflow trigger that fired (``fired``, called right after its event was queued) shortens the
runner's current one-second wait so that it ends ``MIN_GAP_S`` after the wait began; a trigger
that fires while the runner is between waits makes the next wait that short. Events that come
together still go together (a wait is never shorter than ``MIN_GAP_S``), so a pass carries several
events when many tasks end at once; a runner with nothing fired keeps Airflow's one-second wait.

- **Airflow internal:** the module global ``anyio`` of ``airflow.jobs.triggerer_job_runner`` and
  ``TriggerRunner.arun``'s wait, ``with anyio.move_on_after(1): await stop_event.wait()``, after
  ``sync_state_to_supervisor``, apache-airflow-core 3.3 (3.3.2 read). This module puts a proxy of
  ``anyio`` in that global which gives ``arun`` its own cancel scope to shorten (anyio's public
  ``CancelScope.deadline``); every other use of the module's ``anyio`` goes to anyio itself.
  ``tests/airflow/test_triggerer_wake.py`` fails when the wait changes.
- **Where it is not in place** (another process, or the global is gone), ``fired`` does nothing:
  events wait for Airflow's tick, as before.
- **Upstream:** no Airflow issue found as of 2026-12-04. **Remove it when** the trigger runner syncs
  an event to its supervisor when it fires, rather than on a fixed tick.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

RUNNER_MODULE = "airflow.jobs.triggerer_job_runner"
#: A wait of the runner's loop after which events are handed on lasts at least this long.
MIN_GAP_S = 0.2
#: The function of the runner whose waits are shortened.
LOOP_FUNCTION = "arun"


class _Wait:
    """``anyio.move_on_after(...)`` for one wait of the runner's loop, that knows it is waiting."""

    def __init__(self, waits: RunnerWaits, scope: Any) -> None:
        self.waits, self.scope = waits, scope

    def __enter__(self) -> Any:
        entered = self.scope.__enter__()
        self.waits.current, self.waits.began = self, self.waits.clock()
        return entered

    def __exit__(self, *exc: object) -> bool | None:
        if self.waits.current is self:
            self.waits.current = None
        return self.scope.__exit__(*exc)


class RunnerWaits:
    """Stands for ``anyio`` in the runner module; shortens the loop's waits when a trigger fired."""

    def __init__(self, anyio_module: ModuleType) -> None:
        self.anyio = anyio_module
        self.current: _Wait | None = None
        self.began = 0.0
        #: A trigger fired while the loop was not waiting: its next wait is short.
        self.pending = False
        #: Waits ended early (for tests and the curious).
        self.shortened = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.anyio, name)

    def clock(self) -> float:
        """anyio's clock (the event loop's time), in which a scope's deadline is set."""
        return float(self.anyio.current_time())

    def move_on_after(self, delay: float | None, shield: bool = False) -> Any:
        if sys._getframe(1).f_code.co_name != LOOP_FUNCTION:
            return self.anyio.move_on_after(delay, shield=shield)
        if self.pending and delay is not None:
            self.pending, delay = False, min(delay, MIN_GAP_S)
            self.shortened += 1
        return _Wait(self, self.anyio.move_on_after(delay, shield=shield))

    def fired(self) -> None:
        """A trigger queued an event: end the current wait ``MIN_GAP_S`` after it began."""
        wait = self.current
        if wait is None:
            self.pending = True
            return
        deadline = self.began + MIN_GAP_S
        if deadline < wait.scope.deadline:
            wait.scope.deadline = deadline
            self.shortened += 1


def install() -> RunnerWaits | None:
    """Put the proxy in the trigger runner module, if this process has imported it."""
    module = sys.modules.get(RUNNER_MODULE)
    if module is None:
        return None
    current = getattr(module, "anyio", None)
    if isinstance(current, RunnerWaits):
        return current
    if not isinstance(current, ModuleType) or not hasattr(current, "move_on_after"):
        return None
    waits = RunnerWaits(current)
    module.anyio = waits  # type: ignore[attr-defined]
    return waits


def fired() -> None:
    """Called by a dbtflow trigger right after its event was queued (in the runner's loop)."""
    module = sys.modules.get(RUNNER_MODULE)
    waits = getattr(module, "anyio", None)
    if isinstance(waits, RunnerWaits):
        try:
            waits.fired()
        except Exception:  # only a faster hand-on is lost
            return
