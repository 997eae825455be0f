"""On-disk cache of parsed projects under ``$DBTFLOW_HOME/cache/<project>-<checkout>/<fingerprint>/``.

Each entry holds the compact graph (for DAG files), dbt's own ``Manifest`` object (for tasks, so
that no task parses the project again), dbt's ``manifest.json``, and the results of selections.
Writers take a file lock and replace files atomically, so concurrent DAG-file loads and tasks
on one machine parse a project at most once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import pickle
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbtflow.files import write_atomic
from dbtflow.project.config import DbtProject
from dbtflow.project.fingerprint import Fingerprint, fingerprint
from dbtflow.settings import dbtflow_home

#: Entries kept per project; older ones are removed when a new one is written.
KEEP_ENTRIES = 4


@dataclass(frozen=True)
class CacheEntry:
    """The cache folder of one fingerprint of one project."""

    root: Path
    fingerprint: Fingerprint

    @property
    def graph_file(self) -> Path:
        return self.root / "graph.pickle"

    @property
    def manifest_object_file(self) -> Path:
        return self.root / "manifest.msgpack"

    @property
    def target_dir(self) -> Path:
        """dbt's target path for the parse: ``manifest.json`` lands here."""
        return self.root / "target"

    @property
    def manifest_json(self) -> Path:
        return self.target_dir / "manifest.json"

    def selection_file(self, request: dict[str, Any]) -> Path:
        key = hashlib.blake2b(json.dumps(request, sort_keys=True).encode(), digest_size=12).hexdigest()
        return self.root / "selections" / f"{key}.json"

    def read_pickle(self, path: Path) -> Any | None:
        try:
            with path.open("rb") as fh:
                return pickle.load(fh)
        except (FileNotFoundError, EOFError, pickle.UnpicklingError, AttributeError, ModuleNotFoundError):
            return None

    def write_pickle(self, path: Path, value: Any) -> None:
        write_atomic(path, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))

    @contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock on this entry, across processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def prune_siblings(self) -> None:
        """Remove the oldest entries of the same project beyond ``KEEP_ENTRIES``."""
        siblings = sorted(
            (p for p in self.root.parent.iterdir() if p.is_dir() and p != self.root),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in siblings[KEEP_ENTRIES - 1 :]:
            shutil.rmtree(old, ignore_errors=True)


def cache_root() -> Path:
    return dbtflow_home() / "cache"


def cache_entry(project: DbtProject) -> CacheEntry:
    """The cache entry for the project as it is on disk now (installing its packages first)."""
    from dbtflow.project.packages import ensure_packages

    ensure_packages(project)
    fp = fingerprint(project)
    # One folder per checkout: copies of a project elsewhere on the machine neither share nor
    # prune each other's entries.
    checkout = hashlib.blake2b(str(project.path).encode(), digest_size=4).hexdigest()
    return CacheEntry(root=cache_root() / f"{project.name}-{checkout}" / fp.key, fingerprint=fp)
