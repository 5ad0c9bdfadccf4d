"""Deliver a run to one destination, deferring while the destination's imports finish elsewhere.

:class:`DeliverOperator` runs :func:`audience_profiles.pipeline.deliver` for one destination and
returns its report: it is the DAG's mapped ``deliver`` task. A destination that submits work to be
finished later reports it in ``details["pending_imports"]``; today that is Dotdigital with
``defer_imports: true``. The operator then defers on
:class:`~audience_profiles.triggers.dotdigital.DotdigitalImportTrigger`, so no worker slot waits
while the triggerer polls, and delivers again when the trigger fires: that delivery confirms the
imports and carries on, deferring again while there are more (more files than
``max_active_imports``, all segments together, take several rounds). Other destinations never
defer, so one mapped task serves every destination::

    DeliverOperator.partial(
        task_id="deliver", tables=tables, map_index_template="{{ task.destination_name }}"
    ).expand(destination_name=destinations())

A destination whose state file another run holds (Dotdigital: two dates' deliveries at once,
as in a catch-up) waits on the triggerer too, 30 s at a time for up to two hours, rather than
spend the task's retries on ``StateLockedError``.

The task's return value (XCom) is the last delivery's report; every round's counts are in the
destination's ``sync_runs``. The module imports only the operator base at DAG parse time; the
pipeline loads when a task runs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import BaseOperator

from audience_profiles.dag_defaults import fails_fast


class ImportWaitError(RuntimeError):
    """The trigger gave up on the imports (timeout or error); a retry finishes them."""


STATE_WAIT = dt.timedelta(seconds=30)
STATE_WAIT_MAX = dt.timedelta(hours=2)  # past this, StateLockedError fails the try


class DeliverOperator(BaseOperator):
    template_fields = ("destination_name", "tables")

    def __init__(self, *, destination_name: str, tables: dict[str, str], **kwargs: Any):
        super().__init__(**kwargs)
        self.destination_name = destination_name
        self.tables = tables

    @fails_fast  # a mistake in the destination's options fails at once
    def execute(self, context, waited_seconds: float = 0) -> dict:
        from audience_profiles.destinations.sync_state import StateLockedError
        from audience_profiles.pipeline import RunWindow, deliver

        window = RunWindow.from_context(context)
        try:
            report = deliver(self.destination_name, window, dict(self.tables))
        except StateLockedError:
            if waited_seconds >= STATE_WAIT_MAX.total_seconds():
                raise
            from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

            self.log.info(
                "%s: another run holds its state, waiting %ss (waited %ss)",
                self.destination_name,
                STATE_WAIT.total_seconds(),
                waited_seconds,
            )
            self.defer(
                trigger=TimeDeltaTrigger(STATE_WAIT),
                method_name="after_state_wait",
                timeout=STATE_WAIT * 4,  # no triggerer running: fail the try, for a retry
                kwargs={"waited_seconds": waited_seconds + STATE_WAIT.total_seconds()},
            )
        pending = report["details"].get("pending_imports")
        if pending:
            self.log.info(
                "%s: waiting for %d import(s) on the triggerer", self.destination_name, len(pending)
            )
            self.defer(trigger=self._import_trigger(pending), method_name="resume")
        self._describe_outlet_events(context, window, report)
        return report

    def _describe_outlet_events(self, context, window, report: dict) -> None:
        """Name the date and destination in the asset events this delivery emits (the DAG
        declares ``audience_profiles_delivered`` and the alias ``audience_profiles_delivered_to``,
        which becomes this destination's own asset): a downstream DAG reads them from its
        ``triggering_asset_events``. Sent only when the task succeeds, after the last round."""
        from airflow.sdk import Asset, AssetAlias

        from audience_profiles.assets import delivered_to

        extra = {
            **window.as_dict(),
            "destination": report["destination"],
            "kind": report["kind"],
            "rows": report["rows"],
            "files": report["files"],
        }
        for outlet in self.outlets:
            if isinstance(outlet, Asset):
                context["outlet_events"][outlet].extra = extra
            elif isinstance(outlet, AssetAlias):
                context["outlet_events"][outlet].add(
                    delivered_to(self.destination_name), extra=extra
                )

    def resume(self, context, event: dict[str, Any]) -> dict:
        """The trigger fired: deliver again, which confirms the imports and finishes the sync."""
        if event["status"] != "done":
            # The imports stay recorded in the destination's state: the retry picks them up.
            raise ImportWaitError(f"{self.destination_name}: {event['message']}")
        self.log.info("%s: imports finished: %s", self.destination_name, event["imports"])
        return self.execute(context)

    def after_state_wait(self, context, event=None, waited_seconds: float = 0) -> dict:
        """The wait for another run's hold on the state is over: deliver again."""
        return self.execute(context, waited_seconds)

    def _import_trigger(self, import_ids: list[str]):
        from audience_profiles.config import load_config
        from audience_profiles.destinations.dotdigital import DotdigitalOptions
        from audience_profiles.hooks.dotdigital import DotdigitalHook
        from audience_profiles.triggers.dotdigital import DotdigitalImportTrigger

        config = load_config()
        destination = config.destination(self.destination_name)
        options = DotdigitalOptions.from_config(destination, config)
        return DotdigitalImportTrigger(
            destination.conn_id or DotdigitalHook.default_conn_name,
            import_ids,
            poll_interval=options.poll_interval,
            timeout=options.import_timeout,
            max_attempts=options.max_attempts,
            backoff_base=options.backoff_base,
            max_rate_limit_wait=options.max_rate_limit_wait,
        )
