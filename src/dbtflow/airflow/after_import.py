"""Run a patch right after Airflow imports one of its modules, in processes that import it later.

dbtflow's code runs in an ``airflow triggerer`` process only through its provider information,
which Airflow reads while its command line is built: importing Airflow's ORM models at that
moment is a circular import. The patches in ``triggerer_cache``, ``end_event_handlers`` and the
rest wait here for Airflow to import the module they change, in that process (``in_triggerer``).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any


def in_triggerer() -> bool:
    """Whether this process is ``airflow triggerer``, where the provider information installs
    dbtflow's triggerer patches."""
    return sys.argv[1:2] == ["triggerer"]


def after_import(name: str, then: Callable[[ModuleType], object]) -> None:
    """``then(module)`` now if module ``name`` is imported, else right after Airflow imports it."""
    module = sys.modules.get(name)
    if module is not None:
        then(module)
        return
    if not any(isinstance(f, _AfterImport) and f.name == name and f.then is then for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, then))


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``then(module)`` once, right after the module ``name`` is executed."""

    def __init__(self, name: str, then: Callable[[ModuleType], object]) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader, then = spec.loader, self.then

        class Loader(importlib.abc.Loader):
            def create_module(self, spec: ModuleSpec) -> ModuleType | None:
                return loader.create_module(spec)

            def exec_module(self, module: ModuleType) -> None:
                loader.exec_module(module)
                then(module)

        spec.loader = Loader()
        return spec
