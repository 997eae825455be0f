"""``DbtProject``: where a dbt project lives and how dbt should be invoked for it.

Reading a project's settings never imports dbt: ``dbt_project.yml`` is plain YAML and is read
with PyYAML, so a DAG file that only needs the cached graph stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from dbtflow.errors import DbtflowError
from dbtflow.project.profile import ProfilesDir, ProfileSource, resolve_profile_source

#: Folders of a dbt project whose files decide what the manifest holds, with dbt's defaults.
_PATH_KEYS = {
    "model-paths": ["models"],
    "seed-paths": ["seeds"],
    "snapshot-paths": ["snapshots"],
    "test-paths": ["tests"],
    "macro-paths": ["macros"],
    "analysis-paths": ["analyses"],
    "docs-paths": [],
}


@dataclass(frozen=True)
class ProjectSettings:
    """The parts of ``dbt_project.yml`` that dbtflow reads without dbt."""

    name: str
    #: The ``profile:`` of ``dbt_project.yml``; ``None`` when it names none.
    profile_name: str | None
    source_dirs: tuple[str, ...]
    packages_dir: str


def read_project_settings(project_dir: Path) -> ProjectSettings:
    """Read ``dbt_project.yml``, with a clear error for a missing or invalid file."""
    if not project_dir.is_dir():
        raise DbtflowError(
            f"No dbt project at {project_dir}: the folder does not exist.",
            "pass the path of the folder that holds dbt_project.yml.",
        )
    config_file = project_dir / "dbt_project.yml"
    if not config_file.is_file():
        raise DbtflowError(
            f"No dbt project at {project_dir}: dbt_project.yml is missing.",
            "pass the path of the folder that holds dbt_project.yml.",
        )
    try:
        document = yaml.safe_load(config_file.read_text())
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise DbtflowError(
            f"{config_file} is not valid YAML{line}.",
            "correct the YAML syntax of dbt_project.yml (`dbt debug` shows the same problem).",
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("name"), str):
        raise DbtflowError(
            f"{config_file} has no project `name`.",
            "add `name: my_project` (and `profile: ...`) to dbt_project.yml.",
        )
    dirs: list[str] = []
    for key, default in _PATH_KEYS.items():
        value = document.get(key, default)
        if isinstance(value, str):
            value = [value]
        dirs.extend(str(v) for v in value or [])
    profile = document.get("profile")
    return ProjectSettings(
        name=document["name"],
        profile_name=str(profile) if profile else None,
        source_dirs=tuple(dict.fromkeys(dirs)),
        packages_dir=str(document.get("packages-install-path", "dbt_packages")),
    )


@dataclass(frozen=True)
class DbtProject:
    """A dbt project and the profile, target and vars to run it with.

    ``profile`` is where the credentials come from: a ``profiles.yml`` folder (``ProfilesDir`` or
    ``profiles_dir=``), or a profile mapping that builds the target from an Airflow Connection
    at run time (see ``dbtflow.profiles``). With neither, dbt's own rule applies: the project
    folder if it holds a ``profiles.yml``, else ``$DBT_PROFILES_DIR``, else ``~/.dbt``.
    ``profile_name`` is the profile's name in ``profiles.yml``, as dbt's ``--profile``: it
    overrides the ``profile:`` of ``dbt_project.yml`` (which dbt needs when it is not given). A
    profile built from a connection is generated under that name; a profile object passed as
    ``profile`` carries its own name, and giving a different ``profile_name`` as well is refused.
    ``manifest_path`` points at a ``manifest.json`` produced elsewhere (for example in CI); without
    it dbtflow parses the project itself and caches the result.
    ``defer_state`` is a dbt ``--state`` folder: every dbt command that takes ``--state`` and
    ``--defer`` gets both (slim CI, ``dbt_dag(defer_to=...)``; see ``dbtflow.state.manifests``).
    """

    path: Path
    profiles_dir: Path | None = None
    target: str | None = None
    vars: Mapping[str, Any] = field(default_factory=dict)
    manifest_path: Path | None = None
    profile: ProfileSource | str | None = None
    #: Arguments given to every dbt command, after dbtflow's own (for example ``["--no-use-colors"]``).
    extra_args: tuple[str, ...] = ()
    profile_name: str | None = None
    defer_state: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser().resolve())
        if self.profiles_dir is not None:
            object.__setattr__(self, "profiles_dir", Path(self.profiles_dir).expanduser().resolve())
        if self.manifest_path is not None:
            object.__setattr__(self, "manifest_path", Path(self.manifest_path).expanduser().resolve())
        if self.defer_state is not None:
            object.__setattr__(self, "defer_state", Path(self.defer_state).expanduser().resolve())
        object.__setattr__(self, "vars", dict(self.vars))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))

    @cached_property
    def settings(self) -> ProjectSettings:
        return read_project_settings(self.path)

    @property
    def name(self) -> str:
        return self.settings.name

    @cached_property
    def profile_source(self) -> ProfileSource:
        """The resolved source of the dbt profile (a profiles folder or a connection mapping)."""
        return resolve_profile_source(
            self.profile,
            profiles_dir=self.profiles_dir,
            project_dir=self.path,
            profile_name=self.profile_name,
            project_profile_name=self.settings.profile_name,
            project_name=self.settings.name,
            target=self.target,
        )

    @property
    def uses_profiles_dir(self) -> bool:
        return isinstance(self.profile_source, ProfilesDir)

    @property
    def vars_json(self) -> str:
        return json.dumps(self.vars, sort_keys=True, default=str)
