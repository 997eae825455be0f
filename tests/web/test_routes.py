"""dbtflow's routes inside Airflow's real API app (``create_app``) with its real simple auth
manager (not all-admins): every route answers 401 to an anonymous caller and 200 to a user with
a bearer token or the UI's ``_token`` cookie; a user the auth manager gives no DAG access gets 403
and an index without the DAG. The report is rendered live from the history (no file written by
hand), refreshed when a newer run lands, and a name from the URL never becomes a path.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DAG = "dbtflow_routes"
OTHER = "dbtflow_routes_other"
ENV = {
    "AIRFLOW__CORE__AUTH_MANAGER": (
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    ),
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
    "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
}


def _record(dag_id: str, run_id: str, start: float, statuses: dict[str, str]) -> None:
    from dbtflow.monitoring.history import History, node_runs

    rows = [
        {
            "dag_id": dag_id, "run_id": run_id, "task_id": "dbt_build", "try_number": 1,
            "unique_id": uid, "status": status, "started_at": start + i, "execution_s": 1.0 + i,
            "rows_affected": None,
        }
        for i, (uid, status) in enumerate(statuses.items())
    ]  # fmt: skip
    with History().engine.begin() as conn:
        conn.execute(node_runs.insert(), rows)


def _register_dags(*dag_ids: str) -> None:
    """The DAGs as the dag-processor would list them (the auth manager filters these)."""
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.utils.session import create_session

    with create_session() as session:
        if session.get(DagBundleModel, "dags-folder") is None:
            session.add(DagBundleModel(name="dags-folder"))
            session.flush()
        for dag_id in dag_ids:
            if session.get(DagModel, dag_id) is None:
                session.add(DagModel(dag_id=dag_id, bundle_name="dags-folder", fileloc=f"/x/{dag_id}.py"))


@pytest.fixture(scope="module")
def api(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from airflow.api_fastapi.app import create_app, get_auth_manager, purge_cached_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    # A history of this module's own: "before any run" means no run of any test in this worker.
    history = tmp_path_factory.mktemp("routes") / "history.db"
    env = {**ENV, "DBTFLOW_HISTORY_URL": f"sqlite:///{history}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    purge_cached_app()
    try:
        _register_dags(DAG, OTHER)
        client = TestClient(create_app())
        manager = get_auth_manager()
        yield {
            "client": client,
            "admin": manager.generate_jwt(SimpleAuthManagerUser(username="admin", role="admin")),
            "viewer": manager.generate_jwt(SimpleAuthManagerUser(username="viewer", role="viewer")),
            # A user the simple auth manager grants nothing (no role): no DAG may be read.
            "nobody": manager.generate_jwt(SimpleAuthManagerUser(username="nobody", role=None)),
        }
    finally:
        purge_cached_app()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _get(api: dict[str, Any], path: str, who: str | None = None, how: str = "bearer") -> Any:
    client = api["client"]
    client.cookies.clear()
    if who is None:
        return client.get(path)
    if how == "cookie":
        client.cookies.set("_token", api[who])
        return client.get(path)
    return client.get(path, headers={"Authorization": f"Bearer {api[who]}"})


def test_before_any_run_the_pages_say_so_with_200(api: dict[str, Any]) -> None:
    index = _get(api, "/dbtflow/reports/", "admin")
    assert index.status_code == 200 and "No run of" in index.text and "dbtflow run" in index.text
    page = _get(api, f"/dbtflow/reports/{OTHER}/", "admin")
    assert page.status_code == 200 and f"No run of {OTHER} yet" in page.text


def test_every_route_needs_airflows_login_and_the_dags_read_access(
    api: dict[str, Any], tmp_path: Path
) -> None:
    from dbtflow.project.docs import docs_folder

    start = time.time() - 600
    _record(DAG, "run_ok", start, {"model.p.a": "success", "model.p.b": "success"})
    _record(
        DAG, "run_bad", start + 100, {"model.p.a": "success", "model.p.b": "error", "model.p.c": "skipped"}
    )
    site = docs_folder() / "routes_project"
    site.mkdir(parents=True, exist_ok=True)
    for name in ("index.html", "manifest.json", "catalog.json"):
        (site / name).write_text("<html>docs</html>" if name.endswith("html") else '{"nodes": {}}')
    routes = [
        "/dbtflow/reports/",
        f"/dbtflow/reports/{DAG}/",
        f"/dbtflow/reports/{DAG}/index.html",
        f"/dbtflow/reports/{DAG}/?run_id=run_ok",
        f"/dbtflow/reports/{DAG}/gantt.png",
        f"/dbtflow/reports/{DAG}/durations.png?run_id=run_ok",
        f"/dbtflow/reports/{DAG}/growers.png",
        "/dbtflow/docs/",
        "/dbtflow/docs/routes_project/",
        "/dbtflow/docs/routes_project/manifest.json",
        "/dbtflow/docs/routes_project/catalog.json",
    ]
    for route in routes:
        assert _get(api, route).status_code == 401, route
        for who, how in (("admin", "bearer"), ("admin", "cookie"), ("viewer", "bearer")):
            answer = _get(api, route, who, how)
            assert answer.status_code == 200, (route, who, how, answer.text[:300])
            if route.endswith(".png") or ".png?" in route:
                assert answer.content.startswith(b"\x89PNG"), route
        denied = _get(api, route, "nobody", "cookie")
        if route == "/dbtflow/reports/":
            assert denied.status_code == 200 and DAG not in denied.text
        else:
            assert denied.status_code == 403, (route, denied.status_code)
    # A forged or expired token is refused as Airflow's own API refuses it.
    assert _get(api, "/dbtflow/reports/", None).status_code == 401
    api["client"].cookies.clear()
    forged = api["client"].get("/dbtflow/reports/", headers={"Authorization": "Bearer not-a-token"})
    assert forged.status_code in (401, 403)

    index = _get(api, "/dbtflow/reports/", "admin").text
    assert DAG in index and "run_bad" in index and "failed" in index
    page = _get(api, f"/dbtflow/reports/{DAG}/", "admin").text
    assert "run_bad" in page and "model.p.b" in page and "error" in page and 'src="gantt.png"' in page
    assert "/dags/dbtflow_routes/runs/run_bad" in page  # nodes link to the Airflow grid
    chosen = _get(api, f"/dbtflow/reports/{DAG}/?run_id=run_ok", "admin").text
    assert "State: <b>success</b>" in chosen and 'src="gantt.png?run_id=run_ok"' in chosen
    assert _get(api, f"/dbtflow/reports/{DAG}/?run_id=nosuchrun", "admin").status_code == 404


def test_the_report_follows_new_runs_and_refuses_paths(api: dict[str, Any]) -> None:
    start = time.time() - 300
    _record(OTHER, "first", start, {"model.q.x": "success"})
    first = _get(api, f"/dbtflow/reports/{OTHER}/", "admin").text
    assert "Run first" in first
    _record(OTHER, "second", start + 60, {"model.q.x": "error"})
    second = _get(api, f"/dbtflow/reports/{OTHER}/", "admin").text
    assert "Run second" in second and "State: <b>failed</b>" in second
    # Trends state their basis: two runs minutes apart give no weekly rate.
    assert "2 run(s)" in second
    for path in (
        "/dbtflow/reports/../../etc/passwd",
        "/dbtflow/reports/..%2F..%2Fetc/passwd",
        f"/dbtflow/reports/{OTHER}/..%2F..%2Fhistory.db",
        f"/dbtflow/reports/{OTHER}/secret.txt",
        "/dbtflow/reports/../",
        "/dbtflow/docs/..%2F..%2Fairflow/fernet.key",
        "/dbtflow/docs/routes_project/..%2F..%2Fairflow%2Ffernet.key",
        "/dbtflow/docs/routes_project/profiles.yml",
    ):
        answer = _get(api, path, "admin")
        assert answer.status_code == 404 or "fernet" not in answer.text, path
        assert answer.status_code in (404, 200) and not answer.content.startswith(b"SQLite"), path
        if "fernet" in path or "profiles" in path or "secret" in path or "history" in path:
            assert answer.status_code == 404, (path, answer.status_code)


def test_the_plugin_is_registered_with_its_navigation() -> None:
    from importlib.metadata import entry_points

    from dbtflow.airflow.plugin import DbtflowPlugin

    plugins = {e.name: e.value for e in entry_points(group="airflow.plugins")}
    assert plugins["dbtflow"] == "dbtflow.airflow.plugin:DbtflowPlugin"
    names = {view["name"]: view["href"] for view in DbtflowPlugin.external_views}
    assert names["dbt run times"] == "/dbtflow/reports/" and names["dbt docs"] == "/dbtflow/docs/"
