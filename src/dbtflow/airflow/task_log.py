"""dbt's events in the Airflow task log: one readable line per event at info level and above."""

from __future__ import annotations

from typing import Any

from dbtflow.project.events import DbtEvent

_METHOD = {"debug": "debug", "info": "info", "warn": "warning", "error": "error"}


class DbtEventLogger:
    """A dbt event callback that writes each event to a task's logger."""

    def __init__(self, log: Any, min_level: int = 20) -> None:
        self.log = log
        self.min_level = min_level

    def __call__(self, event: DbtEvent) -> None:
        if event.levelno < self.min_level or not event.msg.strip():
            return
        getattr(self.log, _METHOD.get(event.level, "info"))("%s", event.msg)
