"""Getting a project's parsed form: the compact graph for DAG files, dbt's ``Manifest`` for tasks.

Both come from the cache when the project is unchanged. On a miss the project is parsed once
with dbt's own parser, in this process (in Airflow's dag-processor, in a child that outlives an
import timeout: ``parse_ahead``), under a lock (or read from ``manifest_path`` when the
project supplies a manifest built elsewhere), and both forms are written. A DAG-file load that
hits the cache never imports dbt.
"""

from __future__ import annotations

import shutil
from typing import Any

from dbtflow.errors import DbtflowError
from dbtflow.files import write_atomic
from dbtflow.project.cache import CacheEntry, cache_entry
from dbtflow.project.config import DbtProject
from dbtflow.project.graph import DbtGraph, graph_from_manifest, load_manifest_file
from dbtflow.project.invoke import require_success, run_dbt
from dbtflow.project.parse_ahead import in_dag_processor, parse_in_child

#: Parsed forms already loaded by this process, by cache folder. dbt's ``Manifest`` is kept as
#: its encoded bytes: dbt mutates the object while compiling (ephemeral CTEs are injected into
#: it), so every invocation must get a fresh one.
_GRAPHS: dict[str, DbtGraph] = {}
_MANIFEST_BYTES: dict[str, bytes] = {}


def load_graph(project: DbtProject, entry: CacheEntry | None = None) -> DbtGraph:
    """The project's graph, from memory, the cache, or a parse."""
    entry = entry or cache_entry(project)
    key = str(entry.root)
    graph = _GRAPHS.get(key) or entry.read_pickle(entry.graph_file)
    if graph is None and in_dag_processor():
        graph = parse_in_child(
            entry.root,
            lambda: _fill_unless_cached(project, entry),
            lambda: entry.read_pickle(entry.graph_file),
            str(project.path),
        )
    if graph is None:
        with entry.lock():
            graph = entry.read_pickle(entry.graph_file)
            if graph is None:
                graph = _fill_cache(project, entry)[0]
    _GRAPHS[key] = graph
    return graph


def _fill_unless_cached(project: DbtProject, entry: CacheEntry) -> None:
    with entry.lock():
        if entry.read_pickle(entry.graph_file) is None:
            _fill_cache(project, entry)


def load_manifest(project: DbtProject, entry: CacheEntry | None = None) -> Any:
    """A fresh ``Manifest`` object of the project, for one dbt invocation without parsing again."""
    entry = entry or cache_entry(project)
    key = str(entry.root)
    data = _MANIFEST_BYTES.get(key) or _read_bytes(entry)
    if data is None:
        with entry.lock():
            data = _read_bytes(entry)
            if data is None:
                _fill_cache(project, entry)
                data = _read_bytes(entry)
    if data is None:
        raise DbtflowError(
            f"The parsed manifest of {project.path} could not be cached in {entry.root}.",
            "check that $DBTFLOW_HOME is writable.",
        )
    _MANIFEST_BYTES[key] = data
    return _decode_manifest(data)


def _fill_cache(project: DbtProject, entry: CacheEntry) -> tuple[DbtGraph, Any]:
    """Parse (or read ``manifest_path``) and write both cached forms."""
    if project.manifest_path is not None:
        graph = graph_from_manifest(load_manifest_file(project.manifest_path), str(project.manifest_path))
        manifest = _manifest_from_json(project)
    else:
        manifest = _parse(project, entry)
        graph = graph_from_manifest(load_manifest_file(entry.manifest_json), str(entry.manifest_json))
    _write_manifest_object(entry, manifest)
    entry.write_pickle(entry.graph_file, graph)
    entry.prune_siblings()
    return graph, manifest


def _parse(project: DbtProject, entry: CacheEntry) -> Any:
    _seed_partial_parse(entry)
    run = run_dbt(project, ["parse"], target_dir=entry.target_dir, for_parse=True)
    require_success(
        run,
        what=f"dbt could not parse the project at {project.path}",
        fix=f"run `dbt parse --project-dir {project.path}` to see the full error, correct it, then retry.",
    )
    if run.payload is None:
        raise DbtflowError(
            f"dbt parse of {project.path} returned no manifest.",
            f"run `dbt parse --project-dir {project.path}` to see what went wrong.",
        )
    return run.payload


def _seed_partial_parse(entry: CacheEntry) -> None:
    """Start from the newest earlier parse of the project, so dbt re-parses only changed files.

    dbt checks the saved state itself (versions, vars, profile, env vars) and falls back to a
    full parse when it does not match.
    """
    saved = "partial_parse.msgpack"
    earlier = [
        p / "target" / saved
        for p in entry.root.parent.iterdir()
        if p != entry.root and (p / "target" / saved).is_file()
    ]
    if earlier:
        newest = max(earlier, key=lambda p: p.stat().st_mtime)
        entry.target_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(newest, entry.target_dir / saved)


def _manifest_from_json(project: DbtProject) -> Any:
    from dbt.contracts.graph.manifest import Manifest, WritableManifest

    try:
        writable = WritableManifest.read_and_check_versions(str(project.manifest_path))
    except Exception as exc:
        raise DbtflowError(
            f"dbt cannot read the manifest {project.manifest_path}: {' '.join(str(exc).split())}",
            "regenerate it with the same dbt version (`dbt parse`), or leave manifest_path unset.",
        ) from None
    return Manifest.from_writable_manifest(writable)


def _write_manifest_object(entry: CacheEntry, manifest: Any) -> None:
    """Store dbt's ``Manifest`` with dbt's own msgpack encoding (the one partial parsing uses).

    ``pickle`` is not used: in dbt-core 1.11, ``Manifest.__reduce_ex__`` omits the ``fixtures``
    field, so an unpickled manifest has its lookups shifted into the wrong fields.
    """
    from dbt.parser.manifest import extended_mashumaro_encoder

    write_atomic(entry.manifest_object_file, manifest.to_msgpack(extended_mashumaro_encoder))


def _read_bytes(entry: CacheEntry) -> bytes | None:
    try:
        return entry.manifest_object_file.read_bytes()
    except FileNotFoundError:
        return None


def _decode_manifest(data: bytes) -> Any:
    from dbt.contracts.graph.manifest import Manifest
    from dbt.parser.manifest import extended_mashumuro_decoder

    return Manifest.from_msgpack(data, decoder=extended_mashumuro_decoder)
