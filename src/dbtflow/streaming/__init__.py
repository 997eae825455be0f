"""Streamed per_model runs: one dbt invocation builds the nodes, each node's task reports its result.

``producer`` runs the invocation and records results in the state database (``dbtflow.state``) as
dbt finishes them; ``consumer`` holds the rules a node task follows; ``feed`` shares one reader of
the database among a run's waiting tasks; ``waiting`` is what a task does on a worker; ``verdict``
judges the producer task. No Airflow and no ``dbtflow.monitoring`` here: callers pass callbacks.
"""
