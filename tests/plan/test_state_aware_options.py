"""``PlanOptions.state_aware``: accepted where a run can leave nodes out, refused where it cannot."""

from __future__ import annotations

import pytest

from dbtflow.errors import DbtflowError
from dbtflow.plan.options import PlanOptions


@pytest.mark.parametrize("pattern", ["per_model", "single", "grouped"])
def test_state_aware_is_accepted_where_it_works(pattern: str) -> None:
    assert PlanOptions.of(pattern=pattern, state_aware=True).state_aware is True
    assert PlanOptions.of(pattern=pattern).choices()["state_aware"] is False


@pytest.mark.parametrize(
    ("choices", "named"),
    [({"execution": "per_task"}, "execution='per_task'"), ({"pattern": "cloud"}, "the cloud pattern")],
)
def test_state_aware_is_refused_where_tasks_would_build_regardless(choices: dict, named: str) -> None:
    with pytest.raises(DbtflowError, match=named):
        PlanOptions.of(state_aware=True, **choices)
