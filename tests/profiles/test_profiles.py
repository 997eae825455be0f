"""Credentials: dbt targets built from Airflow connections (any secrets backend), secrets kept
out of every file, log, XCom and rendered field, a real PostgreSQL server with password
authentication, and profiles read from a Kubernetes Secret."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.sdk import Connection

from dbtflow import DbtflowError, DbtProject
from dbtflow.profiles import ConnectionProfile, KubernetesSecretProfile
from dbtflow.profiles.mappings import mapping_for
from dbtflow.profiles.target import SECRET_PREFIX, render
from postgres import create_role_and_database, ensure_local_server, psql, scram_cluster

from conftest import AIRFLOW_HOME, EXAMPLE, copy_project, run_cli
from dagtest import dag_file, load_dag, run_dag

PASSWORD = "pw-Known-4-Leak-Scan-7f3a91"


def _conn(conn_type: str, **fields: Any) -> Connection:
    extra = fields.pop("extra", None)
    conn_id = f"{conn_type}_test"
    return Connection(conn_id=conn_id, conn_type=conn_type, extra=json.dumps(extra or {}), **fields)


@pytest.mark.parametrize(
    ("connection", "expected_type", "expected_fields", "secret_fields"),
    [
        (
            _conn("postgres", host="db", port=5433, login="u", password="s3cr3t-pw", schema="warehouse",
                  extra={"schema": "analytics", "sslmode": "require"}),
            "postgres",
            {"host": "db", "port": 5433, "user": "u", "dbname": "warehouse", "schema": "analytics",
             "sslmode": "require"},
            {"password"},
        ),
        (
            _conn("redshift", host="rs", login="u", password="s3cr3t-pw", schema="dev"),
            "redshift",
            {"host": "rs", "port": 5439, "user": "u", "dbname": "dev", "schema": "public"},
            {"password"},
        ),
        (
            _conn("redshift", host="rs", login="u", schema="dev", extra={"cluster_id": "c1", "region": "eu"}),
            "redshift",
            {"method": "iam", "cluster_id": "c1", "region": "eu"},
            set(),
        ),
        (
            _conn("snowflake", login="u", password="s3cr3t-pw", schema="raw",
                  extra={"account": "acme", "warehouse": "wh", "database": "db", "role": "r"}),
            "snowflake",
            {"account": "acme", "user": "u", "database": "db", "schema": "raw", "warehouse": "wh",
             "role": "r"},
            {"password"},
        ),
        (
            _conn("snowflake", login="u", password="s3cr3t-passphrase", schema="raw",
                  extra={"account": "acme", "database": "db", "private_key_content": "-----BEGIN KEY-----"}),
            "snowflake",
            {"account": "acme", "user": "u"},
            {"private_key", "private_key_passphrase"},
        ),
        (
            _conn("google_cloud_platform", extra={"project": "p1", "dataset": "d1", "key_path": "/k.json"}),
            "bigquery",
            {"method": "service-account", "keyfile": "/k.json", "project": "p1", "dataset": "d1"},
            set(),
        ),
        (
            _conn("google_cloud_platform",
                  extra={"project": "p1", "dataset": "d1", "keyfile_dict": '{"type": "service_account"}'}),
            "bigquery",
            {"method": "service-account-json", "project": "p1"},
            {"keyfile_json"},
        ),
        (
            _conn("google_cloud_platform", extra={"project": "p1", "dataset": "d1"}),
            "bigquery",
            {"method": "oauth"},
            set(),
        ),
        (
            _conn("databricks", host="https://adb-1.azuredatabricks.net/", password="dapi-s3cr3t", schema="s",
                  extra={"http_path": "/sql/1.0/warehouses/abc", "catalog": "main"}),
            "databricks",
            {"host": "adb-1.azuredatabricks.net", "http_path": "/sql/1.0/warehouses/abc", "catalog": "main"},
            {"token"},
        ),
        (
            _conn("trino", host="t", login="u", password="s3cr3t-pw", schema="s", extra={"catalog": "hive"}),
            "trino",
            {"host": "t", "port": 8080, "database": "hive", "schema": "s", "method": "ldap"},
            {"password"},
        ),
        (
            _conn("mssql", host="sql", login="u", password="s3cr3t-pw", schema="dw"),
            "sqlserver",
            {"server": "sql", "port": 1433, "database": "dw", "schema": "dbo"},
            {"password"},
        ),
        (
            _conn("duckdb", extra={"path": "/data/w.duckdb", "extensions": ["httpfs"]}),
            "duckdb",
            {"path": "/data/w.duckdb", "extensions": ["httpfs"]},
            set(),
        ),
    ],
)  # fmt: skip
def test_each_mapping_turns_a_connection_into_a_target(
    connection: Connection, expected_type: str, expected_fields: dict[str, Any], secret_fields: set[str]
) -> None:
    target = mapping_for(connection)(connection)
    assert target.type == expected_type
    assert {k: target.fields[k] for k in expected_fields} == expected_fields
    assert set(target.secrets) == secret_fields
    # profiles.yml holds env_var() references only; the values go to the environment.
    text, env = render("p", "t", target)
    output = yaml.safe_load(text)["p"]["outputs"]["t"]
    for name in secret_fields:
        assert output[name].startswith("{{ env_var('" + SECRET_PREFIX)
        assert json.dumps(target.secrets[name]).strip('"') not in text
    assert set(env) == {SECRET_PREFIX + name.upper() for name in secret_fields}


def test_overrides_and_clear_errors() -> None:
    conn = _conn("postgres", host="db", login="u", password="s3cr3t-pw", schema="warehouse")
    target = mapping_for(conn)(conn).with_overrides({"schema": "marts", "threads": 8, "password": "other"})
    assert target.fields["schema"] == "marts" and target.fields["threads"] == 8
    assert target.secrets["password"] == "other" and "password" not in target.fields
    with pytest.raises(DbtflowError, match="has type 'http', which has no dbt profile mapping"):
        mapping_for(_conn("http", host="x"))
    incomplete = _conn("postgres", host="db", login="u")
    with pytest.raises(DbtflowError, match="has no database") as caught:
        mapping_for(incomplete)(incomplete)
    assert "overrides" in caught.value.fix


RESOLVE = """
import json, sys
from dbtflow.profiles.connection import ConnectionProfile
target = ConnectionProfile(sys.argv[1]).build_target()
print(json.dumps({"fields": dict(target.fields), "secret": target.secrets.get("password")}))
"""


@pytest.mark.parametrize("backend", ["env_uri", "env_json", "local_file", "missing"])
def test_connections_come_from_any_secrets_backend(backend: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    if backend == "env_uri":
        env["AIRFLOW_CONN_WAREHOUSE"] = f"postgres://loader:{PASSWORD}@db.internal:5433/dw?schema=marts"
    elif backend == "env_json":
        env["AIRFLOW_CONN_WAREHOUSE"] = json.dumps(
            {"conn_type": "postgres", "host": "db.internal", "port": 5433, "login": "loader",
             "password": PASSWORD, "schema": "dw", "extra": {"schema": "marts"}}
        )  # fmt: skip
    elif backend == "local_file":
        file = tmp_path / "connections.json"
        file.write_text(json.dumps({"warehouse": {
            "conn_type": "postgres", "host": "db.internal", "port": 5433, "login": "loader",
            "password": PASSWORD, "schema": "dw", "extra": {"schema": "marts"}}}))  # fmt: skip
        env["AIRFLOW__SECRETS__BACKEND"] = "airflow.secrets.local_filesystem.LocalFilesystemBackend"
        env["AIRFLOW__SECRETS__BACKEND_KWARGS"] = json.dumps({"connections_file_path": str(file)})
    done = subprocess.run(
        [sys.executable, "-c", RESOLVE, "warehouse"], capture_output=True, text=True, env=env, timeout=120
    )
    if backend == "missing":
        assert done.returncode != 0
        assert "Airflow connection 'warehouse' is not defined" in done.stderr
        assert "AIRFLOW_CONN_WAREHOUSE" in done.stderr
        return
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout.strip().splitlines()[-1])
    assert resolved["fields"] == {
        "host": "db.internal", "port": 5433, "user": "loader", "dbname": "dw", "schema": "marts",
    }  # fmt: skip
    assert resolved["secret"] == PASSWORD


def _scan_for(secret: str, *, roots: list[Path], outputs: list[str]) -> list[str]:
    """Every place the secret shows up: files (logs, artifacts, DAG files, caches, databases as
    bytes), Airflow's XCom values, rendered fields and serialized DAGs, and command output.

    Files are searched by ``grep`` in its own process: opening a live SQLite file here and
    closing it would drop this process's SQLite locks on it (POSIX locks are per process).
    """
    found = [f"output {i}" for i, text in enumerate(outputs) if secret in text]
    grep = subprocess.run(
        ["grep", "-r", "-l", "-F", "--binary-files=text", "--", secret, *map(str, roots)],
        capture_output=True,
        text=True,
    )
    assert grep.returncode in (0, 1), grep.stderr
    found += grep.stdout.split()
    with closing(sqlite3.connect(AIRFLOW_HOME.database)) as con:
        for table, column in (
            ("xcom", "value"),
            ("rendered_task_instance_fields", "rendered_fields"),
            ("serialized_dag", "data"),
            ("log", "extra"),
        ):
            for (value,) in con.execute(f"select {column} from {table}"):
                if value is not None and secret in str(value):
                    found.append(f"{table}.{column}")
    return found


def test_postgres_with_a_password_per_model_and_single_and_no_secret_anywhere(
    tmp_path: Path, airflow_db: Path
) -> None:
    ensure_local_server()
    create_role_and_database("dbtflow_cred", PASSWORD)
    project = copy_project(EXAMPLE, tmp_path / "bikeshare")
    (project / "profiles.yml").unlink()  # no profiles.yml at all: the connection is the profile
    connection = {
        "conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "dbtflow_cred",
        "password": PASSWORD, "schema": "dbtflow_cred", "extra": {"schema": "analytics"},
    }  # fmt: skip
    added = run_cli("airflow", "connections", "add", "warehouse_pg", "--conn-json", json.dumps(connection))
    assert added.returncode == 0, added.stderr
    outputs = [added.stdout + added.stderr]
    for pattern in ("per_model", "single"):
        done = run_cli(
            "run", str(project), "--conn-id", "warehouse_pg", "--pattern", pattern, "--progress", "plain"
        )
        outputs.append(done.stdout + done.stderr)
        assert done.returncode == 0, done.stdout + done.stderr
    # The dbt docs the UI serves (manifest, catalog, page) hold no credential either.
    docs = run_cli("docs", str(project), "--conn-id", "warehouse_pg")
    outputs.append(docs.stdout + docs.stderr)
    assert docs.returncode == 0, docs.stdout + docs.stderr
    assert (AIRFLOW_HOME.home / "docs" / "bikeshare" / "catalog.json").read_text().count("fct_trips") > 0
    rows = psql(
        "select count(*) from analytics.fct_trips",
        user="dbtflow_cred",
        password=PASSWORD,
        database="dbtflow_cred",
    )
    assert "120" in rows
    leaks = _scan_for(PASSWORD, roots=[AIRFLOW_HOME.airflow_home.parent, project], outputs=outputs)
    assert leaks == [], f"the password leaked into: {leaks}"
    # The scan is not vacuous: the connection is stored (encrypted) and the task logs exist.
    assert list(AIRFLOW_HOME.log_folder.glob("dag_id=dbtflow_bikeshare_single/**/attempt=1.log"))


def test_a_wrong_password_fails_with_an_authentication_error_and_no_secret(
    tmp_path: Path, airflow_db: Path
) -> None:
    right, wrong = "Right-Pw-4d1c8e", "Wrong-Pw-93b2aa"
    with scram_cluster("Superuser-Pw-1") as cluster:
        create_role_and_database(
            "scram_user", right, port=cluster.port, superuser_password=cluster.superuser_password
        )
        project = copy_project(EXAMPLE, tmp_path / "bikeshare")
        conn_env = {
            "AIRFLOW_CONN_SCRAM_PG": json.dumps(
                {"conn_type": "postgres", "host": "127.0.0.1", "port": cluster.port, "login": "scram_user",
                 "password": wrong, "schema": "scram_user"}
            )
        }  # fmt: skip
        done = run_cli(
            "run", str(project), "--conn-id", "scram_pg", "--pattern", "single", "--dag-id", "scram_wrong",
            "--progress", "plain", env=conn_env,
        )  # fmt: skip
        assert done.returncode == 1, done.stdout + done.stderr
        log = next(AIRFLOW_HOME.log_folder.glob("dag_id=scram_wrong/**/task_id=dbt_build/attempt=1.log"))
        text = log.read_text()
        assert "password authentication failed" in text
        roots = [AIRFLOW_HOME.airflow_home.parent, project]
        leaks = _scan_for(wrong, roots=roots, outputs=[done.stdout + done.stderr])
        assert leaks == []
        conn_env["AIRFLOW_CONN_SCRAM_PG"] = conn_env["AIRFLOW_CONN_SCRAM_PG"].replace(wrong, right)
        fixed = run_cli(
            "run", str(project), "--conn-id", "scram_pg", "--pattern", "single", "--dag-id", "scram_right",
            "--progress", "none", env=conn_env,
        )  # fmt: skip
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr


K8S_DAG = """
from dbtflow import DbtProject, dbt_dag
from dbtflow.profiles import KubernetesSecretProfile
profile = KubernetesSecretProfile(
    type="postgres",
    secret_name="warehouse-credentials",
    secret_keys={{"password": "pg-password"}},
    fields={{"host": "127.0.0.1", "port": 5432, "user": "dbtflow_k8s", "dbname": "dbtflow_k8s",
             "schema": "k8s", "threads": 2}},
)
dag = dbt_dag(DbtProject({path!r}, profile=profile), dag_id="k8s_secret", pattern="single")
"""


def test_kubernetes_secret_profile_mounts_the_secret_and_builds(
    tmp_path: Path, airflow_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes.client import ApiClient

    ensure_local_server()
    create_role_and_database("dbtflow_k8s", PASSWORD)
    project = copy_project(EXAMPLE, tmp_path / "bikeshare")
    with dag_file("k8s_secret", K8S_DAG.format(path=str(project))) as path:
        dag = load_dag(path, "k8s_secret")
        override = dag.task_dict["dbt_build"].executor_config["pod_override"]
        pod = ApiClient().sanitize_for_serialization(override)
        (env,) = [c["env"] for c in pod["spec"]["containers"] if c["name"] == "base"]
        assert env == [
            {
                "name": SECRET_PREFIX + "PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "warehouse-credentials", "key": "pg-password"}},
            }
        ]
        # In the pod, Kubernetes sets the variable from the Secret; here the test does.
        monkeypatch.setenv(SECRET_PREFIX + "PASSWORD", PASSWORD)
        state, tasks = run_dag(path, "k8s_secret")
    assert state == "success", tasks
    assert "120" in psql(
        "select count(*) from k8s.fct_trips", user="dbtflow_k8s", password=PASSWORD, database="dbtflow_k8s"
    )
    leaks = _scan_for(PASSWORD, roots=[AIRFLOW_HOME.airflow_home.parent, project], outputs=[])
    assert leaks == []


def test_profile_accepts_a_connection_id_a_mapping_or_a_folder(tmp_path: Path) -> None:
    project = copy_project(EXAMPLE, tmp_path / "bikeshare")
    by_id = DbtProject(project, profile="warehouse_pg")
    assert isinstance(by_id.profile_source, ConnectionProfile)
    assert by_id.profile_source.conn_id == "warehouse_pg"
    assert by_id.profile_source.profile_name == "bikeshare"
    explicit = ConnectionProfile("warehouse_pg", overrides={"schema": "x"})
    assert DbtProject(project, profile=explicit).profile_source is explicit
    assert DbtProject(project).uses_profiles_dir
    k8s = KubernetesSecretProfile(type="postgres", secret_name="s", secret_keys={"password": "k"})
    prepared = k8s.prepare(tmp_path / "profile")
    output = yaml.safe_load((prepared.profiles_dir / "profiles.yml").read_text())["dbtflow"]["outputs"]
    assert output["airflow"]["password"] == "{{ env_var('" + SECRET_PREFIX + "PASSWORD') }}"
    assert prepared.env == {}
