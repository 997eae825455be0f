"""`dbtflow run` keeps projects apart (each folder its own DAG id, DAG file, request and history),
and `--profile` names the dbt profile as in dbt."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pytest

from dbtflow.errors import DbtflowError
from dbtflow.profiles import ConnectionProfile
from dbtflow.project.config import DbtProject
from dbtflow.project.profile import ProfilesDir
from dbtflow.runner.dag_ids import choose_dag_id, request_file
from dbtflow.runner.dagfile import default_dag_id

from conftest import AIRFLOW_HOME, EXAMPLE, copy_project, run_cli

MARKER_BROKEN = "{{ config(materialized='table') }}\nselect error('not delivered yet') as copy\n"


def _one_clear_line(done) -> str:  # type: ignore[no-untyped-def]
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("dbtflow: error: ") and " Fix: " in lines[0]
    return lines[0]


def _record(dag_id: str, folder: Path) -> None:
    path = request_file(dag_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"project_dir": str(folder), "dag_id": dag_id}))


def test_a_second_folder_gets_its_own_stable_dag_id(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "shop", tmp_path / "b" / "shop"
    plain = default_dag_id("ids_unit_shop")
    assert choose_dag_id(first, "ids_unit_shop", "per_model", None) == plain
    _record(plain, first)
    assert choose_dag_id(first, "ids_unit_shop", "per_model", None) == plain
    other = choose_dag_id(second, "ids_unit_shop", "per_model", None)
    assert re.fullmatch(r"dbtflow_ids_unit_shop_[0-9a-f]{8}", other)
    _record(other, second)
    assert choose_dag_id(second, "ids_unit_shop", "per_model", None) == other  # stable
    assert choose_dag_id(second, "ids_unit_shop", "single", None) == "dbtflow_ids_unit_shop_single"
    # An explicit id of another folder is refused, naming both folders and the option.
    with pytest.raises(DbtflowError) as refused:
        choose_dag_id(second, "ids_unit_shop", "per_model", plain)
    assert str(first) in str(refused.value) and str(second) in str(refused.value)
    assert "--dag-id" in refused.value.fix


def test_two_folders_with_one_project_name_keep_their_own_dag(tmp_path: Path, airflow_db: Path) -> None:
    copies = {}
    for label in ("A", "B"):
        project = copy_project(EXAMPLE, tmp_path / label / "bikeshare")
        (project / "models" / "marts" / "marker.sql").write_text(MARKER_BROKEN)
        copies[label] = project
    env = {label: {"BIKESHARE_DUCKDB": str(tmp_path / f"{label}.duckdb")} for label in copies}
    dag_ids = {}
    for label, project in copies.items():
        summary = tmp_path / f"{label}.json"
        done = run_cli(
            "run", str(project), "--progress", "none", "--summary-json", str(summary), env=env[label]
        )
        assert done.returncode == 1, done.stdout + done.stderr  # only the marker fails
        outcome = json.loads(summary.read_text())
        states = {t["task_id"]: t["state"] for t in outcome["tasks"]}
        states.pop("dbt_build")  # the streamed producer; its own state is not the point here
        assert states.pop("marker") == "failed" and set(states.values()) == {"success"}
        dag_ids[label] = outcome["dag_id"]
    assert dag_ids["A"] != dag_ids["B"]
    assert all(re.fullmatch(r"dbtflow_bikeshare(_[0-9a-f]{8})?", d) for d in dag_ids.values()), dag_ids
    for label, project in copies.items():
        dag_file = AIRFLOW_HOME.dags_folder / f"{dag_ids[label]}.py"
        assert repr(str(project)) in dag_file.read_text()
        assert json.loads(request_file(dag_ids[label]).read_text())["project_dir"] == str(project)

    # The marker arrives in each folder; retrying each DAG rebuilds it from its own folder.
    for label, project in copies.items():
        (project / "models" / "marts" / "marker.sql").write_text(f"select '{label}' as copy\n")
    for label in ("B", "A"):
        summary = tmp_path / f"{label}-retry.json"
        retry = run_cli(
            "retry", dag_ids[label], "--progress", "none", "--summary-json", str(summary), env=env[label]
        )
        assert retry.returncode == 0, retry.stdout + retry.stderr
        assert json.loads(summary.read_text())["dag_id"] == dag_ids[label]
        with duckdb.connect(env[label]["BIKESHARE_DUCKDB"], read_only=True) as con:
            assert con.execute("select copy from main.marker").fetchall() == [(label,)]

    # Taking the other folder's DAG id explicitly is refused.
    line = _one_clear_line(
        run_cli("run", str(copies["B"]), "--dag-id", dag_ids["A"], "--progress", "none", env=env["B"])
    )
    assert str(copies["A"]) in line and str(copies["B"]) in line and "--dag-id" in line


NO_PROFILE_PROFILES = """warehouse:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{{ env_var('NOPROFILE_DUCKDB') }}"
      threads: 1
