"""A fired dbtflow trigger shortens the trigger runner's one-second wait.

Pins the Airflow internal ``dbtflow.airflow.triggerer_wake`` depends on (``TriggerRunner.arun``
waits with ``anyio.move_on_after(1)`` on the module's ``anyio`` after syncing to the supervisor),
checks on anyio's own clock that a wait is shortened to ``MIN_GAP_S`` after it began and never
below, and that importing dbtflow's triggers in a trigger runner puts the proxy in place."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap

import anyio
import pytest
from airflow.jobs import triggerer_job_runner
from airflow.jobs.triggerer_job_runner import TriggerRunner

from dbtflow.airflow import triggerer_wake
from dbtflow.airflow.triggerer_wake import MIN_GAP_S, RunnerWaits


def test_airflows_runner_loop_still_waits_one_second_on_the_module_anyio() -> None:
    tree = ast.parse(textwrap.dedent(inspect.getsource(TriggerRunner.arun)))
    waits = [
        item.context_expr
        for node in ast.walk(tree)
        if isinstance(node, ast.With)
        for item in node.items
        if isinstance(item.context_expr, ast.Call)
    ]
    one_second = [
        call
        for call in waits
        if ast.unparse(call.func) == "anyio.move_on_after" and ast.unparse(call.args[0]) == "1"
    ]
    calls = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert one_second and "self.sync_state_to_supervisor" in calls, (
        "TriggerRunner.arun no longer waits with anyio.move_on_after(1): re-read it and update or "
        "remove dbtflow.airflow.triggerer_wake"
    )
    assert TriggerRunner.arun.__name__ == triggerer_wake.LOOP_FUNCTION
    assert isinstance(triggerer_job_runner.anyio, (type(anyio), RunnerWaits))


async def arun(waits: RunnerWaits, fire: list[float], ends: list[tuple[float, float, float]]) -> None:
    """The shape of Airflow's loop (named as the patch expects): waits of one second, each ended
    by a trigger that fires ``fire[i]`` seconds into it (or none)."""
    for delay in fire:
        stop = anyio.Event()
        began = waits.clock()
        async with anyio.create_task_group() as tasks:
            if delay >= 0:

                async def fire_after(delay: float = delay) -> None:
                    await anyio.sleep(delay)
                    waits.fired()

                tasks.start_soon(fire_after)
            with waits.move_on_after(1) as scope:
                await stop.wait()
        ends.append((began, scope.deadline, waits.clock()))


def test_a_fired_trigger_ends_the_wait_min_gap_after_it_began() -> None:
    waits = RunnerWaits(anyio)
    ends: list[tuple[float, float, float]] = []
    anyio.run(arun, waits, [0.05, 0.5, -1], ends)
    (began1, deadline1, _), (began2, deadline2, _), (began3, deadline3, _) = ends
    # Fired early in the wait: the wait ends MIN_GAP_S after it began, not sooner.
    assert deadline1 == pytest.approx(began1 + MIN_GAP_S, abs=0.01)
    # Fired after MIN_GAP_S: the wait ends now-ish (its deadline is already past), not at 1 s.
    assert deadline2 == pytest.approx(began2 + MIN_GAP_S, abs=0.01)
    # Nothing fired: Airflow's one second.
    assert deadline3 == pytest.approx(began3 + 1, abs=0.01)
    assert waits.shortened == 2


def test_a_trigger_that_fires_between_waits_shortens_the_next() -> None:
    waits = RunnerWaits(anyio)
    waits.fired()  # no wait under way
    ends: list[tuple[float, float, float]] = []
    anyio.run(arun, waits, [-1, -1], ends)
    (began1, deadline1, _), (began2, deadline2, _) = ends
    assert deadline1 == pytest.approx(began1 + MIN_GAP_S, abs=0.01)
    assert deadline2 == pytest.approx(began2 + 1, abs=0.01)


def test_waits_outside_the_runner_loop_are_anyios_own() -> None:
    waits = RunnerWaits(anyio)

    async def elsewhere() -> float:
        with waits.move_on_after(5) as scope:
            waits.fired()
        return float(scope.deadline - waits.clock())

    assert anyio.run(elsewhere) > 4
    assert waits.current is None and waits.shortened == 0


def test_a_trigger_runner_that_imports_dbtflows_triggers_gets_the_proxy() -> None:
    script = "; ".join(
        [
            "import airflow.jobs.triggerer_job_runner as m",
            "import dbtflow.airflow.triggers",
            "from dbtflow.airflow.triggerer_wake import RunnerWaits",
            "print(type(m.anyio).__name__, isinstance(m.anyio.Event(), object))",
        ]
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["RunnerWaits", "True"]
