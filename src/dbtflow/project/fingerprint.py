"""The cache key of a parsed project: a hash of everything that can change dbt's manifest.

It covers the project's source folders (models, seeds, snapshots, tests, macros, analyses, docs,
installed packages), ``dbt_project.yml`` and its sibling YAML files, the profile's identity, the
target, the vars, the versions of dbt and dbtflow, and the value of every environment variable
that those files read through ``env_var()``. Values are only hashed, never stored.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from dbtflow.project.config import DbtProject

#: Bump when the layout or meaning of cached files changes.
CACHE_FORMAT = "5"
_ENV_VAR = re.compile(rb"""env_var\(\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]""")
_ROOT_FILES = ("dbt_project.yml", "packages.yml", "dependencies.yml", "selectors.yml", "package-lock.yml")
#: Large files (seeds) are keyed by size and modification time instead of content.
_CONTENT_LIMIT = 1 << 20


@dataclass(frozen=True)
class Fingerprint:
    """A project's cache key and the number of files it covers."""

    key: str
    files: int


def _versions() -> str:
    parts = [f"format={CACHE_FORMAT}"]
    for dist in ("dbt-core", "dbtflow"):
        try:
            parts.append(f"{dist}={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist}=none")
    return ";".join(parts)


def _project_files(project: DbtProject) -> list[Path]:
    root = project.path
    files = [root / name for name in _ROOT_FILES if (root / name).is_file()]
    dirs = [*project.settings.source_dirs, project.settings.packages_dir]
    for rel in dirs:
        top = root / rel
        if not top.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
            files.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return files


def fingerprint(project: DbtProject) -> Fingerprint:
    """Hash everything that decides the project's manifest."""
    digest = hashlib.blake2b(digest_size=20)
    env_names: set[str] = set()
    files = _project_files(project)
    root = project.path
    for path in files:
        stat = path.stat()
        digest.update(str(path.relative_to(root)).encode())
        if stat.st_size > _CONTENT_LIMIT:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
            continue
        content = path.read_bytes()
        digest.update(content)
        if b"env_var" in content:
            env_names.update(m.decode() for m in _ENV_VAR.findall(content))
    if project.manifest_path is not None:
        digest.update(project.manifest_path.read_bytes() if project.manifest_path.is_file() else b"missing")
    identity = project.profile_source.identity().encode()
    digest.update(identity)
    env_names.update(m.decode() for m in _ENV_VAR.findall(identity))
    digest.update(f"target={project.target}\nvars={project.vars_json}\n{_versions()}".encode())
    for name in sorted(env_names):
        digest.update(f"{name}={os.environ.get(name)}".encode())
    return Fingerprint(key=digest.hexdigest(), files=len(files))
