"""Readable, stable task ids for dbt nodes.

A node's task id is its name (``fct_orders``; versioned models add ``_v2``). When two nodes share
a name (the same model name in two packages), the ones outside the root project are prefixed with
their package (``payments__fct_orders``); if both are outside it, both are. Adding a package never
renames the root project's tasks.

Airflow accepts only ASCII letters, digits, ``_`` and ``-`` here, at most 250 characters, so names
are made safe and shortened, and that can make different names alike (``café`` and ``cafè`` are
both ``caf_``; two long names can share their first 250 characters). Uniqueness is therefore
checked on the final ids: a node whose id is exactly its own name in the root project keeps it,
and every other node sharing the id gets a suffix from a hash of its unique id
(``caf___3f0c5b1e``), which does not depend on the other nodes, so ids stay stable as a project
grows.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Iterable

from dbtflow.project.graph import DbtGraph, Node

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
#: Airflow's limit on task ids.
MAX_TASK_ID = 250
#: Ids that other tasks of a plan use whatever the nodes are: per_model's streamed producer
#: (``dbtflow.plan.per_model.PRODUCER_TASK_ID``). A node with such a name gets a suffix.
RESERVED_TASK_IDS = frozenset({"dbt_build"})


def safe_id(text: str) -> str:
    """Replace what Airflow does not accept in a task id (anything but letters, digits, _ and -)."""
    return _UNSAFE.sub("_", text)[:MAX_TASK_ID]


def with_suffix(task_id: str, suffix: str) -> str:
    """``task_id`` + ``suffix``, with ``task_id`` shortened so the whole stays within MAX_TASK_ID."""
    return task_id[: MAX_TASK_ID - len(suffix)] + suffix


def _base_name(node: Node) -> str:
    return f"{node.name}_v{node.version}" if node.version else node.name


def _hash_suffix(unique_id: str) -> str:
    return "__" + hashlib.blake2b(unique_id.encode(), digest_size=4).hexdigest()


def node_task_ids(graph: DbtGraph, nodes: Iterable[Node]) -> dict[str, str]:
    """Task ids for the given nodes, unique among them (see the module docstring)."""
    items = list(nodes)
    counts = Counter(_base_name(n) for n in items)
    root_names = {_base_name(n) for n in items if n.package_name == graph.project_name}
    wanted: dict[str, str] = {}
    for node in items:
        base = _base_name(node)
        clash = counts[base] > 1
        if clash and not (node.package_name == graph.project_name and base in root_names):
            wanted[node.unique_id] = safe_id(f"{node.package_name}__{base}")
        else:
            wanted[node.unique_id] = safe_id(base)

    sharing: dict[str, list[Node]] = defaultdict(list)
    for node in items:
        sharing[wanted[node.unique_id]].append(node)
    ids: dict[str, str] = {}
    suffixed: list[Node] = []
    for task_id, group in sharing.items():
        plain = [n for n in group if n.package_name == graph.project_name and n.name == task_id]
        keeper = plain[0] if len(plain) == 1 and task_id not in RESERVED_TASK_IDS else None
        if len(group) == 1 and task_id not in RESERVED_TASK_IDS:
            keeper = group[0]
        for node in group:
            if node is keeper:
                ids[node.unique_id] = task_id
            else:
                suffixed.append(node)
    taken = set(ids.values()) | RESERVED_TASK_IDS
    for node in sorted(suffixed, key=lambda n: n.unique_id):
        candidate = with_suffix(wanted[node.unique_id], _hash_suffix(node.unique_id))
        ids[node.unique_id] = unique_task_id(candidate, taken)
    return ids


def unique_task_id(task_id: str, taken: set[str]) -> str:
    """``task_id`` made safe, or ``task_id_2``, ``_3``... when taken (shortened so that each stays
    within MAX_TASK_ID); marks the result taken."""
    base = safe_id(task_id)
    candidate, n = base, 2
    while candidate in taken:
        candidate = with_suffix(base, f"_{n}")
        n += 1
    taken.add(candidate)
    return candidate
