"""``PlanOptions.state_aware``: accepted where a run can leave nodes out, refused where it cannot."""

from __future__ import annotations

import pytest

from dbtflow.errors import DbtflowError
from dbtflow.plan.options import PlanOptions


@pytest.mark.parametrize(
    "choices",
    [{"pattern": "per_model"}, {"execution": "per_task"}, {"pattern": "single"}, {"pattern": "grouped"}],
)
def test_state_aware_is_accepted_where_it_works(choices: dict) -> None:
    assert PlanOptions.of(state_aware=True, **choices).state_aware is True
    assert PlanOptions.of(**choices).choices()["state_aware"] is False


def test_state_aware_is_refused_with_the_cloud_pattern() -> None:
    """dbt Cloud's job builds whatever its steps select: dbtflow cannot leave nodes out of it."""
    with pytest.raises(DbtflowError, match="the cloud pattern"):
        PlanOptions.of(state_aware=True, pattern="cloud")
