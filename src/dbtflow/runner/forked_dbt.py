"""A head start for the streamed dbt invocation of ``dbtflow run``: a dbt process forked early.

Importing Airflow and warming up its in-process API takes several seconds, and so does importing
dbt. A ``ForkedDbt`` is forked before Airflow is imported: it imports dbt and loads the cached
manifest on the second core while the runner starts Airflow. Once the DAG is loaded and its run
planned (``dbtflow.runner.dag_runs.plan_run``), the runner tells it the run id and it starts the run's
dbt invocation under the producer task's name, exactly as that task would, while Airflow
registers the DAG and creates the run. The producer task then starts in the triggerer (no
worker needed) and attaches to this invocation: it ends when the invocation ends. The parent of
its OpenLineage events, made from the DAG run, may follow on a second line
(``send_lineage_parent``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from dbtflow.project.config import DbtProject
from dbtflow.project.event_time import EventTimeWindow
from dbtflow.runner.processes import die_with_parent
from dbtflow.state.task_try import TaskTry

if TYPE_CHECKING:
    from dbtflow.airflow.lineage import NodeLineage
    from dbtflow.project.results import NodeResult

_log = logging.getLogger(__name__)
#: How long the forked dbt, its invocation done, waits for its OpenLineage parent to follow.
PARENT_WAIT_S = 30.0


@dataclass
class ForkedDbt:
    """A forked process that will run one dbt invocation, seen from the runner: ``fork()`` it
    early, then ``start()`` its invocation or ``cancel()`` it."""

    project: DbtProject
    threads: int | None = None
    state_url: str | None = None
    pid: int | None = field(default=None, init=False)
    _pipe: int | None = field(default=None, init=False, repr=False)

    def fork(self) -> None:
        read_end, write_end = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            die_with_parent(parent)
            os.close(write_end)
            code = 0
            try:
                self._serve(read_end)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            os._exit(code)
        os.close(read_end)
        self.pid, self._pipe = pid, write_end

    def start(
        self,
        task: TaskTry,
        nodes: Sequence[str],
        *,
        selection: Sequence[str] | None = None,
        skip_succeeded: bool = False,
        lineage_parent: dict[str, str] | None = None,
        lineage_follows: bool = False,
        event_time: EventTimeWindow | None = None,
    ) -> None:
        """Claim ``nodes`` for this process, on behalf of ``task``, and let it run dbt on them.

        The claim is registered here, before the process may even have finished importing dbt, so
        every task of the run sees a live invocation from its first look. With
        ``lineage_parent`` (``dbtflow.airflow.lineage.run_parent``), each node's OpenLineage
        events are sent as the producer task would send them; with ``lineage_follows``, that
        parent comes later, through ``send_lineage_parent``. ``event_time`` is the DAG run's
        data interval (``dbtflow.project.event_time``), as the producer task would pass it.
        """
        from dbtflow.state.store import StateStore
        from dbtflow.streaming.producer import claim_nodes

        outcome = claim_nodes(
            StateStore(self.state_url), task, nodes, skip_succeeded=skip_succeeded, pid=self.pid
        )
        self._send(
            {
                "key": [task.dag_id, task.run_id, task.task_id, task.try_number],
                "invocation_id": outcome.invocation_id,
                "claimed": outcome.claimed,
                "held": outcome.held_elsewhere,
                "selection": None if selection is None else list(selection),
                "lineage_parent": lineage_parent,
                "lineage_follows": lineage_follows,
                "event_time": None if event_time is None else event_time.to_json(),
            },
            close=not lineage_follows,
        )

    def send_lineage_parent(self, parent: dict[str, Any] | None) -> None:
        """The parent of the node runs' OpenLineage events, after ``start(..., lineage_follows=True)``
        (``None``: none; the events held until now are dropped)."""
        self._send({"lineage_parent": parent})

    def cancel(self) -> None:
        """Let the process exit without running dbt."""
        self._send(None)

    def finish(self, timeout_s: float = 30.0) -> None:
        """At the end of a run: let the process end on its own (after its invocation it sends
        what its sinks still hold, e.g. OpenLineage events, then exits), up to ``timeout_s``; it
        dies with this process otherwise, losing them."""
        self.cancel()
        deadline = time.monotonic() + timeout_s
        while self.pid is not None and self.reap() is None:
            if time.monotonic() > deadline:
                self.stop()
                return
            time.sleep(0.02)

    def stop(self, grace_s: float = 2.0) -> None:
        """End the process now (dbt dies mid-statement: the warehouse drops its open
        transaction) and reap it; SIGKILL if it is still there after ``grace_s``."""
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while self.reap() is None and self.pid is not None:
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.02)

    def reap(self) -> int | None:
        """The process's exit status if it has ended (reaping it), else None."""
        if self.pid is None:
            return None
        done, status = os.waitpid(self.pid, os.WNOHANG)
        if done == 0:
            return None
        self.pid = None
        return os.waitstatus_to_exitcode(status)

    def _send(self, message: dict[str, Any] | None, *, close: bool = True) -> None:
        if self._pipe is None:
            return
        try:
            if message is not None:
                os.write(self._pipe, json.dumps(message).encode() + b"\n")
        except BaseException:
            close = True
            raise
        finally:
            if close:
                os.close(self._pipe)
                self._pipe = None

    def _serve(self, read_end: int) -> None:  # pragma: no cover - runs in the child
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        import dbt.cli.main  # noqa: F401  (the slow import, done while Airflow starts)

        from dbtflow.airflow.lineage import NodeLineage
        from dbtflow.monitoring.forwarding import EventForwarder
        from dbtflow.monitoring.history import results_recorder
        from dbtflow.project.manifest import load_graph, load_manifest
        from dbtflow.state.store import StateStore
        from dbtflow.streaming.producer import ClaimedInvocation, run_invocation

        graph = load_graph(self.project)
        manifest = load_manifest(self.project)
        store = StateStore(self.state_url)
        pipe = os.fdopen(read_end, "rb")
        line = pipe.readline()
        if not line:
            pipe.close()
            return
        message = json.loads(line)
        task = TaskTry(*message["key"])
        outcome = ClaimedInvocation(
            task=task,
            invocation_id=message["invocation_id"],
            claimed=message["claimed"],
            held_elsewhere=message["held"],
        )
        # The producer task's sinks, as its operator would wire them: log forwarding, history and
        # (when configured) OpenLineage, whose parent may follow on the pipe's next line.
        parent, follows = message.get("lineage_parent"), bool(message.get("lineage_follows"))
        lineage = None
        if parent is not None or follows:
            lineage = NodeLineage(self.project, parent, _log, graph=graph, manifest=manifest)
        reader: threading.Thread | None = None
        if follows and lineage is not None:
            reader = threading.Thread(
                target=_take_parent, args=(pipe, lineage), name="dbtflow-lineage-parent"
            )
            reader.daemon = True
            reader.start()
        else:
            pipe.close()
        to_history = results_recorder(task, _log)

        def on_results(results: Sequence[NodeResult]) -> None:
            to_history(results)
            if lineage is not None:
                lineage(results)

        try:
            with EventForwarder(task) as forwarder:
                run_invocation(
                    self.project,
                    graph,
                    lambda: manifest,
                    store,
                    outcome,
                    selection=message["selection"],
                    threads=self.threads,
                    on_event=forwarder,
                    on_results=on_results,
                    event_time=EventTimeWindow.from_json(message.get("event_time")),
                )
        finally:
            if reader is not None:
                # A small project can be built before Airflow has created the DAG run whose
                # parent the events need (the CLI test under load, 2026-12-04): closing first
                # dropped every event held for it. The runner sends the parent (or closes the
                # pipe) right after it creates the run.
                reader.join(PARENT_WAIT_S)
            if lineage is not None:
                lineage.close()


def _take_parent(pipe: BinaryIO, lineage: NodeLineage) -> None:  # pragma: no cover - in the child
    """Give the node lineage its parent from the pipe's next line (none if the pipe closes first)."""
    with pipe:
        line = pipe.readline()
    lineage.set_parent(json.loads(line).get("lineage_parent") if line else None)
