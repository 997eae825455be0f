"""Every ``DBTFLOW_*`` environment variable, read in one place.

dbtflow is configured by a few environment variables, because the processes that need them
(Airflow workers, triggerers, the DAG processor, forked dbt processes) share an environment but
not arguments. Each variable has one reader here that says its default and how its text is read,
so no module reads ``os.environ`` for a ``DBTFLOW_*`` name itself and the README's table of them
can be checked against one file. Readers read at each call (tests and ``dbtflow run`` set
variables at run time); nothing here imports Airflow.
"""

from __future__ import annotations

import os
from pathlib import Path

from dbtflow.errors import DbtflowError

#: The folder for caches, the embedded Airflow, the state database and the history.
HOME = "DBTFLOW_HOME"
#: SQLAlchemy URL of the state database shared by workers and triggerers.
STATE_URL = "DBTFLOW_STATE_URL"
#: Days the state database keeps finished invocations (0 or less: forever).
STATE_RETENTION_DAYS = "DBTFLOW_STATE_RETENTION_DAYS"
DEFAULT_STATE_RETENTION_DAYS = 30.0
#: SQLAlchemy URL of the run-time history.
HISTORY_URL = "DBTFLOW_HISTORY_URL"
#: ``stdout`` or a file path: dbt's events as JSON lines.
LOG_JSON = "DBTFLOW_LOG_JSON"
#: An OpenTelemetry OTLP/HTTP logs endpoint for dbt's events...
OTLP_ENDPOINT = "DBTFLOW_OTLP_ENDPOINT"
#: ...or OpenTelemetry's own variable for it, when dbtflow's is not set.
OTEL_LOGS_ENDPOINT = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"
#: Object storage URL for a try's dbt artifacts (instead of the state database).
ARTIFACTS_URL = "DBTFLOW_ARTIFACTS_URL"
#: ``0``/``false``/``no``/``off`` turns off the triggerer's DAG cache.
TRIGGERER_DAG_CACHE = "DBTFLOW_TRIGGERER_DAG_CACHE"
#: Airflow's log level inside ``dbtflow run``'s embedded Airflow.
AIRFLOW_LOG_LEVEL = "DBTFLOW_AIRFLOW_LOG_LEVEL"
DEFAULT_AIRFLOW_LOG_LEVEL = "WARNING"
#: A deployment's api-server URL for ``dbtflow retry``, and how to authenticate to it.
AIRFLOW_API_URL = "DBTFLOW_AIRFLOW_API_URL"
AIRFLOW_TOKEN = "DBTFLOW_AIRFLOW_TOKEN"
AIRFLOW_USERNAME = "DBTFLOW_AIRFLOW_USERNAME"
AIRFLOW_PASSWORD = "DBTFLOW_AIRFLOW_PASSWORD"

#: Every ``DBTFLOW_*`` variable dbtflow reads (the README's table lists the same).
ALL = (
    HOME,
    STATE_URL,
    STATE_RETENTION_DAYS,
    HISTORY_URL,
    LOG_JSON,
    OTLP_ENDPOINT,
    ARTIFACTS_URL,
    TRIGGERER_DAG_CACHE,
    AIRFLOW_LOG_LEVEL,
    AIRFLOW_API_URL,
    AIRFLOW_TOKEN,
    AIRFLOW_USERNAME,
    AIRFLOW_PASSWORD,
)

_OFF = ("0", "false", "no", "off")


def _text(name: str) -> str | None:
    """The variable's value, or ``None`` when it is unset or empty."""
    return os.environ.get(name) or None


def dbtflow_home() -> Path:
    """The folder for dbtflow's caches, embedded Airflow and state: ``$DBTFLOW_HOME`` or ``~/.dbtflow``."""
    return Path(_text(HOME) or Path.home() / ".dbtflow").expanduser().resolve()


def state_url() -> str | None:
    """``$DBTFLOW_STATE_URL``; ``None``: a SQLite file under the home folder."""
    return _text(STATE_URL)


def state_retention_days() -> float:
    """Days the state store keeps (``$DBTFLOW_STATE_RETENTION_DAYS``, 30 by default; 0 or less:
    forever)."""
    value = os.environ.get(STATE_RETENTION_DAYS, "").strip()
    if not value:
        return DEFAULT_STATE_RETENTION_DAYS
    try:
        return float(value)
    except ValueError:
        raise DbtflowError(
            f"{STATE_RETENTION_DAYS}={value!r} is not a number of days.",
            "set it to a number of days such as 30, or 0 to keep everything.",
        ) from None


def history_url() -> str | None:
    """``$DBTFLOW_HISTORY_URL``; ``None``: a SQLite file under the home folder."""
    return _text(HISTORY_URL)


def log_json() -> str | None:
    """``$DBTFLOW_LOG_JSON``: ``stdout`` or a file for dbt's events as JSON lines; ``None``: none."""
    return _text(LOG_JSON)


def otlp_endpoint() -> str | None:
    """``$DBTFLOW_OTLP_ENDPOINT``, else ``$OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``; ``None``: no export."""
    return _text(OTLP_ENDPOINT) or _text(OTEL_LOGS_ENDPOINT)


def artifacts_url() -> str | None:
    """``$DBTFLOW_ARTIFACTS_URL``; ``None``: a try's artifacts stay in the state database."""
    return _text(ARTIFACTS_URL)


def triggerer_dag_cache() -> bool:
    """Whether the triggerer's DAG cache is on (``$DBTFLOW_TRIGGERER_DAG_CACHE``; on by default)."""
    return os.environ.get(TRIGGERER_DAG_CACHE, "1").strip().lower() not in _OFF


def airflow_log_level() -> str:
    """Airflow's log level in the embedded Airflow (``$DBTFLOW_AIRFLOW_LOG_LEVEL``, ``WARNING``)."""
    return os.environ.get(AIRFLOW_LOG_LEVEL, DEFAULT_AIRFLOW_LOG_LEVEL)


def airflow_api_url() -> str | None:
    """``$DBTFLOW_AIRFLOW_API_URL``: the deployment ``dbtflow retry`` talks to by default."""
    return os.environ.get(AIRFLOW_API_URL)


def airflow_token() -> str | None:
    """``$DBTFLOW_AIRFLOW_TOKEN``: a bearer token for the Airflow API."""
    return os.environ.get(AIRFLOW_TOKEN)


def airflow_username() -> str | None:
    """``$DBTFLOW_AIRFLOW_USERNAME``: with the password, gets a token from the Airflow API."""
    return os.environ.get(AIRFLOW_USERNAME)


def airflow_password() -> str | None:
    """``$DBTFLOW_AIRFLOW_PASSWORD`` (never on the command line, where ``ps`` shows it)."""
    return os.environ.get(AIRFLOW_PASSWORD)
