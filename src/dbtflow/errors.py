"""The one error type dbtflow raises for bad input: it names the cause and the fix.

The CLI prints ``str(error)`` on one line with no traceback; DAG files raise it so that
Airflow shows the same line as the import error of the DAG file.
"""

from __future__ import annotations


class DbtflowError(Exception):
    """Bad input or environment: ``cause`` says what is wrong, ``fix`` says what to do."""

    def __init__(self, cause: str, fix: str) -> None:
        super().__init__(f"{cause} Fix: {fix}")
        self.cause = cause
        self.fix = fix
