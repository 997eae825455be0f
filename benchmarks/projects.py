"""The dbt projects the benchmarks run, by key, and a new DuckDB file for every run.

Keys: ``example`` (the bundled bikeshare project), ``mixed14`` (it plus a custom schema: 14
nodes of every kind), ``n{N}`` (layered), ``heavy{N}``, ``wide{N}`` and ``chain{N}`` (see
``benchmarks.generate``). Generated projects are kept under ``benchmarks/work/projects`` between
runs (dbt's partial parse and dbtflow's cache stay warm), and made again when their generator's
parameters change. Every measured run builds into a new DuckDB file: rebuilding into an old one
gets slower run after run.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks import generate as gen
from benchmarks.harness import BIN, EXAMPLE, WORK, log, timed

#: Bump when a generator's output changes, so that kept projects are made again.
GENERATION = "3"


@dataclass(frozen=True)
class Project:
    name: str
    path: Path
    db_env: str
    profile: str
    target: str
    models: int

    def env(self, database: Path) -> dict[str, str]:
        return {**os.environ, self.db_env: str(database), "DO_NOT_TRACK": "1"}


def _digest(folder: Path) -> str:
    """A hash of the dbt files under ``folder`` (what a copied project depends on)."""
    digest = hashlib.sha256()
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.suffix in (".sql", ".yml", ".csv"):
            digest.update(str(file.relative_to(folder)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def _synthetic(
    key: str, label: str, models: int, make: Callable[[Path], object], source: str = ""
) -> Project:
    path = WORK / "projects" / key
    stamp = path / ".generation"
    wanted = f"{GENERATION} {source}".strip()
    if not (path / "dbt_project.yml").exists() or not stamp.exists() or stamp.read_text() != wanted:
        log(f"generating {label}")
        make(path)
        stamp.write_text(wanted)
    return Project(label, path, "SYNTH_DUCKDB", "synth", "bench", models)


def project(key: str) -> Project:
    """The project named by ``key``, generated (or copied) when needed."""
    if key == "example":
        path = WORK / "projects" / key
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(EXAMPLE, path)
        return Project("5-model example", path, "BIKESHARE_DUCKDB", "bikeshare", "dev", 5)
    if key == "mixed14":
        # Made again when the bikeshare example changes, not on every call: a run under a
        # scheduler reads the project's target/manifest.json while others may ask for it.
        made = _synthetic(key, "14-node mixed", 10, lambda p: gen.mixed(p, EXAMPLE), _digest(EXAMPLE))
        return Project(made.name, made.path, "BIKESHARE_DUCKDB", "bikeshare", "dev", made.models)
    match = re.fullmatch(r"(n|heavy|wide|chain)(\d+)", key)
    if match is None:
        raise ValueError(f"unknown project {key!r}: example, mixed14, n100, heavy100, wide200, chain10...")
    kind, n = match[1], int(match[2])
    if kind == "n":
        # The layered projects keep their historical folder name (results.md's DAG ids).
        path = WORK / "projects" / f"synth_{n}"
        if not (path / "dbt_project.yml").exists():
            log(f"generating N={n}")
            gen.generate(path, n)
        return Project(f"N={n}", path, "SYNTH_DUCKDB", "synth", "bench", n)
    if kind == "heavy":
        return _synthetic(key, f"heavy layered N={n}", n, lambda p: gen.heavy(p, n))
    if kind == "wide":
        return _synthetic(key, f"wide N={n} (2 layers)", n, lambda p: gen.wide(p, n))
    return _synthetic(key, f"chain of {n}", n, lambda p: gen.chain(p, n))


def projects(sizes: list[int]) -> dict[str, Project]:
    """The example and the layered projects of these sizes, keyed ``example``, ``n{N}``."""
    out = {"example": project("example")}
    for n in sizes:
        out[f"n{n}"] = project(f"n{n}")
    return out


def ensure_manifest(project: Project) -> None:
    """Cosmos's manifest load mode reads ``target/manifest.json``: produce it with ``dbt parse``."""
    if (project.path / "target" / "manifest.json").exists():
        return
    dbt = str(BIN / "dbt")
    timed(
        [dbt, "parse", "--project-dir", str(project.path), "--profiles-dir", str(project.path)],
        env=project.env(fresh_database(project)),
        cwd=project.path,
    )


def fresh_database(project: Project) -> Path:
    database = WORK / "db" / f"{project.path.name}.duckdb"
    database.parent.mkdir(parents=True, exist_ok=True)
    for stale in database.parent.glob(f"{database.name}*"):
        stale.unlink()
    return database
