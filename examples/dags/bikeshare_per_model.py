"""Example Airflow DAG: the bundled bikeshare dbt project with one task per model.

Copy this file into your Airflow dags folder and point PROJECT at your dbt project.
"""

from datetime import timedelta
from pathlib import Path

from dbtflow import DbtProject, dbt_dag

PROJECT = Path(__file__).resolve().parents[1] / "bikeshare"

dag = dbt_dag(
    DbtProject(PROJECT),
    dag_id="bikeshare_per_model",
    schedule="@daily",
    pattern="per_model",
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
)
