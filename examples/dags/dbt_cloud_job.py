"""Example Airflow DAG: trigger a dbt Cloud job and wait for it in the triggerer.

The Airflow connection `dbt_cloud_default` (type dbt_cloud) holds the account id, the API token
and the tenant host. A retry reruns the job from its failure; the task's XCom holds each node's
result from the run's run_results.json.
"""

from datetime import timedelta

from dbtflow import dbt_dag
from dbtflow.airflow.cloud import DbtCloudJob

dag = dbt_dag(
    None,
    dag_id="dbt_cloud_job",
    schedule="@daily",
    pattern="cloud",
    cloud_job=DbtCloudJob(job_id=12345, conn_id="dbt_cloud_default", check_interval=60),
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
)
