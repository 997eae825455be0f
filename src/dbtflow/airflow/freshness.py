"""``DbtSourceFreshnessOperator``: hold dbt back until its sources are fresh.

Each check runs ``dbt source freshness`` on a worker (a few seconds, from the cached manifest);
between checks the task waits in the triggerer, holding no worker slot. It succeeds when every
gated source passes (a warning counts as fresh unless ``warn_is_fresh=False``), and when its
timeout passes it fails (or, with ``soft_fail``, is skipped) with each stale source and its age.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from dbtflow.project.config import DbtProject
from dbtflow.project.freshness import check_freshness
from dbtflow.project.manifest import load_graph
from dbtflow.project.status import FRESH, FRESH_WITH_WARNINGS

STARTED_KEY = "freshness_wait_started"


class DbtSourceFreshnessOperator(BaseOperator):
    """Wait until the dbt sources ``sources`` (unique ids) are fresh.

    An operator that defers between checks, not an Airflow sensor (``BaseSensorOperator``): its
    ``poke_interval``, ``timeout`` and ``soft_fail`` mean what a sensor's do.
    """

    template_fields: Sequence[str] = ("sources",)
    ui_color = "#7B8F9E"

    def __init__(
        self,
        *,
        project: DbtProject,
        sources: Sequence[str],
        warn_is_fresh: bool = True,
        poke_interval: float = 300.0,
        timeout: float = 3600.0,
        soft_fail: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.project = project
        self.sources = list(sources)
        self.warn_is_fresh = warn_is_fresh
        self.poke_interval = poke_interval
        self.timeout = timeout
        self.soft_fail = soft_fail

    def execute(self, context: Any, event: Any = None) -> Any:
        ti = context["ti"]
        # When the waiting began: kept in XCom, which Airflow keeps across deferrals (and clears
        # when a new try starts), rather than in the resume arguments, which dag.test() drops.
        started = ti.xcom_pull(task_ids=ti.task_id, key=STARTED_KEY)
        if started is None:
            started = time.time()
            ti.xcom_push(key=STARTED_KEY, value=started)
        results = check_freshness(self.project, self.sources, load_graph(self.project))
        fresh = FRESH_WITH_WARNINGS if self.warn_is_fresh else FRESH
        stale = [r for r in results if r.status not in fresh]
        summary = {
            "sources": {r.unique_id: r.to_dict() for r in results},
            "stale": [r.unique_id for r in stale],
        }
        for result in results:
            self.log.info("%s", result.describe())
        if not stale:
            return summary
        waited = time.time() - started
        if waited + self.poke_interval > self.timeout:
            context["ti"].xcom_push(key="return_value", value=summary)
            message = f"{len(stale)} source(s) still stale after {waited:.0f} s:\n" + "\n".join(
                r.describe() for r in stale
            )
            if self.soft_fail:
                raise AirflowSkipException(message)
            raise AirflowException(message)
        self.log.info("%d source(s) stale; checking again in %.0f s.", len(stale), self.poke_interval)
        self.defer(
            trigger=TimeDeltaTrigger(timedelta(seconds=self.poke_interval)),
            method_name="execute",
        )


#: The operator's former name (it is no ``BaseSensorOperator``), kept so DAG files using it still work.
DbtSourceFreshnessSensor = DbtSourceFreshnessOperator
