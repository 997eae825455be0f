"""Example Airflow DAG: the bundled bikeshare dbt project as one task (`dbt build`).

An Airflow retry of the task runs `dbt retry`: only the nodes that failed or were skipped.
"""

from datetime import timedelta
from pathlib import Path

from dbtflow import DbtProject, dbt_dag

PROJECT = Path(__file__).resolve().parents[1] / "bikeshare"

dag = dbt_dag(
    DbtProject(PROJECT),
    dag_id="bikeshare_single",
    schedule="@daily",
    pattern="single",
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
)
