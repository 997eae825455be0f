"""``StateStore``: the state database at one URL, with every concern's queries.

Each concern is a module of this package (``invocations``, ``claims``, ``results``,
``relations``, ``try_artifacts``, ``retention``; see the package docstring); this class puts
them together over one engine (``dbtflow.state.engine``), so that a caller holds one object per database.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path

from dbtflow.settings import HOME, dbtflow_home, state_url
from dbtflow.state.claims import Claims
from dbtflow.state.engine import Pooling, sql_engine
from dbtflow.state.invocations import Invocations
from dbtflow.state.relations import Relations
from dbtflow.state.results import Results
from dbtflow.state.retention import Retention
from dbtflow.state.schema import metadata
from dbtflow.state.task_try import TaskTry
from dbtflow.state.try_artifacts import TryArtifacts


def default_url() -> str:
    """``DBTFLOW_STATE_URL``, else a SQLite file under the home folder."""
    url = state_url()
    if url:
        return url
    home = _home_of(os.environ.get(HOME), os.environ.get("HOME"))
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'state.db'}"


@functools.lru_cache(maxsize=16)
def _home_of(dbtflow_home_env: str | None, user_home_env: str | None) -> Path:
    """``dbtflow_home()`` for these environment values, resolved once: every trigger of a waiting
    task makes a store, and resolving the folder's path each time was 2 % of the triggerer's CPU
    at 1000 nodes (py-spy, 2026-12-03)."""
    return dbtflow_home()


class StateStore(Invocations, Claims, Results, Relations, TryArtifacts, Retention):
    """Access to the shared state for one database URL."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine = sql_engine(self.url, metadata, Pooling.SHARED)

    def start_invocation(
        self,
        task: TaskTry,
        nodes: Iterable[str],
        *,
        skip_succeeded: bool = False,
        pid: int | None = None,
    ) -> tuple[str, list[str]]:
        """Register an invocation of ``task`` that claims the ``nodes`` no live invocation is
        building (``Claims.register_claiming``), pruning the store first when it is due."""
        self.prune_if_due()
        return self.register_claiming(task, nodes, skip_succeeded=skip_succeeded, pid=pid)
