"""Selection equals real ``dbt ls`` for the same arguments, and its result is cached."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dbtflow import DbtProject
from dbtflow.errors import DbtflowError
from dbtflow.project.cache import cache_entry
from dbtflow.project.selection import select_nodes

from conftest import run_dbt_cli

BIKESHARE_CASES = [
    (["stg_trips"], [], None),
    (["tag:staging"], [], None),
    (["path:models/marts"], [], None),
    (["fqn:bikeshare.marts"], [], None),
    (["config.materialized:table"], [], None),
    (["resource_type:seed"], [], None),
    (["+fct_trips"], [], None),
    (["@stg_trips"], [], None),
    (["tag:staging,config.materialized:view"], [], None),
    (["stg_trips", "dim_stations"], [], None),
    (["+station_daily_usage"], ["tag:raw"], None),
    (["stg_bikes+1"], [], None),
]
LIBRARY_CASES = [
    (["source:raw.loans+"], [], None),
    (["dim_members"], [], None),
    ([], [], "circulation"),
    (["package:library_utils"], [], None),
]


def _dbt_ls(project: Path, select: list[str], exclude: list[str], selector: str | None) -> set[str]:
    args = ["ls", "--output", "json", "--output-keys", "unique_id", "--quiet"]
    if select:
        args += ["--select", *select]
    if exclude:
        args += ["--exclude", *exclude]
    if selector:
        args += ["--selector", selector]
    done = run_dbt_cli(project, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return {json.loads(line)["unique_id"] for line in done.stdout.splitlines() if line.startswith("{")}


def _compare(project_dir: Path, cases: list) -> None:
    project = DbtProject(project_dir)
    ours = [select_nodes(project, s, e, sel) for s, e, sel in cases]
    with ThreadPoolExecutor(max_workers=2) as pool:
        theirs = list(pool.map(lambda case: _dbt_ls(project_dir, *case), cases))
    for case, mine, real in zip(cases, ours, theirs, strict=True):
        assert real, f"{case} selects nothing in dbt ls; the case is not testing anything"
        assert set(mine) == real, case


def test_selection_equals_dbt_ls_on_example(bikeshare_dir: Path, warehouse: Path) -> None:
    _compare(bikeshare_dir, BIKESHARE_CASES)


def test_selection_equals_dbt_ls_on_library(library_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIBRARY_DUCKDB", str(library_dir.parent / "library.duckdb"))
    _compare(library_dir, LIBRARY_CASES)


def test_selection_is_cached(bikeshare_dir: Path, warehouse: Path) -> None:
    project = DbtProject(bikeshare_dir)
    first = select_nodes(project, ["+fct_trips"])
    entry = cache_entry(project)
    cached = entry.selection_file({"select": ["+fct_trips"], "exclude": [], "selector": None})
    assert json.loads(cached.read_text()) == sorted(first)
    # A doctored cache file is what the next call returns: proof that dbt is not asked again.
    cached.write_text(json.dumps(["model.bikeshare.fct_trips"]))
    assert select_nodes(project, ["+fct_trips"]) == {"model.bikeshare.fct_trips"}
    cached.unlink()


def test_unknown_selector_method_is_a_clear_error(bikeshare_dir: Path, warehouse: Path) -> None:
    with pytest.raises(DbtflowError) as caught:
        select_nodes(DbtProject(bikeshare_dir), ["colour:red"])
    message = str(caught.value)
    assert "'colour' is not a valid method name" in message and "Fix:" in message
    with pytest.raises(DbtflowError, match="Could not find selector named nope"):
        select_nodes(DbtProject(bikeshare_dir), selector="nope")
