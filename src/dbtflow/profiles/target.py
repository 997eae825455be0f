"""A dbt target as dbtflow writes it: plain fields in ``profiles.yml``, secrets only in the environment.

``profiles.yml`` gets an ``env_var()`` reference for each secret field; the values go to the
process environment of the dbt invocation only (``dbtflow.project.invoke`` sets and clears
them). The variable names start with ``DBT_ENV_SECRET_``, which dbt scrubs from its own logs
and artifacts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

SECRET_PREFIX = "DBT_ENV_SECRET_DBTFLOW_"
#: Secret fields whose value is a structure (BigQuery's key as JSON), rendered back with ``as_native``.
_NATIVE = "as_native"


@dataclass(frozen=True)
class Target:
    """One dbt output: its adapter ``type``, plain ``fields`` and ``secrets`` (field -> value)."""

    type: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def with_overrides(self, overrides: Mapping[str, Any]) -> Target:
        """Fields given by the DAG replace or add to the mapped ones (a secret stays a secret)."""
        fields = {**self.fields, **{k: v for k, v in overrides.items() if k not in self.secrets}}
        secrets = {**self.secrets, **{k: v for k, v in overrides.items() if k in self.secrets}}
        return Target(self.type, fields, secrets)

    def public(self) -> dict[str, Any]:
        """What may be shown or hashed: the type, the plain fields and the secret fields' names."""
        return {"type": self.type, **dict(self.fields), "secret_fields": sorted(self.secrets)}


def env_name(field_name: str) -> str:
    return SECRET_PREFIX + re.sub(r"[^A-Z0-9]", "_", field_name.upper())


def render(
    profile_name: str, target_name: str, target: Target, *, with_secrets: bool = True
) -> tuple[str, dict[str, str]]:
    """``profiles.yml`` text and the environment it references. Without ``with_secrets`` (parsing,
    which never connects) the variables are set to empty strings."""
    output: dict[str, Any] = {"type": target.type, **dict(target.fields)}
    env: dict[str, str] = {}
    for name, value in target.secrets.items():
        var = env_name(name)
        if isinstance(value, (dict, list)):
            output[name] = f"{{{{ env_var('{var}') | {_NATIVE} }}}}"
            env[var] = json.dumps(value) if with_secrets else "{}"
        else:
            output[name] = f"{{{{ env_var('{var}') }}}}"
            env[var] = str(value) if with_secrets else ""
    document = {profile_name: {"target": target_name, "outputs": {target_name: output}}}
    return yaml.safe_dump(document, sort_keys=False), env
