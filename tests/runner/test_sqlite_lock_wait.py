"""The embedded Airflow waits for SQLite's write lock instead of failing after 5 s.

Airflow passes SQLite no busy timeout, so Python's default (5 s) applied: a write that waited
longer for another writer (the runner's scheduling pass over 1000 deferred tasks on a loaded
machine, or another ``dbtflow run`` in the same ``$DBTFLOW_HOME``) failed with "database is
locked". ``dbtflow.runner.home`` sets ``[database] sql_alchemy_connect_args``: this checks that a
real Airflow session of the embedded home, in a process of its own, waits out a writer holding
the lock for 8 s and then writes.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HOLD_S = 8.0

WRITER = textwrap.dedent(
    """
    import sys, time
    from dbtflow.runner.home import EmbeddedAirflow
    from pathlib import Path

    EmbeddedAirflow(home=Path(sys.argv[1])).activate()
    from airflow import settings
    from sqlalchemy import text

    settings.configure_orm()
    with settings.Session() as session:
        session.execute(text("select 1"))
        print("ready", flush=True)
        sys.stdin.readline()
        started = time.monotonic()
        session.execute(text("insert into lock_probe values (1)"))
        session.commit()
        print(f"wrote after {time.monotonic() - started:.1f}", flush=True)
    """
)


def test_a_write_waits_for_the_lock_longer_than_5_s(tmp_path: Path) -> None:
    home = tmp_path / "home"
    database = home / "airflow" / "airflow.db"
    database.parent.mkdir(parents=True)
    with sqlite3.connect(database) as con:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("create table lock_probe (x int)")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdin is not None
    try:
        assert writer.stdout.readline().strip() == "ready", writer.stderr.read() if writer.stderr else ""
        holder = sqlite3.connect(database, isolation_level=None)
        holder.execute("begin immediate")
        writer.stdin.write("go\n")
        writer.stdin.flush()
        time.sleep(HOLD_S)
        holder.execute("commit")
        holder.close()
        out, err = writer.communicate(timeout=120)
    finally:
        writer.kill()
    assert writer.returncode == 0, err
    waited = float(out.strip().split()[-1])
    assert waited >= HOLD_S - 1, out
