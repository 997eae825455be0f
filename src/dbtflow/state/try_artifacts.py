"""The ``run_results.json`` each try of a single or grouped build task keeps in the state database,
for its next try's ``dbt retry`` on whichever worker that try lands (part of ``StateStore``)."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dbtflow.state.schema import try_artifacts
from dbtflow.state.task_try import TaskTry


class TryArtifacts:
    """``StateStore``'s try artifacts."""

    engine: Engine

    def save_try_artifact(self, task: TaskTry, document: dict[str, Any]) -> None:
        """Keep a try's ``run_results.json`` (a cleared task's same try number replaces it)."""
        key = _task_key(task)
        with self.engine.begin() as conn:
            conn.execute(try_artifacts.delete().where(*key, try_artifacts.c.try_number == task.try_number))
            conn.execute(
                try_artifacts.insert().values(
                    dag_id=task.dag_id,
                    run_id=task.run_id,
                    task_id=task.task_id,
                    map_index=task.map_index,
                    try_number=task.try_number,
                    document=json.dumps(document),
                    saved_at=time.time(),
                )
            )

    def try_artifact_before(self, task: TaskTry) -> tuple[int, dict[str, Any]] | None:
        """The newest document an earlier try of the task kept, with that try's number."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(try_artifacts.c.try_number, try_artifacts.c.document)
                .where(*_task_key(task), try_artifacts.c.try_number < task.try_number)
                .order_by(try_artifacts.c.try_number.desc())
                .limit(1)
            ).first()
        return None if row is None else (int(row.try_number), json.loads(row.document))


def _task_key(task: TaskTry) -> list[sa.ColumnElement[bool]]:
    return [
        try_artifacts.c.dag_id == task.dag_id,
        try_artifacts.c.run_id == task.run_id,
        try_artifacts.c.task_id == task.task_id,
        try_artifacts.c.map_index == task.map_index,
    ]
