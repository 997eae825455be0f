"""Readable, stable task ids for dbt nodes.

A node's task id is its name (``fct_orders``; versioned models add ``_v2``). When two nodes share
a name (the same model name in two packages), the ones outside the root project are prefixed with
their package (``payments__fct_orders``); if both are outside it, both are. Adding a package never
renames the root project's tasks.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from dbtflow.project.graph import DbtGraph, Node

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
#: Airflow's limit on task ids.
MAX_TASK_ID = 250


def safe_id(text: str) -> str:
    """Replace what Airflow does not accept in a task id (anything but letters, digits, _ and -)."""
    return _UNSAFE.sub("_", text)[:MAX_TASK_ID]


def _base_name(node: Node) -> str:
    return f"{node.name}_v{node.version}" if node.version else node.name


def node_task_ids(graph: DbtGraph, nodes: Iterable[Node]) -> dict[str, str]:
    """Task ids for the given nodes, unique among them."""
    items = list(nodes)
    counts = Counter(_base_name(n) for n in items)
    root_names = {_base_name(n) for n in items if n.package_name == graph.project_name}
    ids: dict[str, str] = {}
    for node in items:
        base = _base_name(node)
        clash = counts[base] > 1
        if clash and not (node.package_name == graph.project_name and base in root_names):
            ids[node.unique_id] = safe_id(f"{node.package_name}__{base}")
        else:
            ids[node.unique_id] = safe_id(base)
    return ids


def unique_task_id(task_id: str, taken: set[str]) -> str:
    """``task_id``, or ``task_id_2``, ``_3``... when taken; marks the result taken."""
    candidate, n = task_id, 2
    while candidate in taken:
        candidate = f"{task_id}_{n}"
        n += 1
    taken.add(candidate)
    return candidate
