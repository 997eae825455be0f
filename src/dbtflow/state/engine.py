"""The one factory of SQLAlchemy engines for dbtflow's own databases (state and history).

An engine is made once per database URL, table set and process (a forked child makes its own:
pooled connections must not cross a fork), and creates its tables on first use. The two
databases are used differently, so they keep connections differently (``Pooling``):

- the state database answers many small queries a second while a run streams, from the
  producer's writer and heartbeat threads and the triggerer's feed: its connections are pooled,
  checked before use on a server, and on SQLite wait up to 60 s for another process's lock and
  write ahead (WAL), so that readers never block the writer;
- the run-time history gets a few writes per task try: on a server, a connection per use
  (``NullPool``), so that no idle connection is held open between them; a SQLite file keeps its
  connections as the state database does (see ``_create``).
"""

from __future__ import annotations

import os
import threading
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine


class Pooling(StrEnum):
    """How an engine keeps its connections (see the module docstring)."""

    SHARED = "shared"
    PER_USE = "per_use"


_ENGINES: dict[tuple[str, int, int, Pooling], Engine] = {}
_ENGINES_LOCK = threading.Lock()


def sql_engine(url: str, metadata: sa.MetaData, pooling: Pooling) -> Engine:
    """The engine of ``url`` in this process, with ``metadata``'s tables created."""
    key = (url, os.getpid(), id(metadata), pooling)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _create(url, pooling)
            metadata.create_all(engine)
            _ENGINES[key] = engine
        return engine


def _create(url: str, pooling: Pooling) -> Engine:
    if url.startswith("sqlite"):
        # A SQLite file keeps its connections whatever the pooling: an idle one holds no lock, and
        # closing the last connection of a write-ahead database checkpoints it and deletes its
        # log (fsyncs), which every history write (once per batch of node results, in dbt's
        # process) paid with a connection per use.
        engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
        _write_ahead(engine)
        return engine
    if pooling is Pooling.PER_USE:
        return sa.create_engine(url, poolclass=sa.pool.NullPool)
    return sa.create_engine(url, pool_pre_ping=True)


def _write_ahead(engine: Engine) -> None:
    """SQLite: write ahead (readers never block the writer) and sync at checkpoints only (a
    power cut may lose the last commits, never corrupt the file)."""

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
