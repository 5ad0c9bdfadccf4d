"""Wait for a date's landing before its run extracts it.

:class:`WaitForLandingOperator` is the daily DAG's first task (``wait_for_landing``). It looks
for the partition of every source listed in ``landing_wait.required`` (pipeline.yml); while one
is missing it defers on the triggerer (no worker slot is held) and looks again every
``poke_minutes``, until ``deadline_hours`` after the run's day is over. A partition still missing
then fails the run at once (no retries), naming the folder: without it the run would build the
date from no rows and go green, and a partition landing later would be in no output until the
date was run again. A backfill of an old date past its deadline looks once.

With nothing required (the default) the task returns at once. The module imports only the
operator base at DAG parse time; the pipeline loads when the task runs.

Before it looks, the task also reads the other configuration the run will read
(:func:`check_configuration`), so a mistake there fails the run's first task, naming the file
and the key, instead of ``build_segments`` or a delivery after the whole build.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import BaseOperator

from audience_profiles.dag_defaults import fails_fast

# A margin on top of each wait: without a triggerer running, the try fails and is retried.
TRIGGER_GRACE = dt.timedelta(minutes=10)


def check_configuration(config) -> None:
    """Read identity.yml, segments.yml and each enabled Dotdigital destination's nested options
    (``segments``, ``consent``...) as the tasks using them will, and the profile columns they
    name against ``config.PROFILE_COLUMNS``: cheap, no warehouse and no network. pipeline.yml
    itself is checked whole by ``load_config``."""
    from audience_profiles.identity import load_rules
    from audience_profiles.segments import segments_for

    load_rules(config.identity_config)
    segments_for(config)
    dotdigital = [d for d in config.enabled_destinations if d.kind == "dotdigital"]
    if dotdigital:  # its module imports the sync state's DuckDB: only when one is configured
        from audience_profiles.destinations.dotdigital import (
            DotdigitalOptions,
            check_profile_columns,
        )

        for destination in dotdigital:
            DotdigitalOptions.from_config(destination, config)
            check_profile_columns(destination, config)


class WaitForLandingOperator(BaseOperator):
    ui_color = "#e8f4fd"

    @fails_fast  # past the deadline a retry would look at the same landing
    def execute(self, context, event: Any = None) -> dict[str, Any]:
        from audience_profiles.config import load_config
        from audience_profiles.pipeline import (
            RunWindow,
            landing_deadline,
            landing_gaps,
            landing_missing,
        )

        config = load_config()
        check_configuration(config)
        window = RunWindow.from_context(context)
        gaps = landing_gaps(window, config)
        required = list(config.landing_wait.required)
        if not gaps:
            if required:
                self.log.info("%s: landed: %s", window.ds, ", ".join(required))
            return {"ds": window.ds, "required": required}
        deadline = landing_deadline(window, config)
        now = dt.datetime.now(dt.UTC)
        if now >= deadline:
            raise landing_missing(window, gaps, config)
        wake = min(now + dt.timedelta(minutes=config.landing_wait.poke_minutes), deadline)
        self.log.info(
            "%s: waiting for the landing until %s UTC, looking again at %s: %s",
            window.ds,
            f"{deadline:%Y-%m-%d %H:%M}",
            f"{wake:%H:%M:%S}",
            "; ".join(gaps),
        )
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        self.defer(
            trigger=DateTimeTrigger(wake),
            method_name="execute",
            timeout=wake - now + TRIGGER_GRACE,
        )
