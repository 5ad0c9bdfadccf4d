"""Retention: remove raw data older than the configured periods, and log what went.

pipeline.yml (every key optional; a key left out keeps that data for ever)::

    retention:
      interactions_days: 400   # interactions, interactions_enriched, restricted_interactions
      quarantine_days: 30      # quarantine, restricted_quarantine
      snapshots_days: 14       # per-run exports (<work_dir>/runs/<ds>/), profile_merges and
                               # identity_link_audit partitions

Partitions are dated by landing date (``dt``). A partition goes when ``dt < D - N days``, D being
the date of the task's run, so re-running a day removes nothing new. Form entries and identities
are not aged out: they carry consent and identity, which profiles need for as long as they exist
(erasure requests remove them per person). Every run logs, per table, the cutoff and the rows
removed, appends a ``retention_log`` row for each table it removed something from, and records its
date in ``retention_dates`` (removal or not).

A daily run must not load what retention has aged out (a backfill of an old date would bring it
back, and deliver it): ``cutoffs_as_of`` gives the cutoffs it respects, counted back the same way
from the latest date the deployment has reached rather than from the run's own date.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from audience_profiles.config import (
    DAYS_MAX,
    ConfigError,
    PipelineConfig,
    load_config,
    reject_unknown,
)
from audience_profiles.warehouse import open_warehouse
from audience_profiles.warehouse.base import Warehouse, check_ds

log = logging.getLogger(__name__)

TABLES = {
    "interactions_days": ("interactions", "interactions_enriched", "restricted_interactions"),
    "quarantine_days": ("quarantine", "restricted_quarantine"),
    "snapshots_days": ("profile_merges", "identity_link_audit"),
}
# Where "today" for a daily run's cutoffs comes from: (table, date column), besides the run's date.
AS_OF_SOURCES = (("published_snapshots", "dt"), ("retention_dates", "ds"), ("retention_log", "ds"))
RUN_FOLDERS = "work_dir/runs"  # the retention_log name of the per-run export folders
# Every step of a run's build (extract to deliver) touches this file in its folder, and its
# cleanup removes it: while it is there and fresh, the run is in flight (a backfill of an old
# date), retention leaves the folder and an erasure the run's scratch schema. A run that died
# holds it no longer than a day after its last step.
RUN_IN_FLIGHT_MARKER = "_in_flight"
RUN_IN_FLIGHT_SECONDS = 24 * 3600


def run_in_flight(folder: Path) -> bool:
    try:
        touched = (folder / RUN_IN_FLIGHT_MARKER).stat().st_mtime
    except FileNotFoundError:
        return False
    return time.time() - touched < RUN_IN_FLIGHT_SECONDS


@dataclass(frozen=True)
class RetentionPolicy:
    interactions_days: int | None = None
    quarantine_days: int | None = None
    snapshots_days: int | None = None

    @classmethod
    def from_config(cls, config: PipelineConfig) -> RetentionPolicy:
        """Parse ``retention:`` from the raw pipeline.yml (config.py calls it when the file loads,
        so a mistake fails there, naming the key)."""
        raw = config.raw.get("retention") or {}
        where = f"{config.source_file}: retention"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a mapping of {', '.join(TABLES)}")
        reject_unknown(raw, TABLES, "retention.", config.source_file, "in retention")
        days = {}
        for key, value in raw.items():
            if value is None:
                continue
            # past DAYS_MAX, the cutoff's date arithmetic failed in a run (OverflowError)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= DAYS_MAX:
                raise ConfigError(
                    f"{where}.{key} must be a whole number of days (1 to {DAYS_MAX}), not {value!r}"
                )
            days[key] = value
        return cls(**days)

    def cutoffs(self, ds: str) -> dict[str, str]:
        """Target -> first date kept, for the run of ``ds``."""
        day = dt.date.fromisoformat(check_ds(ds))
        return {
            key: (day - dt.timedelta(days=days)).isoformat()
            for key in TABLES
            if (days := getattr(self, key)) is not None
        }


def cutoffs_as_of(wh: Warehouse, config: PipelineConfig, ds: str) -> tuple[str, dict[str, str]]:
    """``(as_of, cutoffs)`` a daily run of ``ds`` respects: nothing dated before its cutoff loads.

    Retention counts back from its own run's date, and the retention task runs on the clock, so
    a run of an old date (a backfill, a late catch-up, a re-run) cannot count back from its own
    date: its partition would always look fresh. Nor from the wall clock: runs are keyed by
    logical date, and a run depends on the warehouse's state, not on when it runs. It counts from
    the latest logical date the deployment has reached, ``as_of``: the later of ``ds``, the
    latest date a daily run published and the latest date retention ran for. That is never
    earlier than what retention has applied, so what it removed stays out; for a run of the
    latest date it is the run's own date, so nothing changes for a normal day.
    """
    policy = RetentionPolicy.from_config(config)
    if not policy.cutoffs(ds):
        return ds, {}
    as_of = max([ds, *latest_dates(wh, AS_OF_SOURCES)])
    return as_of, policy.cutoffs(as_of)


def latest_dates(wh: Warehouse, sources: tuple[tuple[str, str], ...]) -> list[str]:
    """The latest date (YYYY-MM-DD) of each ``(table, column)`` that exists and holds one.

    Dates after tomorrow (UTC) are left out, loudly: only a mistyped run date can have written
    one (runs refuse them now: ``pipeline.logical_ds``), and counted as reached it would age out
    every later run's rows and lift the stream's ``as_of`` past every consumer's clock.
    """
    from audience_profiles.pipeline import latest_allowed_date  # pipeline imports this module

    limit = latest_allowed_date()
    present = wh.table_names()
    dates = []
    for table, column in sources:
        if table in present:
            latest = wh.query(
                f"SELECT max({column}) FROM {table} WHERE {column} <= DATE '{limit}'"
            )[0][0]
            future = wh.query(f"SELECT count(*) FROM {table} WHERE {column} > DATE '{limit}'")
            if future[0][0]:
                log.warning(
                    "%s has %s row(s) with %s after tomorrow (%s): a mistyped run date? "
                    "Ignored as the latest date reached; delete them",
                    table,
                    future[0][0],
                    column,
                    limit,
                )
            if latest is not None:
                dates.append(str(latest)[:10])
    return dates


def apply_retention(ds: str, run_id: str, config: PipelineConfig | None = None) -> list[dict]:
    """Remove what is older than the policy allows; one entry per table (and the run folders)."""
    config = config or load_config()
    cutoffs = RetentionPolicy.from_config(config).cutoffs(ds)
    if not cutoffs:
        log.info("no retention configured in %s: nothing removed", config.source_file)
        return []
    folders: list[Path] = []
    if "snapshots_days" in cutoffs:
        runs = Path(config.work_dir) / "runs"
        # Not a run's folder while it runs: removed between its extract and validate, or its
        # publish and deliver, every later task (and retry) of the run failed on the files.
        folders = sorted(
            p
            for p in runs.glob("????-??-??")
            if p.is_dir() and p.name < cutoffs["snapshots_days"] and not run_in_flight(p)
        )
    with open_warehouse(config) as wh:
        wh.setup()
        present = wh.table_names()
        wh.run_sql(
            "privacy/retention",
            ds=ds,
            run_id=run_id,
            plan=[
                (target, table, cutoff)
                for target, cutoff in cutoffs.items()
                for table in TABLES[target]
                if table in present
            ],
            folders=(
                [("snapshots_days", RUN_FOLDERS, cutoffs["snapshots_days"], len(folders))]
                if "snapshots_days" in cutoffs
                else []
            ),
        )
        removed = [
            {"target": t, "table": n, "cutoff": str(c), "rows_removed": r}
            for t, n, c, r in wh.query("SELECT * FROM retention_run ORDER BY target, table_name")
        ]
    # After the log is committed: a crash here leaves folders the next run removes.
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    for entry in removed:
        log.info(
            "retention %s: removed %s row(s) of %s older than %s",
            entry["target"],
            entry["rows_removed"],
            entry["table"],
            entry["cutoff"],
        )
    return removed
