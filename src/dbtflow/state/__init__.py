"""dbtflow's state database: what the processes running one DAG's dbt invocations share.

Every pattern uses it, not only streamed per_model runs: a dbt invocation registers itself here
so that two runs of a DAG never write its models at once, and single and grouped tasks keep each
try's ``run_results.json`` here for the next try's ``dbt retry``. A streamed run's node results
also pass through it from the one invocation that builds them to the many tasks that report them.
It is a small SQL database: a SQLite file under ``$DBTFLOW_HOME`` by default (one machine), any
SQLAlchemy URL in production (``DBTFLOW_STATE_URL``, for example PostgreSQL shared by workers and
triggerers).

- ``schema``: the tables; ``engine``: the one place that makes engines (the history's too);
- ``task_try``: the task try that owns an invocation or an artifact;
- ``invocations``: registered invocations, their heartbeats and liveness, and who writes a DAG;
- ``claims``: which invocation builds each node; ``results``: node results and who reported them;
- ``relations``: the asset URIs of the nodes a run builds, for node tasks that emit from the triggerer;
- ``try_artifacts``: each try's ``run_results.json``; ``retention``: the daily pruning;
- ``store``: ``StateStore``, all of them for one database URL.
"""
