"""An in-process triggerer for ``dbtflow run``.

Deferred task instances (including those that start in the triggerer) have a trigger row in the
metadata database. This runs each trigger's ``run()`` on an asyncio loop in a background thread,
as Airflow's triggerer does, and hands the first event of each back to the runner, which applies
it with Airflow's own ``Trigger.submit_event`` (ending the task, routing a retry, or resuming it
on a worker). Trigger log lines go to the task try's log file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any


class _JsonLinesHandler(logging.Handler):
    """Writes records as JSON lines, the format Airflow's log reader shows."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = path.open("a", buffering=1)

    def emit(self, record: logging.LogRecord) -> None:
        line = {
            "timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": "dbtflow.trigger",
        }
        self.stream.write(json.dumps(line) + "\n")

    def close(self) -> None:
        self.stream.close()
        super().close()


class InlineTriggerer:
    """Runs triggers concurrently; ``events()`` returns the ones that fired."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dbtflow-triggerer", daemon=True)
        self.thread.start()
        self.fired: queue.Queue[tuple[int, Any, BaseException | None]] = queue.Queue()
        self.running: set[int] = set()

    def start(self, trigger_id: int, trigger: Any, ti: Any, log_file: Path) -> None:
        """Run ``trigger`` (already built from its row) for the task instance ``ti``."""
        logger = logging.getLogger(f"dbtflow.trigger.{trigger_id}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        handler = _JsonLinesHandler(log_file)
        logger.addHandler(handler)
        trigger._log = logger
        trigger.trigger_id = trigger_id
        trigger.task_instance = SimpleNamespace(
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            map_index=ti.map_index,
            try_number=ti.try_number,
        )
        self.running.add(trigger_id)
        asyncio.run_coroutine_threadsafe(self._drive(trigger_id, trigger, handler, logger), self.loop)

    async def _drive(
        self, trigger_id: int, trigger: Any, handler: logging.Handler, logger: logging.Logger
    ) -> None:
        try:
            async for event in trigger.run():
                self.fired.put((trigger_id, event, None))
                return
            self.fired.put((trigger_id, None, RuntimeError("trigger ended without an event")))
        except Exception as exc:
            logger.exception("Trigger failed")
            self.fired.put((trigger_id, None, exc))
        finally:
            logger.removeHandler(handler)
            handler.close()

    def events(self) -> list[tuple[int, Any, BaseException | None]]:
        out: list[tuple[int, Any, BaseException | None]] = []
        while True:
            try:
                item = self.fired.get_nowait()
            except queue.Empty:
                return out
            self.running.discard(item[0])
            out.append(item)

    def wait(self, timeout: float) -> None:
        """Sleep until a trigger fires or ``timeout`` passes."""
        try:
            item = self.fired.get(timeout=timeout)
        except queue.Empty:
            return
        self.fired.put(item)

    def stop(self) -> None:
        async def cancel_all() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
