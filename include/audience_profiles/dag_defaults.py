"""What every DAG of this project shares: owner, retries, tags, pool and callbacks, defined once.

Kept import-light: DAG files import this at parse time, so nothing here may touch the network,
the metadata database or a heavy library. The only read is pipeline.yml's ``start_date`` and
``alerts.late_after_hours`` (a small local file, read once and cached): the first date to build
is the deployment's to set, not the code's, and a DAG's deadline is fixed when it is parsed.
Airflow itself is imported only inside the functions DAG files call: the build's modules import
this one (tests/test_imports.py) and must not pay for Airflow.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Callable
from typing import Any

from audience_profiles import alerts

OWNER = "audience-profiles"
# DuckDB allows one writer per file: every task that opens the warehouse takes this pool's slot.
# One slot on Snowflake too: publish, stream batches and erasure rely on taking turns there
# (docs/operations.md, "The pool").
WAREHOUSE_POOL = "audience_profiles_warehouse"
WAREHOUSE_POOL_SLOTS = 1
# The daily DAG's extract tasks, by map index (the report names a failed one by it).
EXTRACT_SOURCES = ("interactions", "elements", "form_entries", "identities")


class Tag(enum.StrEnum):
    """The only tags a DAG here may carry (the DAG integrity test rejects others)."""

    AUDIENCE_PROFILES = "audience-profiles"
    DAILY = "daily"
    STREAM = "stream"
    PRIVACY = "privacy"


# Retries wait 20-40 s, then 40-80 s, then 80-160 s (Airflow adds jitter within each doubling),
# never more than max_retry_delay. Every retry and every final failure posts an alert to the
# webhook named in pipeline.yml (alerts.webhook_conn_id); sending it can never fail the task.
DEFAULT_ARGS = {
    "owner": OWNER,
    "retries": 3,
    "retry_delay": dt.timedelta(seconds=20),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": dt.timedelta(minutes=10),
    "execution_timeout": dt.timedelta(hours=2),
    "on_retry_callback": alerts.on_retry,
    "on_failure_callback": alerts.on_failure,
}


@functools.cache
def _dag_settings():
    from audience_profiles.config import read_dag_settings

    return read_dag_settings()


def start_date() -> dt.datetime:
    day = _dag_settings().start_date
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def late_run_deadline(late_after_hours: float | None = None) -> Any:
    """The daily DAG's deadline: a run not finished ``alerts.late_after_hours`` after its day
    ended (its logical date is the day's start) gets a "late" alert from ``alerts.on_late_run``,
    run by the triggerer (no worker slot). ``None`` when pipeline.yml sets no deadline.

    A run that succeeds in time cancels it; a failed one does not: its date is still undelivered.
    """
    hours = late_after_hours if late_after_hours is not None else _dag_settings().late_after_hours
    if hours is None:
        return None
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=dt.timedelta(days=1, hours=hours),
        callback=AsyncCallback(alerts.on_late_run),
        name="late_run",
    )


def daily_params() -> dict[str, Any]:
    """The daily DAG's params: what a backfill's config may set for its runs
    (``--dag-run-conf '{"restate_catalogue": "..."}'``); a scheduled run takes the defaults."""
    from airflow.sdk import Param

    return {
        "restate_catalogue": Param(
            "",
            type="string",
            description="Any new text naming the fix (e.g. '2026-12-04 poll 54663 typo'): gives "
            "this date the element catalogue landed now, and the dates after it too once they "
            "run again, instead of the titles each date had. Applied once per date: a run "
            "cleared later keeps its conf and does not restate again (docs/operations.md, "
            "'Re-running a date').",
        )
    }


def fails_fast(task_function: Callable[..., Any]) -> Callable[..., Any]:
    """Put under ``@task``: an error a retry would only repeat (``errors.NotRetryable``: a config
    mistake, a failed quality check) fails the task at once, so its alert goes out now; any other
    error keeps the task's retries."""

    @functools.wraps(task_function)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return task_function(*args, **kwargs)
        except Exception as exc:
            from audience_profiles.errors import NotRetryable

            if not isinstance(exc, NotRetryable):
                raise
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(str(exc)) from exc  # alerts name the cause

    return run


@fails_fast
def destination_names() -> list[str]:
    """The enabled destinations' names: the daily and erasure DAGs' ``destinations`` task. It has
    no upstream, so it starts with the run's first task and reads pipeline.yml whole: a mistake
    there fails it at once too, not after three retries (docs/operations.md, "Retries and
    alerts")."""
    from audience_profiles.config import load_config

    return [d.name for d in load_config().enabled_destinations]
