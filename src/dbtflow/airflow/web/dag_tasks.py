"""Which task of a DAG holds each dbt node, and each node's parents, from the serialized DAG.

The run-time history records the task that ran dbt (the streamed ``dbt_build`` for a per_model
run); a node's own task, for a link to the grid, and its parents, for the critical path, come
from the DAG's tasks as Airflow serialized them: every dbtflow task keeps its nodes'
``unique_ids``, and a node's parents are the nodes of its task's upstream tasks.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class DagTasks:
    #: unique id -> the smallest task that holds it (its own, rather than the producer's).
    task_of: dict[str, str] = field(default_factory=dict)
    #: unique id -> the unique ids of the nodes of its task's upstream tasks.
    parents: dict[str, list[str]] = field(default_factory=dict)


def dag_tasks(dag_id: str) -> DagTasks:
    """The node -> task map and node parents of the latest version of ``dag_id`` (empty when
    Airflow does not know the DAG)."""
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        dag = SerializedDagModel.get_dag(dag_id, session=session)
    found = DagTasks()
    if dag is None:
        return found
    size: dict[str, int] = {}
    upstream: dict[str, set[str]] = {}
    for task in dag.tasks:
        upstream[task.task_id] = set(task.upstream_task_ids)
        ids = list(getattr(task, "unique_ids", None) or ())
        for uid in ids:
            if uid not in size or len(ids) < size[uid]:
                found.task_of[uid], size[uid] = task.task_id, len(ids)
    nodes_of: dict[str, list[str]] = defaultdict(list)
    for uid, task_id in found.task_of.items():
        nodes_of[task_id].append(uid)
    for uid, task_id in found.task_of.items():
        found.parents[uid] = [p for up in sorted(upstream.get(task_id, ())) for p in nodes_of[up]]
    return found
