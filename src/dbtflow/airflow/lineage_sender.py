"""Where OpenLineage events are built and posted: a process of its own, beside dbt.

Node lineage used to be sent from a thread of the process that runs dbt. Building an event,
serialising it and posting it with ``requests`` holds the GIL for about 4 ms per node, and dbt's
own threads (Jinja, the adapter's Python side) need that GIL: on the 100-model benchmark the
thread added about 2 s of CPU and 16 % to a ``dbtflow run``, where the budget is 5 %
(``benchmarks/results.md``, issue 17). In a process of its own, at a lower priority, the same
work runs on the core that dbt's GIL-bound threads leave idle.

The process is forked when a task's node lineage starts, before dbt's threads run, so it
inherits what is already loaded (the project's graph, the OpenLineage client or the provider's
adapter) and needs no import of its own. Items reach it through a multiprocessing queue, whose
feeder thread means a caller never waits for the pipe. It ends when it is told to, or by itself
within a second of its parent's death.

``requests`` (the HTTP transport's library) reads the environment for proxy settings and
``~/.netrc`` again for every request: with Airflow's long environment that was a quarter of an
event's CPU. ``settle_http_session`` reads them once, as ``requests`` would, and turns the
per-request reading off.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
from collections.abc import Callable
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")

#: The sender's niceness, above dbt's: it takes the CPU dbt leaves, and all of it once dbt ends.
NICENESS = 10
#: How often the sender checks that its parent is alive while it has nothing to do.
PARENT_CHECK_S = 1.0

_log = logging.getLogger(__name__)


class SenderProcess(Generic[Item]):
    """Calls the function that ``setup`` returns (``setup`` runs in the sender) on every item
    put, in order, in a forked process; ``close`` waits for the items put before it."""

    def __init__(
        self, setup: Callable[[], Callable[[Item], None]], log: Any = _log, name: str = "sender"
    ) -> None:
        self.log = log
        self._setup = setup
        self._parent_pid = os.getpid()
        context = multiprocessing.get_context("fork")
        self.queue: Any = context.Queue()
        # The queue's feeder thread must not hold up this process's exit if the sender is gone.
        self.queue.cancel_join_thread()
        self.process = context.Process(target=self._serve, name=f"dbtflow-{name}", daemon=True)
        # SIGINT stays blocked from the fork until the sender ignores it: a Ctrl-C during its
        # start-up would otherwise end it before it got there.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def put(self, item: Item) -> None:
        self.queue.put(item)

    def close(self, timeout_s: float) -> bool:
        """Let the sender finish what was put, up to ``timeout_s``; whether it did."""
        self.queue.put(None)
        self.process.join(timeout_s)
        finished = not self.process.is_alive()
        if not finished:
            self.log.warning(
                "%s did not finish within %.0f s: what it still held is dropped", self.process.name, timeout_s
            )
            self.process.kill()
            self.process.join(1.0)
        self.queue.close()
        return finished

    def _serve(self) -> None:  # pragma: no cover - runs in the forked sender (tests see its output)
        # Its parent ends it (``close``, or by dying): not Ctrl-C, which reaches the whole process
        # group, nor a task runner's SIGTERM handler inherited from a worker's task process.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with contextlib.suppress(OSError):
            os.nice(NICENESS)
        work: Callable[[Item], None] | None
        try:
            work = self._setup()
        except Exception as exc:  # the items are by-products: the parent's work stands
            self.log.warning("%s could not start: %s", self.process.name, exc)
            work = None
        while True:
            try:
                item = self.queue.get(timeout=PARENT_CHECK_S)
            except queue.Empty:
                if os.getppid() != self._parent_pid:
                    return
                continue
            if item is None:
                return
            if work is not None:
                work(item)


def settle_http_session(client: Any) -> None:
    """Read the proxy, CA bundle and ``~/.netrc`` settings of an OpenLineage client's HTTP
    transport once, as ``requests`` reads them for each request when ``trust_env`` is on, and
    turn that per-request reading off. Other transports are left as they are."""
    transport: Any = getattr(client, "transport", None)
    url = getattr(transport, "url", None)
    if not url or not hasattr(transport, "session"):
        return
    import requests.utils

    session = transport.session
    if not session.trust_env:
        return
    settings = session.merge_environment_settings(url, {}, None, getattr(transport, "verify", None), None)
    session.proxies.update(settings.get("proxies") or {})
    if hasattr(transport, "verify"):  # it passes its own to each request, which wins over the session's
        transport.verify = settings["verify"]
    if session.auth is None:
        session.auth = requests.utils.get_netrc_auth(url)
    session.trust_env = False
