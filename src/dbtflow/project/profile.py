"""Where dbt's profile comes from: a ``profiles.yml`` folder, or a mapping built at run time.

A ``ProfileSource`` does two things: it contributes its non-secret identity to the cache key of
the parsed project, and it prepares a profiles folder (plus environment variables holding any
secrets) for one dbt invocation. Mappings from Airflow Connections live in ``dbtflow.profiles``
and implement the same protocol; this module knows nothing about Airflow.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import yaml

from dbtflow.errors import DbtflowError


@dataclass(frozen=True)
class PreparedProfile:
    """A profiles folder ready for dbt, and the environment variables it references."""

    profiles_dir: Path
    profile_name: str
    target: str | None
    env: dict[str, str] = field(default_factory=dict, repr=False)


@runtime_checkable
class ProfileSource(Protocol):
    """Something that can produce a dbt profile for one invocation."""

    @property
    def profile_name(self) -> str:
        """The profile's name in the generated or given ``profiles.yml``."""

    @property
    def target(self) -> str | None:
        """The target to use, or ``None`` for the profile's default."""

    def identity(self) -> str:
        """Non-secret text that changes whenever the parsed manifest could change."""

    def prepare(self, workdir: Path, *, for_parse: bool = False) -> PreparedProfile:
        """Write what dbt needs under ``workdir`` and return it (secrets only in ``env``)."""

    def writer_lock_key(self) -> str | None:
        """Names the target's database when only one process may write it at a time (a DuckDB
        file), so that dbt invocations on one machine take turns; ``None`` otherwise."""


@dataclass(frozen=True)
class ProfilesDir:
    """A folder holding a ``profiles.yml``, used as it is."""

    path: Path
    profile_name: str
    target: str | None = None
    #: Where ``profile_name`` came from, for error messages (``named in dbt_project.yml``...).
    origin: str | None = None

    def document(self) -> dict[str, Any]:
        file = self.path / "profiles.yml"
        try:
            loaded = yaml.safe_load(file.read_text())
        except FileNotFoundError:
            raise DbtflowError(
                f"No profiles.yml in {self.path}.",
                "create it, or pass the folder that holds it (profiles_dir= or --profiles-dir), "
                "or use a connection (profile= or --conn-id).",
            ) from None
        except yaml.YAMLError:
            raise DbtflowError(
                f"{file} is not valid YAML.", "correct its YAML syntax (`dbt debug` shows the same)."
            ) from None
        return loaded if isinstance(loaded, dict) else {}

    def check(self) -> None:
        """Fail clearly when the profile or the target is missing from ``profiles.yml``."""
        document = self.document()
        file = self.path / "profiles.yml"
        profile = document.get(self.profile_name)
        if not isinstance(profile, dict):
            known = ", ".join(sorted(k for k in document if k != "config")) or "none"
            named = f" ({self.origin})" if self.origin else ""
            raise DbtflowError(
                f"Profile '{self.profile_name}'{named} is not in {file}; it defines: {known}.",
                f"add a '{self.profile_name}' profile to {file}, name one of its profiles "
                "(--profile NAME), or point profiles_dir at the right folder.",
            )
        outputs = profile.get("outputs") or {}
        target = self.target or profile.get("target")
        if target and "{{" not in str(target) and target not in outputs:
            raise DbtflowError(
                f"Target '{target}' is not an output of profile '{self.profile_name}' in {file}; "
                f"it has: {', '.join(sorted(outputs)) or 'none'}.",
                "pass one of those targets (target= or --target), or add the output to profiles.yml.",
            )

    def identity(self) -> str:
        self.check()
        text = (self.path / "profiles.yml").read_text()
        return f"profiles_dir:{self.path}\nprofile:{self.profile_name}\ntarget:{self.target}\n{text}"

    def prepare(self, workdir: Path, *, for_parse: bool = False) -> PreparedProfile:
        return PreparedProfile(profiles_dir=self.path, profile_name=self.profile_name, target=self.target)

    def writer_lock_key(self) -> str | None:
        profile = self.document().get(self.profile_name) or {}
        output = (profile.get("outputs") or {}).get(self.target or profile.get("target")) or {}
        if output.get("type") != "duckdb":
            return None
        return duckdb_lock_key(_render_env_vars(str(output.get("path", ":memory:"))))


