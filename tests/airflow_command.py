"""What a dbtflow patch looks like in a fresh process set up as ``airflow <command>``.

dbtflow installs its patches of Airflow's triggerer, scheduler and models from its provider
information, which Airflow reads while it builds its command line, before it imports the modules
they change. The tests of each patch check it in that order, in a new interpreter.
"""

from __future__ import annotations

import subprocess
import sys


def printed_after_command(command: str, *statements: str) -> str:
    """The last line ``statements`` print in a new process after Airflow's command line was built
    for ``airflow <command>``."""
    script = "; ".join(
        [
            f"import sys; sys.argv = ['airflow', {command!r}]",
            "from airflow.cli import cli_parser; cli_parser.get_parser()",
            *statements,
        ]
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]
