"""Example Airflow DAG: the bundled bikeshare dbt project with one task per folder of models.

Use group_by="tag", or a function from a dbtflow Node to a group name, for other groupings.
"""

from datetime import timedelta
from pathlib import Path

from dbtflow import DbtProject, dbt_dag

PROJECT = Path(__file__).resolve().parents[1] / "bikeshare"

dag = dbt_dag(
    DbtProject(PROJECT),
    dag_id="bikeshare_grouped",
    schedule="@daily",
    pattern="grouped",
    group_by="folder",
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
)
