"""A streamed node task that ends in the triggerer emits its node's asset event there.

Airflow registers a task's asset events only from a task that succeeds on a worker (the execution
API's state update carries them); a task that a trigger ends gets none (apache/airflow#49347). So
a streamed run's events came from its ``dbt_build`` task's success, all at once after dbt: at 500
nodes Airflow's registration of 500 events through an alias (about seven queries each) took the
api-server over 30 s, the worker's state update timed out and was retried, and the run ended
36-56 s after dbt (2026-12-03, PostgreSQL metadata). Now each node task's trigger puts its node's
event in its ``TaskSuccessEvent`` (under ``MARKER``, never pushed as an XCom), and this module's
handler, registered for ``TaskSuccessEvent`` on Airflow's ``handle_event_submit``, registers it in
the same transaction that ends the task, as the task's own event: the events are spread over the
run, and the one who built a node emits its event. Once that transaction commits, the build is
marked emitted in the run-time history, so the run's ``dbt_assets`` teardown (which emits what no
task could) ends without a worker.

- **Airflow internals:** ``airflow.models.trigger.handle_event_submit`` (a ``functools.singledispatch``
  function, registered through ``end_event_handlers``) and its ``BaseTaskEndEvent`` handler;
  ``AssetManager.register_asset_change`` and
  ``AssetModel.from_serialized`` (used as Airflow's own alias path in
  ``TaskInstance.register_asset_changes_in_db`` uses them), apache-airflow-core 3.3 (3.3.2 read).
  Installed in ``airflow triggerer`` processes (through dbtflow's provider information) and in
  ``dbtflow run``'s loop; ``tests/airflow/test_node_assets.py`` fails when they change.
- **Where it is not installed**, the trigger sees that and leaves the event to the teardown (on a
  worker, after dbt), as before.
- **Remove it when** Airflow registers the asset events of a task ended by a trigger.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dbtflow.airflow import end_event_handlers
from dbtflow.airflow.after_import import in_triggerer
from dbtflow.monitoring.asset_emissions import event_extra, mark_nodes_emitted
from dbtflow.monitoring.history import History
from dbtflow.project.results import NodeResult

#: The XCom key of a ``TaskSuccessEvent`` that carries its task's asset events; never pushed.
MARKER = "__dbtflow_asset_events__"
FLAG = "dbtflow_node_assets"

if TYPE_CHECKING:
    from airflow.triggers.base import TaskSuccessEvent

log = logging.getLogger(__name__)


def supported() -> bool:
    """Whether this process (or the supervisor it was forked from) registers the marked events."""
    from airflow.triggers.base import TaskSuccessEvent

    return end_event_handlers.installed(TaskSuccessEvent, FLAG)


def asset_events(
    results: Sequence[NodeResult],
    uris: Mapping[str, tuple[str, str]],
    facts: Mapping[str, Any],
    invocations: Mapping[str, str],
) -> list[dict[str, Any]]:
    """The events of the nodes built successfully that have a relation: name, URI and extra (the
    facts of the build, as ``dbtflow.airflow.assets.emit_builds`` gives them)."""
    from airflow.sdk import Asset

    events = []
    for result in results:
        if result.status != "success" or result.unique_id not in uris:
            continue
        uri, airflow_uri = uris[result.unique_id]
        try:  # as dbtflow.airflow.assets.node_asset names it
            asset = Asset(uri=uri)
        except ValueError:
            asset = Asset(uri=airflow_uri)
        extra = event_extra(
            result.unique_id,
            result.status,
            result.execution_time,
            result.rows_affected,
            invocations.get(result.unique_id),
            dict(facts),
        )
        events.append({"name": asset.name, "uri": asset.uri, "extra": extra})
    return events


def install() -> None:
    """Register the handler (now, or when Airflow imports ``airflow.models.trigger``)."""
    end_event_handlers.install("TaskSuccessEvent", FLAG, _handler)


def install_in_triggerer() -> None:
    """``install`` in an ``airflow triggerer`` process only (called from the provider information)."""
    if in_triggerer():
        install()


def _handler(airflows_own: end_event_handlers.Handler) -> end_event_handlers.Handler:
    def submit(event: TaskSuccessEvent, *, task_instance: Any, session: Any) -> None:
        carried: Any = (event.xcoms or {}).pop(MARKER, None)
        airflows_own(event, task_instance=task_instance, session=session)
        if carried:
            _register_events(carried["events"], carried.get("alias"), task_instance, session)

    return submit


def _register_events(events: list[dict[str, Any]], alias: str | None, ti: Any, session: Any) -> None:
    """Register the events as ``ti``'s, as Airflow registers a task's events through an alias,
    and mark the builds emitted. A failure is logged: the teardown then emits them."""
    from airflow.assets.manager import asset_manager
    from airflow.serialization.definitions.assets import SerializedAsset

    try:
        for item in events:
            asset = SerializedAsset(name=item["name"], uri=item["uri"], group="asset", extra={}, watchers=[])
            _ensure_active(asset, session)
            asset_manager.register_asset_change(
                task_instance=ti,
                asset=asset,
                source_alias_names=[alias] if alias else [],
                extra=item["extra"],
                session=session,
            )
        _mark_after_commit(session, ti, [item["extra"]["unique_id"] for item in events])
    except Exception:
        log.exception(
            "dbtflow: could not register the asset events of %s; the run's dbt_assets emits them", ti
        )


#: ``Session.info`` keys: the builds to mark emitted when the session commits (dag_id, run_id)
#: -> task_id -> unique ids; whether the session has this module's commit listeners.
_PENDING, _LISTENING = "dbtflow_emitted_pending", "dbtflow_emitted_listening"


def _mark_after_commit(session: Any, ti: Any, unique_ids: list[str]) -> None:
    """Mark the builds emitted once the transaction that registered their events commits (and not
    if it rolls back: the events are then applied again, or the teardown emits them). A triggerer
    pass ends its tasks in one transaction (``triggerer_passes``), so its builds are marked in
    one read and one write of the history (two connections per event before: 5 % of the
    triggerer's GIL samples at 1000 node tasks, py-spy, 2026-12-04)."""
    from sqlalchemy import event

    if not session.info.get(_LISTENING):
        session.info[_LISTENING] = True
        event.listen(session, "after_commit", _mark_pending)
        event.listen(session, "after_rollback", lambda s: s.info.pop(_PENDING, None))
    by_run = session.info.setdefault(_PENDING, {})
    by_run.setdefault((ti.dag_id, ti.run_id), {}).setdefault(ti.task_id, []).extend(unique_ids)


def _mark_pending(session: Any) -> None:
    pending: dict[tuple[str, str], dict[str, list[str]]] = session.info.pop(_PENDING, None) or {}
    for (dag_id, run_id), by_task in pending.items():
        try:
            mark_nodes_emitted(History(), dag_id, run_id, by_task)
        except Exception:
            log.exception(
                "dbtflow: could not record the asset events of %s as emitted; "
                "the run's dbt_assets emits them again",
                sorted(by_task),
            )


def _ensure_active(asset: Any, session: Any) -> None:
    """Create the asset's model (as Airflow does for an alias's new asset) and mark it active
    (as the dag-processor does for a declared one), so that its event is registered quietly."""
    from airflow.models.asset import AssetActive, AssetModel
    from sqlalchemy import or_, select

    # One query in the usual case (the asset exists and is active): the model with its active row.
    found = session.execute(
        select(AssetModel, AssetActive.name)
        .outerjoin(AssetActive, or_(AssetActive.name == AssetModel.name, AssetActive.uri == AssetModel.uri))
        .where(AssetModel.name == asset.name, AssetModel.uri == asset.uri)
    ).first()
    if found is not None and found[1] is not None:
        return
    model = found[0] if found is not None else None
    if model is None:
        model = AssetModel.from_serialized(asset)
        session.add(model)
        session.flush()
    active = select(AssetActive).where(or_(AssetActive.name == asset.name, AssetActive.uri == asset.uri))
    if session.scalar(active) is None:
        session.add(AssetActive.for_asset(model))
        session.flush()
