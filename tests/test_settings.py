"""Every ``DBTFLOW_*`` variable is read through ``dbtflow.settings`` and listed in the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dbtflow import settings
from dbtflow.errors import DbtflowError

ROOT = Path(__file__).resolve().parents[1]


def test_no_module_reads_a_dbtflow_variable_itself() -> None:
    readers = []
    for path in (ROOT / "src" / "dbtflow").rglob("*.py"):
        if path.name == "settings.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"environ(\.get)?[\[(]\s*[\"']DBTFLOW_", line):
                readers.append(f"{path.relative_to(ROOT)}:{number}")
    assert readers == []


def test_the_readme_table_lists_every_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(DBTFLOW_[A-Z_]+)` \|", section, flags=re.MULTILINE)
    assert sorted(documented) == sorted(settings.ALL)


def test_readers_take_the_environment_at_each_call(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(settings.HOME, str(tmp_path))
    assert settings.dbtflow_home() == tmp_path.resolve()
    monkeypatch.delenv(settings.STATE_RETENTION_DAYS, raising=False)
    assert settings.state_retention_days() == settings.DEFAULT_STATE_RETENTION_DAYS
    monkeypatch.setenv(settings.STATE_RETENTION_DAYS, "a month")
    with pytest.raises(DbtflowError, match="not a number of days"):
        settings.state_retention_days()
    monkeypatch.setenv(settings.TRIGGERER_DAG_CACHE, " Off ")
    assert settings.triggerer_dag_cache() is False
    monkeypatch.delenv(settings.OTLP_ENDPOINT, raising=False)
    monkeypatch.setenv(settings.OTEL_LOGS_ENDPOINT, "http://collector:4318/v1/logs")
    assert settings.otlp_endpoint() == "http://collector:4318/v1/logs"
