"""``dbtflow run`` without ``--assets`` (its default) reaches the generated DAG file as
``dbt_dag(assets=False)`` (so the run has no ``dbt_assets`` task), ``--assets`` leaves dbt_dag's
default, and the choice survives the stored request that ``dbtflow retry`` reads."""

from __future__ import annotations

from pathlib import Path

from dbtflow.cli import _request
from dbtflow.cli_args import build_parser
from dbtflow.runner.dagfile import DagFileSpec
from dbtflow.runner.run import RunRequest


def test_no_assets_reaches_the_dag_file(tmp_path: Path) -> None:
    request = _request(build_parser().parse_args(["run", str(tmp_path)]))
    assert request.assets is False and request.dag_args()["assets"] is False
    assert RunRequest.from_json(request.to_json()).assets is False
    asked = _request(build_parser().parse_args(["run", str(tmp_path), "--assets"]))
    assert asked.assets is True and "assets" not in asked.dag_args()
    spec = DagFileSpec(dag_id="no_assets", project_path=tmp_path, dag_args=request.dag_args())
    assert "    assets=False,\n" in spec.source()