"""


@pytest.fixture
def no_profile_project(tmp_path: Path) -> Path:
    """A project whose dbt_project.yml names no profile; profiles.yml has a `warehouse` profile."""
    project = tmp_path / "noprofile"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text('name: noprofile\nversion: "1.0.0"\n')
    (project / "profiles.yml").write_text(NO_PROFILE_PROFILES)
    (project / "models" / "one.sql").write_text("{{ config(materialized='table') }}\nselect 1 as x\n")
    return project


def test_no_profile_named_anywhere_is_one_clear_line(no_profile_project: Path) -> None:
    for command in ("run", "render"):
        line = _one_clear_line(run_cli(command, str(no_profile_project)))
        assert "dbt_project.yml names no profile" in line, line
        assert "--profile NAME" in line and "`profile: NAME`" in line
    # A named profile that profiles.yml lacks says where the name came from.
    line = _one_clear_line(run_cli("render", str(no_profile_project), "--profile", "nope"))
    assert "Profile 'nope' (given as --profile" in line and "warehouse" in line


def test_profile_option_runs_the_project(no_profile_project: Path, airflow_db: Path, tmp_path: Path) -> None:
    database = tmp_path / "noprofile.duckdb"
    env = {"NOPROFILE_DUCKDB": str(database)}
    summary = tmp_path / "summary.json"
    done = run_cli(
        "run", str(no_profile_project), "--profile", "warehouse", "--execution", "per_task",
        "--progress", "none", "--summary-json", str(summary), env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    dag_id = json.loads(summary.read_text())["dag_id"]
    assert "profile_name='warehouse'" in (AIRFLOW_HOME.dags_folder / f"{dag_id}.py").read_text()
    assert json.loads(request_file(dag_id).read_text())["profile_name"] == "warehouse"
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("select x from main.one").fetchall() == [(1,)]
    # `dbtflow retry` reuses the stored request, profile name included.
    late = no_profile_project / "models" / "late.sql"
    late.write_text("{{ config(materialized='table') }}\nselect error('not delivered yet') as x\n")
    failed = run_cli("run", str(no_profile_project), "--profile", "warehouse", "--progress", "none", env=env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    late.write_text("select 2 as x\n")
    retry = run_cli("retry", dag_id, "--progress", "none", env=env)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("select x from main.late").fetchall() == [(2,)]


def test_profile_name_in_the_api(no_profile_project: Path) -> None:
    source = DbtProject(no_profile_project, profile_name="warehouse").profile_source
    assert isinstance(source, ProfilesDir) and source.profile_name == "warehouse"
    # It overrides dbt_project.yml's `profile:` (here the example's `bikeshare`).
    assert DbtProject(EXAMPLE, profile_name="other").profile_source.profile_name == "other"
    assert DbtProject(EXAMPLE).profile_source.profile_name == "bikeshare"
    # A connection's generated profile takes the name; a profile object keeps its own.
    generated = DbtProject(no_profile_project, profile="wh", profile_name="warehouse").profile_source
    assert generated.profile_name == "warehouse"
    with pytest.raises(DbtflowError, match="profile object"):
        _ = DbtProject(no_profile_project, profile=ConnectionProfile("wh"), profile_name="x").profile_source
