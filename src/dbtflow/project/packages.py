"""Installing a project's dbt packages (``dbt deps``) when they are declared but not installed.

Only packages that need no network (``local:`` paths, or ones already in the install folder)
can be installed on machines without internet; dbt's own error says which package failed.
"""

from __future__ import annotations

from dbtflow.project.config import DbtProject
from dbtflow.project.invoke import require_success, run_dbt

_DECLARATIONS = ("packages.yml", "dependencies.yml")


def packages_missing(project: DbtProject) -> bool:
    """Packages are declared and the install folder is missing or empty."""
    if not any((project.path / name).is_file() for name in _DECLARATIONS):
        return False
    install_dir = project.path / project.settings.packages_dir
    return not install_dir.is_dir() or not any(install_dir.iterdir())


def ensure_packages(project: DbtProject) -> None:
    """Run ``dbt deps`` when the project's packages are declared but not installed."""
    if not packages_missing(project):
        return
    run = run_dbt(project, ["deps"], for_parse=True)
    require_success(
        run,
        what=f"dbt could not install the packages of {project.path}",
        fix=f"run `dbt deps --project-dir {project.path}` where the package sources are reachable.",
    )