_ENV_VAR_CALL = re.compile(r"""\{\{\s*env_var\(\s*['"](\w+)['"]\s*(?:,\s*['"]([^'"]*)['"]\s*)?\)\s*\}\}""")


def _render_env_vars(text: str) -> str:
    """Render the ``{{ env_var('NAME', 'default') }}`` calls of a profile value."""
    return _ENV_VAR_CALL.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), text)


def duckdb_lock_key(path: str) -> str | None:
    """The lock key of a DuckDB database path: the absolute file, or ``None`` when not a local file."""
    if not path or path == ":memory:" or path.startswith(("md:", "motherduck:")) or "{{" in path:
        return None
    return f"duckdb:{Path(path).expanduser().resolve()}"


StringResolver = Callable[[str, str, str | None], ProfileSource]
_string_resolver: StringResolver | None = None


def register_string_resolver(resolver: StringResolver) -> None:
    """Let ``profile="<connection id>"`` work: ``dbtflow.profiles`` registers the Airflow resolver.

    This keeps the project layer free of Airflow imports while the public API accepts a bare
    connection id.
    """
    global _string_resolver
    _string_resolver = resolver


def default_profiles_dir(project_dir: Path) -> Path:
    """dbt's own search order: ``$DBT_PROFILES_DIR``, the project folder, then ``~/.dbt``."""
    env = os.environ.get("DBT_PROFILES_DIR")
    if env:
        return Path(env).expanduser().resolve()
    if (project_dir / "profiles.yml").is_file():
        return project_dir
    return Path.home() / ".dbt"


def resolve_profile_source(
    profile: ProfileSource | str | None,
    *,
    profiles_dir: Path | None,
    project_dir: Path,
    profile_name: str | None,
    target: str | None,
    project_profile_name: str | None = None,
    project_name: str = "dbtflow",
) -> ProfileSource:
    """Turn the ``profile=`` / ``profiles_dir=`` / ``profile_name=`` arguments of ``DbtProject``
    into a source.

    ``profile_name`` (dbt's ``--profile``) wins over ``project_profile_name`` (the ``profile:`` of
    ``dbt_project.yml``). A profile generated from a connection takes ``project_name`` when
    neither is set; a ``profiles.yml`` then has no profile to read, which is refused as dbt does.
    """
    name = profile_name or project_profile_name
    if isinstance(profile, ProfileSource):
        if profiles_dir is not None:
            raise DbtflowError("Both profile= and profiles_dir= were given.", "pass only one of them.")
        if profile_name is not None and profile_name != profile.profile_name:
            raise DbtflowError(
                f"profile_name='{profile_name}' was given with a profile object named "
                f"'{profile.profile_name}'.",
                "set the name on the profile object, or drop profile_name=.",
            )
        return profile
    if isinstance(profile, str):
        if _string_resolver is None:
            raise DbtflowError(
                f"profile='{profile}' names a connection, but no connection support is loaded.",
                "import dbtflow (which loads dbtflow.profiles), or pass a profile mapping object.",
            )
        return _string_resolver(profile, name or project_name, target)
    if name is None:
        raise DbtflowError(
            f"{project_dir / 'dbt_project.yml'} names no profile, and no profile name was given.",
            "pass --profile NAME (profile_name= in DbtProject), or add `profile: NAME` to dbt_project.yml.",
        )
    return ProfilesDir(
        path=profiles_dir or default_profiles_dir(project_dir),
        profile_name=name,
        target=target,
        origin="given as --profile / profile_name=" if profile_name else "named in dbt_project.yml",
    )


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block, then restore the previous values."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in previous.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
