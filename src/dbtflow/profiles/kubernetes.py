"""Credentials from a Kubernetes Secret, for the KubernetesExecutor.

``KubernetesSecretProfile`` is a dbt target whose secret fields come from environment variables
that the task's pod sets from a Kubernetes Secret (``secretKeyRef``): no Airflow Connection is
read and no secret value passes through Airflow. ``executor_config()`` is the pod override that
mounts them; ``dbt_dag`` gives it to every task of a project that uses this profile.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbtflow.profiles.target import Target, env_name, render
from dbtflow.project.profile import PreparedProfile


@dataclass(frozen=True)
class KubernetesSecretProfile:
    """A ``type`` target with plain ``fields``, and ``secret_keys`` (target field -> key in the
    Kubernetes Secret ``secret_name``) read from the pod's environment."""

    type: str
    secret_name: str
    secret_keys: Mapping[str, str]
    fields: Mapping[str, Any] = field(default_factory=dict)
    profile_name: str = "dbtflow"
    target: str | None = "airflow"

    def env_vars(self) -> dict[str, str]:
        """Environment variable -> key in the Secret."""
        return {env_name(name): key for name, key in self.secret_keys.items()}

    def executor_config(self) -> dict[str, Any]:
        """The KubernetesExecutor pod override that sets the variables from the Secret."""
        from kubernetes.client import models as k8s

        env = [
            k8s.V1EnvVar(
                name=var,
                value_from=k8s.V1EnvVarSource(
                    secret_key_ref=k8s.V1SecretKeySelector(name=self.secret_name, key=key)
                ),
            )
            for var, key in self.env_vars().items()
        ]
        pod = k8s.V1Pod(spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base", env=env)]))
        return {"pod_override": pod}

    def _target(self) -> Target:
        # The values are references only: the pod's environment holds the secrets.
        return Target(self.type, dict(self.fields), {name: "" for name in self.secret_keys})

    def identity(self) -> str:
        return f"kubernetes-secret:{self.secret_name}\nprofile:{self.profile_name}\n{self._target().public()}"

    def prepare(self, workdir: Path, *, for_parse: bool = False) -> PreparedProfile:
        text, _ = render(self.profile_name, self.target or "airflow", self._target())
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "profiles.yml").write_text(text)
        # Parsing never connects: let it run where the pod's variables are not set (a DAG processor).
        env = {var: "" for var in self.env_vars() if for_parse and var not in os.environ}
        return PreparedProfile(workdir, self.profile_name, self.target or "airflow", env)

    def writer_lock_key(self) -> str | None:
        return None
