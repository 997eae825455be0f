"""dbtflow's pages in Airflow's API server: the live run-time report and the projects' dbt docs.

Airflow mounts a plugin's FastAPI app without any of its own dependencies, so every route here
authenticates with Airflow's (``auth``): a page is never open to whoever reaches the port.
"""
