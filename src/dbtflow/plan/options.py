"""The choices that shape a plan, checked once: ``PlanOptions``.

A plan depends on seven choices (pattern, selection, exclusion, selector, where tests run,
execution and grouping), and its run on an eighth (state-aware or not). ``dbt_dag``, ``elt``,
the CLI and ``dbtflow run`` all take them; they are validated here, with one ``DbtflowError``
(cause and fix) per bad value, and then travel as one frozen value. The enums are ``StrEnum``: a
user's plain string (``pattern="grouped"``) is accepted everywhere and compares equal to its
member, and the CLI takes its ``choices`` from them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, TypedDict, TypeVar, Unpack

from dbtflow.errors import DbtflowError
from dbtflow.plan.model import TestMode
from dbtflow.project.graph import Node
from dbtflow.project.invoke import selection_args

#: A user function that maps a node to the name of its group (the grouped pattern).
Grouper = Callable[[Node], str]


class Pattern(StrEnum):
    """How many tasks a project becomes."""

    #: One task per model, seed and snapshot.
    PER_MODEL = "per_model"
    #: One task, one dbt invocation.
    SINGLE = "single"
    #: One task per group of nodes.
    GROUPED = "grouped"
    #: One task that triggers a dbt Cloud job (no plan: dbt Cloud runs the project).
    CLOUD = "cloud"

    @classmethod
    def planned(cls) -> tuple[Pattern, ...]:
        """The patterns that make a plan from a local project (all but ``cloud``)."""
        return (cls.PER_MODEL, cls.SINGLE, cls.GROUPED)


class Execution(StrEnum):
    """Who runs dbt for the node tasks of per_model."""

    #: One dbt invocation feeds every node task.
    STREAMED = "streamed"
    #: Each task runs dbt for its own nodes.
    PER_TASK = "per_task"


class GroupBy(StrEnum):
    """The built-in groupings of the grouped pattern (a ``Grouper`` function is the other kind)."""

    #: The top folder under the node's resource folder (``models/staging/...`` is ``staging``).
    FOLDER = "folder"
    #: The node's first tag.
    TAG = "tag"


class PlanChoices(TypedDict, total=False):
    """The plan's choices as keyword arguments, as users pass them (plain strings allowed)."""

    pattern: str
    select: str | Sequence[str] | None
    exclude: str | Sequence[str] | None
    selector: str | None
    tests: str
    execution: str
    group_by: str | Grouper
    state_aware: bool


#: The names of the plan's choices among a function's keyword arguments.
PLAN_CHOICES = frozenset(PlanChoices.__annotations__)

_E = TypeVar("_E", bound=StrEnum)


def as_tokens(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """dbt selection arguments as a tuple: a string is split on spaces (a union, as in dbt)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    return tuple(token for item in value for token in str(item).split())


def _member(kind: type[_E], value: object, option: str, allowed: Sequence[_E], more: str = "") -> _E:
    if isinstance(value, str) and value in allowed:
        return kind(value)
    return _refuse(option, value, [str(v) for v in allowed], more)


def _refuse(option: str, value: object, allowed: Sequence[str], more: str = "") -> Any:
    raise DbtflowError(f"Unknown {option} '{value}'.", f"use one of: {', '.join(allowed)}{more}.")


@dataclass(frozen=True)
class PlanOptions:
    """The choices of a plan and its run, validated (plain strings become enum members)."""

    pattern: Pattern = Pattern.PER_MODEL
    #: dbt selection tokens (``"a b"`` is ``("a", "b")``, a union as in dbt).
    select: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    selector: str | None = None
    #: Where a model's tests run (per_model).
    tests: TestMode = TestMode.WITH_MODEL
    #: Streamed or per task (per_model).
    execution: Execution = Execution.STREAMED
    #: The grouping of the grouped pattern: a ``GroupBy`` or a ``Grouper`` function.
    group_by: GroupBy | Grouper = field(default=GroupBy.FOLDER, compare=False)
    #: Leave out the nodes whose code, upstream nodes and sources have not changed since their
    #: last build by the DAG (``dbtflow.project.state_aware``).
    state_aware: bool = False

    def __post_init__(self) -> None:
        checked: dict[str, Any] = {
            "pattern": _member(Pattern, self.pattern, "pattern", list(Pattern)),
            "select": as_tokens(self.select),
            "exclude": as_tokens(self.exclude),
            "execution": _member(Execution, self.execution, "execution", list(Execution)),
            "tests": _member(TestMode, self.tests, "tests option", list(TestMode)),
            "state_aware": bool(self.state_aware),
        }
        if not callable(self.group_by):
            checked["group_by"] = _member(
                GroupBy,
                self.group_by,
                "group_by",
                list(GroupBy),
                ", or a function that maps a dbtflow Node to a group name",
            )
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        if self.state_aware and self.pattern is Pattern.CLOUD:
            raise DbtflowError(
                "state_aware is not supported with the cloud pattern.",
                "use per_model, single or grouped, or leave state_aware off.",
            )

    @classmethod
    def of(cls, **choices: Unpack[PlanChoices]) -> PlanOptions:
        """Options from keyword arguments as users pass them; a missing choice takes the default."""
        return cls(**choices)  # type: ignore[arg-type]  # plain strings are checked above

    @property
    def streamed(self) -> bool:
        return self.execution is Execution.STREAMED

    @property
    def selection(self) -> list[str]:
        """The DAG's selection as dbt flags (``--select ... --exclude ... --selector ...``)."""
        return selection_args(self.select, self.exclude, self.selector)

    def choices(self) -> dict[str, Any]:
        """The options as plain keyword arguments of ``dbt_dag`` (strings and lists)."""
        values: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            values[f.name] = list(value) if isinstance(value, tuple) else value
            if isinstance(value, StrEnum):
                values[f.name] = value.value
        return values
