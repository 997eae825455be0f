"""The local runner behind ``dbtflow run``: one DAG run through an embedded Airflow, no server."""
