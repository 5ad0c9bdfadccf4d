"""The daily build, one function per DAG task.

Each function takes plain values (the run's dates, small dicts from upstream tasks) and returns a
small dict for XCom, so it runs the same under Airflow, in ``dag.test()`` and from tests. Data
moves between steps as warehouse tables and as Parquet files under the run's staging folder
(``<work_dir>/runs/<ds>/``), never through XCom.

Where things live for a run of logical date D:
- landing partitions ``date=D`` -> staged ``extract/<source>.parquet`` (all text, with file/line);
- validated rows -> warehouse source tables, partition ``dt = D`` (bad rows -> ``quarantine``),
  except what retention has aged out (a run of an old date: counted as aged out, not loaded);
- the run's snapshot tables (identity, profiles) -> schema ``run_<YYYYMMDD>``, dropped at the end;
- exports of every output table -> ``export/<table>.parquet``, which destinations deliver.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audience_profiles import landing, segments
from audience_profiles.config import (
    LATE_CHECK_DAYS_MAX,
    OUTPUT_TABLES,
    SCRATCH_DIR,
    PipelineConfig,
    load_config,
)
from audience_profiles.errors import NotRetryable
from audience_profiles.exports_lock import exports_lock
from audience_profiles.files import replace_file
from audience_profiles.identity import IdentityRules, load_rules, resolve_run, rules_fingerprint
from audience_profiles.privacy import EMAIL_PATTERN
from audience_profiles.privacy.retention import RUN_IN_FLIGHT_MARKER, cutoffs_as_of
from audience_profiles.privacy.suppression import (
    apply_suppression,
    suppress_run_outputs,
    suppression_count,
)
from audience_profiles.warehouse import open_warehouse
from audience_profiles.warehouse.base import Warehouse, check_ds

log = logging.getLogger(__name__)

VALIDATION_ORDER = ("elements", "interactions", "form_entries", "identities")
DATED_SOURCES = tuple(s for s in VALIDATION_ORDER if landing.SOURCES[s].partitioned)


class DataQualityError(NotRetryable, RuntimeError):
    """An output failed a write-audit-publish check: nothing is delivered."""


class RunBuildMissing(NotRetryable, RuntimeError):
    """A step found its run's build gone: the run finished before, and cleanup dropped it."""


class ReconciliationError(RuntimeError):
    """Rows read do not equal rows kept plus quarantined (plus aged out): something was lost."""


# The retention targets (privacy/retention.py) covering what validate writes for a date.
VALIDATED_TARGETS = ("interactions_days", "quarantine_days")


@dataclass(frozen=True)
class RunWindow:
    """The run's logical date and data interval, as naive UTC timestamps for SQL."""

    ds: str
    interval_start: str
    interval_end: str
    run_id: str = "manual"

    @property
    def run_schema(self) -> str:
        """The name of the schema the run builds in: ``run_YYYYMMDD``."""
        return "run_" + self.ds.replace("-", "")

    def run_schema_in(self, wh: Warehouse) -> str:
        """That schema as ``wh`` names it (on Snowflake, after the home schema:
        ``Warehouse.scratch_schema``)."""
        return wh.scratch_schema(self.run_schema)

    @classmethod
    def for_date(cls, ds: str, run_id: str = "manual") -> RunWindow:
        day = dt.date.fromisoformat(check_ds(ds))
        return cls(ds, f"{day} 00:00:00", f"{day + dt.timedelta(days=1)} 00:00:00", run_id)

    @classmethod
    def from_context(cls, context: dict[str, Any]) -> RunWindow:
        """The window of a task's run: its logical date D and the day [D, D+1) in UTC.

        Derived from the logical date rather than Airflow's data interval, because a manual run
        (``airflow dags test audience_profiles D``, a trigger from the UI) infers the interval
        that ends at D, while a scheduled or backfilled run of D covers D itself. Keying by D
        makes "run date D" mean the same thing everywhere.
        """
        return cls.for_date(logical_ds(context), str(context["run_id"]))

    def as_dict(self) -> dict[str, str]:
        return {
            "ds": self.ds,
            "interval_start": self.interval_start,
            "interval_end": self.interval_end,
            "run_id": self.run_id,
        }


def logical_ds(context: dict[str, Any]) -> str:
    """The run's logical date (YYYY-MM-DD); a run without one, or dated after tomorrow (UTC),
    fails at once, without retries.

    ``airflow dags trigger`` without ``--logical-date`` (or a REST trigger with
    ``"logical_date": null``) creates such a run; every date-keyed step would fail on it. A
    mistyped future date (2032 for 2022) would be recorded as the latest date reached, and
    retention, counting back from it (``retention.cutoffs_as_of``), would age out every later run.
    """
    from airflow.sdk.exceptions import AirflowFailException

    if not context.get("ds"):
        raise AirflowFailException(
            f"run {context.get('run_id')!r} has no logical date: every output is keyed by it. "
            "Trigger with one (airflow dags trigger --logical-date YYYY-MM-DD, or logical_date "
            "in the REST call)."
        )
    problem = future_date_problem(context["ds"])
    if problem:
        raise AirflowFailException(f"run {context.get('run_id')!r}: {problem}")
    return context["ds"]


def latest_allowed_date() -> str:
    """Tomorrow (UTC): no run, and no date a run relies on, is later (a data day may run early)."""
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()


def future_date_problem(ds: str) -> str | None:
    """Why ``ds`` cannot be run, when it is after tomorrow (UTC); None otherwise."""
    if ds <= latest_allowed_date():
        return None
    return (
        f"logical date {ds} is after tomorrow ({latest_allowed_date()}, UTC): a mistyped date? "
        "Nothing is built for it, since its date would count as reached (retention counts back "
        "from the latest date reached)"
    )


def run_dir(config: PipelineConfig, window: RunWindow) -> Path:
    return Path(config.work_dir) / "runs" / window.ds


def mark_in_flight(config: PipelineConfig, window: RunWindow) -> None:
    """Tell retention and the erasure the run is in use until cleanup (``retention.
    run_in_flight``): an old date's backfill lost its staged files or exports to the hourly
    retention mid-run, and an erasure must not drop the scratch schema of a run between two of
    its tasks (every task of the build touches the marker)."""
    folder = run_dir(config, window)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RUN_IN_FLIGHT_MARKER).touch()


QUARANTINE_FILES_LISTED = 10  # files with quarantined rows the run report names (of them all)


class LandingNotReady(NotRetryable, RuntimeError):
    """A required source's partition is still missing at the date's landing deadline."""


def landing_gaps(window: RunWindow, config: PipelineConfig) -> list[str]:
    """What of the run's landing ``landing_wait.required`` still waits for, one line a source."""
    wait = config.landing_wait
    gaps = []
    for name in wait.required:
        gap = landing.partition_gap(
            config.landing_root,
            landing.SOURCES[name],
            window.ds,
            config.landing_conn_id,
            wait.marker,
        )
        if gap:
            gaps.append(f"{name}: {gap}")
    return gaps


def landing_deadline(window: RunWindow, config: PipelineConfig) -> dt.datetime:
    """When the run stops waiting for its landing: ``deadline_hours`` after its day is over."""
    interval_end = dt.datetime.fromisoformat(window.interval_end).replace(tzinfo=dt.UTC)
    return interval_end + dt.timedelta(hours=config.landing_wait.deadline_hours)


def landing_missing(
    window: RunWindow, gaps: list[str], config: PipelineConfig, again: str | None = None
) -> LandingNotReady:
    """The error for a required partition still missing: what is missing and what to do.
    ``again``: how to run the date again (default: the DAG's, clearing wait_for_landing)."""
    again = again or (
        "clear wait_for_landing with its downstream tasks: airflow tasks clear "
        f"audience_profiles -t wait_for_landing -d -s {window.ds} -e {window.ds}"
    )
    return LandingNotReady(
        f"{window.ds}: the landing is not complete (landing_wait.required; the daily DAG waits "
        f"until {landing_deadline(window, config):%Y-%m-%d %H:%M} UTC): " + "; ".join(gaps) + ". "
        f"Land it (a file with only its header if the day had no rows) and run the date again "
        f"({again}); to build without a source, take it out of landing_wait.required"
    )


def late_landings(config: PipelineConfig, ds: str) -> list[dict[str, Any]]:
    """Files on landing now that no build of their date holds (``landed_files``): landed, or
    changed, after the date's extract read its partition, and not merged by a stream batch. Their
    rows are in no output until the date is run again, or a stream batch merges them (``stream``
    is true once the stream DAG has run in this warehouse).

    The dates looked at: the last ``landing_wait.late_check_days`` up to ``ds``, ``ds`` included,
    that the ledger has (a date no daily validate or stream batch recorded is not looked at), and
    no interactions past retention (a run again would not load them). The warehouse is read and
    closed before the landing is listed.
    """
    days = config.landing_wait.late_check_days
    if not days:
        return []
    first = (dt.date.fromisoformat(check_ds(ds)) - dt.timedelta(days=days - 1)).isoformat()
    held: dict[tuple[str, str], dict[str, str]] = {}  # by date, then source (the query's order)
    with open_warehouse(config) as wh:
        tables = wh.table_names(views=False)
        if "landed_files" not in tables:
            return []
        kept_from = cutoffs_as_of(wh, config, ds)[1].get("interactions_days", first)
        for source, day, file, version in wh.query_sql("report/landed_files", first=first, ds=ds):
            if source == "interactions" and day < kept_from:
                continue
            held.setdefault((source, day), {})
            if file is not None:
                held[source, day][file] = version
    streaming = "stream_files" in tables
    late = []
    hooks: dict = {}  # one S3 client for every partition listed
    for (source, day), files in held.items():
        now = landing.partition_versions(
            config.landing_root, landing.SOURCES[source], day, config.landing_conn_id, hooks
        )
        names = sorted(f for f, version in now.items() if files.get(f) != version)
        if names:
            late.append(
                {
                    "source": source,
                    "date": day,
                    "files": len(names),
                    "names": names[: landing.NAMES_SHOWN],
                    "stream": streaming,
                }
            )
    return late


def extract_source(source: str, window: RunWindow, config: PipelineConfig | None = None) -> dict:
    """Stage one source's landing files for the run's date (no warehouse access: runs in parallel)."""
    config = config or load_config()
    mark_in_flight(config, window)
    out = run_dir(config, window) / "extract" / f"{source}.parquet"
    # Taken before listing: validate keeps what a stream batch merged after it (_streamed_files).
    listed_at = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
    result = landing.extract(source, window.ds, config.landing_root, out, config.landing_conn_id)
    result |= partitions_before_start(source, config)
    result["listed_at"] = listed_at
    for twins in result.get("identical_files", []):
        log.warning(
            "%s %s: files with the same bytes, each read, so their rows are read %d times: %s. "
            'If one is a copy, remove it and run the date again (docs/operations.md, "Re-running a '
            'date")',
            source,
            window.ds,
            len(twins),
            landing.some_names(twins),
        )
    log.info(
        "extracted %s: %s file(s), %s row(s), %s malformed",
        source,
        result["files"],
        result["rows"],
        result["malformed"],
    )
    return result


def partitions_before_start(source: str, config: PipelineConfig) -> dict:
    """The source's partitions dated before ``start_date``, which no daily run reads, logged as a
    warning and returned for the run report (``before_start_date``: their count and the first
    names), so that their rows are not left out unremarked. A warning, not a failure: history
    kept from before the pipeline went live, in a landing it may not write to, is a setting."""
    if not landing.SOURCES[source].partitioned:
        return {}
    try:
        where, early = landing.partitions_before(
            config.landing_root,
            landing.SOURCES[source],
            config.start_date.isoformat(),
            config.landing_conn_id,
        )
    except Exception as exc:  # a warning's listing must not fail an extract that has its rows
        log.warning(
            "could not list the partitions of %s before start_date: %s: %s",
            source,
            type(exc).__name__,
            exc,
        )
        return {}
    if not early:
        return {}
    log.warning(
        "%s: %d partition(s) dated before start_date %s of %s, which no daily run reads: %s. "
        "Set start_date to the first of them and run those dates to load them, or move them "
        "aside (into an archive/ folder) to silence this",
        where,
        len(early),
        config.start_date,
        config.source_file,
        landing.some_names(early),
    )
    return {"before_start_date": {"partitions": len(early), "names": early[: landing.NAMES_SHOWN]}}


def aged_out_partitions(source: str, ds: str, past: dict[str, str]) -> list[tuple[str, str]]:
    """``(table, condition)`` of what validating ``source`` writes for ``ds`` that retention has
    aged out: ``past`` holds the retention targets whose cutoff ``ds`` falls before."""
    day = f"dt = DATE '{check_ds(ds)}'"
    parts = []
    if source == "interactions" and "interactions_days" in past:
        parts.append(("interactions", day))
    if "quarantine_days" in past:
        parts.append(("quarantine", f"{day} AND source = '{source}'"))
    return parts


def validate(
    window: RunWindow,
    staged: list[dict],
    config: PipelineConfig | None = None,
    restate_catalogue: str = "",
) -> dict:
    """Type-check every staged source into its partition; bad rows to quarantine; reconcile.

    A date retention has aged out (a backfill or late run of an old date: see
    ``retention.cutoffs_as_of``) loads nothing of what retention covers: those rows are counted
    as ``aged_out`` instead, and rows read = valid (kept) + quarantined + aged out.

    ``restate_catalogue`` (the daily DAG's param, a text naming the fix): the element catalogue
    landed now holds from the date on, replacing what this date and later ones recorded
    (catalogue/record.sql). Once: a run's conf stays with it, and a date that recorded with this
    text already runs as without it (its run cleared later, the same backfill run again).
    """
    config = config or load_config()
    mark_in_flight(config, window)
    by_source = {s["source"]: s for s in staged}
    for source, info in by_source.items():
        if not Path(info["path"]).exists():
            # The run finished before and its cleanup removed the staged files: validate cleared
            # on its own (with Downstream) stages the source again rather than fail every try.
            log.warning("%s: %s is gone (cleaned up): extracting it again", source, info["path"])
            by_source[source] = extract_source(source, window, config)
    _check_catalogue_landed(by_source, config)
    earlier = landed_before(window, config)  # listed before the warehouse (and its lock) is held
    counts: dict[str, dict[str, int]] = {}
    with open_warehouse(config) as wh:
        wh.setup()
        unbuilt = unbuilt_dates(wh, window, earlier)
        as_of, cutoffs = cutoffs_as_of(wh, config, window.ds)
        covered = {t: c for t, c in cutoffs.items() if t in VALIDATED_TARGETS}
        past = {t: c for t, c in covered.items() if window.ds < c}
        if past:
            log.warning(
                "%s is past retention as of %s (%s): its rows there are counted as aged out, "
                "not loaded",
                window.ds,
                as_of,
                ", ".join(f"{t} keeps dates from {c}" for t, c in sorted(past.items())),
            )
            wh.execute_script(
                "CREATE OR REPLACE TEMP TABLE aged_out_rows "
                "(source VARCHAR, table_name VARCHAR, rows_aged_out BIGINT)"
            )
        has_stream = "stream_files" in wh.table_names(views=False)
        restate = _restate_to_apply(wh, window.ds, restate_catalogue)
        if restate:
            _check_restate_landed(by_source, config)
        records_catalogue = bool(restate) or bool(
            wh.query(wh.render("catalogue/records", ds=window.ds))[0][0]
        )
        for source in VALIDATION_ORDER:
            info = by_source[source]
            drop = aged_out_partitions(source, window.ds, past)
            staged_relation = wh.staged_relation(info["path"])
            streamed = has_stream and _streamed_files(wh, config, source, window.ds, info)
            sql = wh.render(
                f"validate/{source}",
                ds=window.ds,
                staged=staged_relation,
                email_pattern=EMAIL_PATTERN,
                streamed=streamed,
                write_quarantine=records_catalogue,
            )
            if source != "elements" and "versions" in info:  # (an extract from before them)
                sql += "\n" + wh.render(
                    "validate/landed_files",
                    source=source,
                    ds=window.ds,
                    versions=sorted(info["versions"].items()),
                    streamed=streamed,
                    keep_days=LATE_CHECK_DAYS_MAX,
                    aged_out=[table for table, _ in drop],
                )
            # In the validation's own transaction: aged-out rows are never committed at all.
            for table, condition in drop:
                sql += (
                    f"\nINSERT INTO aged_out_rows SELECT '{source}', '{table}', count(*) "
                    f"FROM {table} WHERE {condition};\nDELETE FROM {table} WHERE {condition};\n"
                )
            wh.execute_script(sql)
            own = " AND {} NOT IN (SELECT file FROM validate_streamed)" if streamed else ""
            target = (
                "checked_elements WHERE final_reason IS NULL"  # (the catalogue may be kept)
                if source == "elements"
                else f"{source} WHERE dt = DATE '{window.ds}'" + own.format("_file")
            )
            kept = wh.query(f"SELECT count(*) FROM {target}")[0][0]
            quarantined = wh.query(
                # (the elements' are written only by the run that records its catalogue)
                "SELECT count(*) FROM checked_elements WHERE final_reason IS NOT NULL"
                if source == "elements"
                else f"SELECT count(*) FROM quarantine WHERE dt = DATE '{window.ds}' "
                f"AND source = '{source}'" + own.format("file")
            )[0][0]
            aged_out = 0
            if drop and source == "elements":
                # The catalogue's rows quarantined now (checked_elements), past retention: aged
                # out, once, whatever the date's quarantine held (this run's record, or rows its
                # first run wrote that retention has not removed yet): the drop deleted those.
                aged_out, quarantined = quarantined, 0
            elif drop:
                aged_out = sum(
                    int(n)
                    for (n,) in wh.query(
                        f"SELECT rows_aged_out FROM aged_out_rows WHERE source = '{source}'"
                    )
                )
            # Rows the extract staged of a file kept as the stream merged it: read, not loaded.
            kept_as_streamed = 0
            if streamed:
                kept_as_streamed = wh.query(
                    f"SELECT count(*) FROM {staged_relation} "
                    "WHERE _file IN (SELECT file FROM validate_streamed)"
                )[0][0]
            if kept + quarantined + aged_out + kept_as_streamed != info["rows"]:
                raise ReconciliationError(
                    f"{source} {window.ds}: read {info['rows']} row(s) but kept {kept}, "
                    f"quarantined {quarantined}, aged out {aged_out} and kept as the stream "
                    f"merged them {kept_as_streamed}"
                    + _files_off(wh, source, window.ds, staged_relation)
                )
            counts[source] = {"read": info["rows"], "valid": kept, "quarantined": quarantined}
            if source == "elements":
                _check_catalogue_kept(by_source, counts[source], config)
                _warn_other_element_types(wh)
                if records_catalogue:  # dated, for this date's re-runs (after the checks)
                    if restate:
                        _check_restate_kept(counts[source], config)
                    wh.execute_script(wh.render("catalogue/record", ds=window.ds, restate=restate))
                _log_catalogue_record(wh, window.ds, records_catalogue)
            if covered:  # retention configured: read = valid + quarantined + aged_out
                counts[source]["aged_out"] = aged_out
            if streamed:  # read = valid + quarantined (+ aged_out) + kept_as_streamed
                counts[source]["kept_as_streamed"] = kept_as_streamed
            log.info("validated %s: %s", source, counts[source])
        # After reconciling: suppressed people's rows leave before anything is built from them.
        # The date's own rows it takes out, per source, are part of its valid rows (not loaded:
        # read still adds up). Its totals also count earlier dates' rows of a session it claims.
        listed = suppression_count(wh) > 0
        loaded_before = _dated_rows(wh, window.ds) if listed else {}
        suppressed = apply_suppression(wh, window.ds, load_rules(config.identity_config))
        loaded_after = _dated_rows(wh, window.ds) if listed else {}
        for source, before in loaded_before.items():
            if before - loaded_after[source]:
                counts[source]["suppressed"] = before - loaded_after[source]
        reasons = wh.query(
            "SELECT source, reason, count(*) FROM quarantine "
            f"WHERE dt = DATE '{window.ds}' GROUP BY 1, 2"
        )
        # The date's files with rows in quarantine, most first, with their rows read (what
        # suppression left: the page shows them with the quarantine by field).
        files_quarantined = wh.query(
            "SELECT q.source, q.file, max(l.rows_read), count(*) FROM quarantine q "
            "LEFT JOIN landed_files l ON l.dt = q.dt AND l.source = q.source AND l.file = q.file "
            f"WHERE q.dt = DATE '{window.ds}' GROUP BY q.source, q.file "
            "ORDER BY count(*) DESC, q.source, q.file"
        )
    if files_quarantined:  # in the task log, which is where an operator looks first
        log.info(
            "%s file(s) with rows in quarantine, most first: %s%s",
            len(files_quarantined),
            ", ".join(
                f"{file} ({in_quarantine}" + (f" of {read})" if read is not None else ")")
                for _, file, read, in_quarantine in files_quarantined[: landing.NAMES_SHOWN]
            ),
            " ..." if len(files_quarantined) > landing.NAMES_SHOWN else "",
        )
    result = {
        "sources": counts,
        "quarantine_by_field": quarantine_by_field(reasons),
        "quarantine_by_file": {
            "files": len(files_quarantined),
            "top": [list(row) for row in files_quarantined[:QUARANTINE_FILES_LISTED]],
        },
        "suppressed": suppressed,
    }
    if covered:
        result["retention"] = {"as_of": as_of, "cutoffs": covered, "past": sorted(past)}
    if unbuilt:
        result["unbuilt_dates"] = {"dates": len(unbuilt), "names": unbuilt[: landing.NAMES_SHOWN]}
    return result


def _check_catalogue_kept(
    by_source: dict[str, dict], elements: dict[str, int], config: PipelineConfig
) -> None:
    """Fail when every element row landed was quarantined and the day has interactions: the
    catalogue was kept as it was (validate/elements.sql), not replaced by none, but this date's
    catalogue is not loaded either. A landing error: retried, as a corrected file may land."""
    interactions = by_source["interactions"]["rows"]
    if elements["read"] and not elements["valid"] and interactions:
        raise landing.LandingError(
            f"{_catalogue_folder(config)}: every one of its "
            f"{elements['read']} element row(s) was quarantined (see the quarantine table, "
            "source elements): the catalogue is kept as it was, not replaced by none, so that "
            f"the day's {interactions} interaction(s) keep their titles; fix the file(s), then "
            "clear the task"
        )


def _log_catalogue_record(wh: Warehouse, ds: str, recorded: bool) -> None:
    """Say whether the run recorded its catalogue (catalogue/record.sql) or enriches with the
    one in force on its date, recorded before."""
    if recorded:
        changed = wh.query(f"SELECT changed FROM element_history_dates WHERE dt = DATE '{ds}'")
        log.info("elements: %s element row(s) changed from %s, recorded", changed[0][0], ds)
        return
    log.info(
        "elements: %s keeps the catalogue in force on it (recorded by its first run, or a later "
        "date's), not the one landed now; its quarantined element rows stay as they were "
        "(restate_catalogue: docs/operations.md, 'Re-running a date')",
        ds,
    )


def _warn_other_element_types(wh: Warehouse) -> None:
    """Log the catalogue's element types beyond the contract's five: kept, so that their
    elements' interactions have titles and labels, but a typo (``vot``) would escape a segment
    filtering ``vote`` unremarked, and segments.yml filters only the five."""
    known = ", ".join(f"'{t}'" for t in segments.ELEMENT_TYPES)
    other = wh.query(
        f"SELECT element_type, count(*) FROM elements WHERE element_type NOT IN ({known}) "
        "GROUP BY 1 ORDER BY 1"
    )
    if other:
        log.warning(
            "elements: element type(s) other than %s, kept as given: %s",
            ", ".join(segments.ELEMENT_TYPES),
            ", ".join(f"{t} ({n} row(s))" for t, n in other),
        )


def landed_before(window: RunWindow, config: PipelineConfig) -> list[str]:
    """Landing dates from ``start_date`` to the day before the run's that a dated source has a
    partition of (one listing per source); none when the landing cannot be listed, with a
    warning: the listing only feeds :func:`unbuilt_dates`' warning, and must not fail the run."""
    start = config.start_date.isoformat()
    landed: set[str] = set()
    try:
        for source in DATED_SOURCES:
            _, folders = landing.partition_folders(
                config.landing_root, landing.SOURCES[source], config.landing_conn_id
            )
            landed |= {d for f in folders if (d := landing.partition_date(f))}
    except Exception as exc:
        log.warning("could not list the landing's partitions: %s: %s", type(exc).__name__, exc)
        return []
    return sorted(d for d in landed if start <= d < window.ds)


def loaded_dates(
    query: Callable[[str], Sequence[tuple]], tables: Collection[str], ds: str
) -> set[str]:
    """The dates before ``ds`` a run has loaded into the warehouse that ``query`` reads, whose
    tables are ``tables``: validated (landed_files, pruned after a month; the source tables,
    which retention prunes; a run's report with rows read), or published. A later date's
    profiles include their rows, published or not. For the daily run's warning and the CLI's."""
    day = f"DATE '{check_ds(ds)}'"
    dates_in = [
        f"SELECT DISTINCT dt FROM {t} WHERE dt < {day}"
        for t in ("published_snapshots", "landed_files", *DATED_SOURCES)
        if t in tables
    ]
    if "pipeline_runs" in tables:  # rows read: its validate ran
        dates_in.append(
            f"SELECT DISTINCT ds FROM pipeline_runs WHERE ds < {day} AND rows_read IS NOT NULL"
        )
    if not dates_in:
        return set()
    return {str(d)[:10] for (d,) in query(" UNION ".join(dates_in))}


def unbuilt_dates(wh: Warehouse, window: RunWindow, earlier: list[str]) -> list[str]:
    """Which of ``earlier`` (:func:`landed_before`) no run has loaded, logged as a warning: the
    date's profiles read every partition loaded up to it, so theirs are left out. A backfill's
    first date runs without waiting for the one before (Airflow), and a date cleared or
    backfilled alone in a new warehouse did so too: green, with fewer profiles. A warning, not
    a failure: the run is right for what is loaded."""
    if not earlier:
        return []
    loaded = loaded_dates(wh.query, wh.table_names(views=False), window.ds)
    unbuilt = [d for d in earlier if d not in loaded]
    if unbuilt:
        log.warning(
            "%d earlier landing date(s) not loaded in the warehouse: %s. This run's profiles "
            "read every partition loaded up to %s, so their rows are left out: run those dates "
            "(a backfill from the first of them), then this one again",
            len(unbuilt),
            landing.some_names(unbuilt),
            window.ds,
        )
    return unbuilt


def _restate_to_apply(wh: Warehouse, ds: str, restate_catalogue: str) -> str:
    """The run's ``restate_catalogue`` text, or "" when it is unset or the date recorded with
    it already: Airflow keeps a run's conf, so clearing a restated run later, or running the same
    backfill again, must not restate again over what later dates have recorded since."""
    if not restate_catalogue:
        return ""
    applied = wh.query(
        f"SELECT count(*) FROM element_history_restates WHERE dt = DATE '{ds}' "
        f"AND restated_by = {wh.literal(restate_catalogue)}"
    )[0][0]
    if applied:
        log.info(
            "elements: %s was restated with restate_catalogue %r already: not again",
            ds,
            restate_catalogue,
        )
        return ""
    return restate_catalogue


def _check_restate_landed(by_source: dict[str, dict], config: PipelineConfig) -> None:
    """Fail a restate with no element row landed, whatever the day has: it would drop what the
    date and later ones recorded and record no change, so that they took the catalogue in force
    before the date once they ran again. A landing error: retried."""
    if by_source["elements"]["rows"] == 0:
        raise landing.LandingError(
            f"{_catalogue_folder(config)}: no element row landed (no file, or files holding only "
            "their header): restate_catalogue restates with the catalogue landed now, and there "
            "is none; land it in that folder, then clear the task"
        )


def _check_restate_kept(elements: dict[str, int], config: PipelineConfig) -> None:
    """Fail a restate whose every landed element row was quarantined, before it records: the
    catalogue kept is the one loaded before, and restating with it would drop what later dates
    recorded for nothing. A landing error: retried, as a corrected file may land."""
    if not elements["valid"]:
        raise landing.LandingError(
            f"{_catalogue_folder(config)}: every one of its {elements['read']} element row(s) "
            "was quarantined (see the quarantine table, source elements): restate_catalogue "
            "restates with the catalogue landed now, and there is none; fix the file(s), then "
            "clear the task"
        )


def _check_catalogue_landed(by_source: dict[str, dict], config: PipelineConfig) -> None:
    """Fail before the catalogue is replaced by none while the day has interactions: each
    would be enriched without its title and option label, on a green run (every count
    reconciles: no element row read, none kept). A landing error: retried, as the catalogue's
    export may be late."""
    interactions = by_source["interactions"]["rows"]
    if by_source["elements"]["rows"] == 0 and interactions > 0:
        raise landing.LandingError(
            f"{_catalogue_folder(config)}: no element row landed (no file, or files holding only their header), "
            f"so the day's {interactions} interaction(s) would have no title or option label: "
            "land the element catalogue directly in that folder, then clear the task"
        )


def _catalogue_folder(config: PipelineConfig) -> str:
    return f"{config.landing_root.rstrip('/')}/elements"


def _dated_rows(wh: Warehouse, ds: str) -> dict[str, int]:
    """Rows of partition ``ds`` in each dated source table."""
    counts = " UNION ALL ".join(
        f"SELECT '{s}', count(*) FROM {s} WHERE dt = DATE '{check_ds(ds)}'" for s in DATED_SOURCES
    )
    return {source: int(n) for source, n in wh.query(counts)}


# Clocks differ (the worker's against Snowflake's): a file the stream took this long before the
# listing counts as taken after it (harmless: see _streamed_files).
STREAM_CLOCK_MARGIN = dt.timedelta(minutes=1)


def _streamed_files(wh, config: PipelineConfig, source: str, ds: str, info: dict) -> int:
    """Files of the partition a stream batch merged after the extract listed it, unchanged on
    landing since: their number, and the temp table ``validate_streamed`` naming them.

    Validate replaces the partition whole with what the extract staged. A file that landed (or
    was replaced) after the listing, which a stream batch (docs/streams.md) merged meanwhile, is
    in no staged row, or in an older version; and the stream's ledger says it is done, so it would
    never be taken again: replaced, its rows would be lost until the date is run again. Such a
    file's rows stay as the stream merged them, if the version the stream took is the one on
    landing now, and its staged rows, if any, are left out. A file changed since the stream took
    it goes the usual way (the stream takes the new version as well), and so does one gone from
    landing. The catalogue (elements) is replaced whole by the next daily run.
    """
    if source == "elements" or not info.get("listed_at"):
        return 0
    since = dt.datetime.fromisoformat(info["listed_at"]) - STREAM_CLOCK_MARGIN
    taken = dict(
        wh.query(
            f"SELECT file, version FROM stream_files WHERE source = '{source}' "
            f"AND ds = DATE '{check_ds(ds)}' AND processed_at >= TIMESTAMP '{since}'"
        )
    )
    now = landing.landed_versions(taken, config.landing_conn_id) if taken else {}
    kept = sorted(f for f, version in taken.items() if now.get(f) == version)
    if not kept:
        return 0
    wh.execute_script("CREATE OR REPLACE TEMP TABLE validate_streamed (file VARCHAR)")
    for start in range(0, len(kept), 1000):  # Snowflake: at most 16,384 rows in an INSERT's VALUES
        rows = ", ".join(f"({wh.literal(f)})" for f in kept[start : start + 1000])
        wh.execute_script(f"INSERT INTO validate_streamed VALUES {rows}")
    log.info(
        "%s %s: %s file(s) a stream batch merged after the extract listed the partition: their "
        "rows stay as merged",
        source,
        ds,
        len(kept),
    )
    return len(kept)


def _files_off(wh: Warehouse, source: str, ds: str, staged_relation: str) -> str:
    """:func:`files_off` for the error of a date whose counts do not reconcile, with what
    validation counted per file from landed_files."""
    if source not in DATED_SOURCES:  # the catalogue has no landed_files rows
        return ""
    counted = wh.query(
        "SELECT file, rows_read, rows_valid, rows_quarantined FROM landed_files "
        f"WHERE source = '{source}' AND dt = DATE '{ds}' AND file IS NOT NULL"
    )
    return files_off(
        source,
        {file: tuple(rows) for file, *rows in counted},
        **rows_by_file(wh, source, staged_relation, f"dt = DATE '{ds}'"),
    )


def rows_by_file(
    wh: Warehouse, source: str, staged_relation: str, partition: str
) -> dict[str, dict[str | None, int]]:
    """The rows per file (``_file``; None for rows without one) the extract staged, the
    source's table holds and quarantine holds, in ``partition`` (a condition on ``dt``), as
    :func:`files_off` takes them."""

    def per_file(relation: str, column: str, where: str = "true") -> dict[str | None, int]:
        return dict(wh.query(f"SELECT {column}, count(*) FROM {relation} WHERE {where} GROUP BY 1"))

    return {
        "staged": per_file(staged_relation, "_file"),
        "in_table": per_file(source, "_file", partition),
        "in_quarantine": per_file("quarantine", "file", f"source = '{source}' AND {partition}"),
    }


def files_off(
    source: str,
    counted: dict[str, tuple[int | None, int | None, int | None]],
    staged: dict[str | None, int],
    in_table: dict[str | None, int],
    in_quarantine: dict[str | None, int],
) -> str:
    """Where the rows of a source whose counts do not reconcile went astray, for its error:
    ``; in N file(s): name (...)``, naming each file whose rows the extract staged are not the
    rows validation counted read (a row lost before validation looked at it), or whose rows in
    the table or in quarantine are not what validation counted valid or quarantined; and the
    rows there of no file that was read (``_file`` empty or unknown). ``counted``: file ->
    (read, valid, quarantined), as validate/file_counts.sql counts them (None: unknown, from
    before the counts were kept); the rest: file -> rows (:func:`rows_by_file`). Empty when
    nothing is off."""
    off = []
    for file in sorted(set(counted) | {f for f in staged if f is not None}):
        read, valid, quarantined = counted.get(file, (0, 0, 0))
        gaps = []
        if read is not None and staged.get(file, 0) != read:
            gaps.append(f"{staged.get(file, 0)} staged, {read} read by validation")
        kept = (in_table.get(file, 0), in_quarantine.get(file, 0))
        if valid is not None and (valid, quarantined) != kept:
            gaps.append(
                f"{valid} valid, {kept[0]} in {source}; {quarantined} quarantined, "
                f"{kept[1]} in quarantine"
            )
        if gaps:
            off.append(f"{file} ({'; '.join(gaps)})")
    named = f"; in {len(off)} file(s): " + landing.some_names(off) if off else ""
    read_files = set(counted) | set(staged)
    astray = [
        sum(n for file, n in rows.items() if file is None or file not in read_files)
        for rows in (in_table, in_quarantine)
    ]
    if any(astray):
        named += f"; {astray[0]} row(s) in {source} and {astray[1]} in quarantine of no file read"
    return named


def quarantine_by_field(reasons: list[tuple[str, str, int]]) -> list[list]:
    """``[source, field, rows]`` from ``(source, reason, rows)``, sorted: a reason lists its
    problems '; '-separated, each named by the text before its first ':' (a field, or the whole
    problem for a row that could not be read, e.g. ``malformed CSV row``, ``not a JSON
    object``). A row with problems in two fields counts under each."""
    by_field: dict[tuple[str, str], int] = {}
    for source, reason, rows in reasons:
        for field in dict.fromkeys(p.split(":", 1)[0].strip() for p in reason.split("; ")):
            by_field[source, field] = by_field.get((source, field), 0) + rows
    return [[source, field, rows] for (source, field), rows in sorted(by_field.items())]


def enrich(window: RunWindow, config: PipelineConfig | None = None) -> dict:
    config = config or load_config()
    mark_in_flight(config, window)
    with open_warehouse(config) as wh:
        as_of, cutoffs = cutoffs_as_of(wh, config, window.ds)
        cutoff = cutoffs.get("interactions_days")
        if cutoff is not None and window.ds < cutoff:
            # validate loaded nothing for the date; a partition loaded before the date aged out
            # (retention removes it) must not be enriched and delivered again either. Its source
            # rows go with it, as retention's would: left, enrich cleared after the cutoff moved
            # failed the check that the two reconcile, and a failed check is not retried.
            day = f"dt = DATE '{window.ds}'"
            wh.execute_script(
                f"DELETE FROM interactions_enriched WHERE {day}; "
                f"DELETE FROM interactions WHERE {day}; "
                f"DELETE FROM restricted_interactions WHERE {day}"
            )
            log.warning(
                "enriched nothing: %s is past retention as of %s (interactions_days keeps dates "
                "from %s)",
                window.ds,
                as_of,
                cutoff,
            )
            return {
                "rows": 0,
                "without_element": 0,
                "past_retention": {"as_of": as_of, "cutoff": cutoff},
            }
        wh.run_sql("enrich/interactions_enriched", ds=window.ds, dated=True)
        rows, unmatched = wh.query(
            "SELECT count(*), coalesce(count_if(title IS NULL), 0) FROM interactions_enriched "
            f"WHERE dt = DATE '{window.ds}'"
        )[0]
    log.info("enriched %s interaction(s); %s without element content", rows, unmatched)
    return {"rows": rows, "without_element": unmatched}


def resolve_identities(window: RunWindow, config: PipelineConfig | None = None) -> dict:
    config = config or load_config()
    mark_in_flight(config, window)
    rules = load_rules(config.identity_config)
    with open_warehouse(config) as wh:
        rs = window.run_schema_in(wh)
        # When the build started reading the graph: publish drops the stream_identifiers entries
        # recorded before it (this build saw them), not those of a batch run since.
        wh.execute_script(
            f"DROP SCHEMA IF EXISTS {rs} CASCADE; CREATE SCHEMA {rs};"
            f" CREATE TABLE {rs}.build_started AS"
            " SELECT CAST(current_timestamp AS TIMESTAMP) AS started_at"
        )
        result = resolve_run(wh, rs, rules, window.ds, window.interval_start, window.interval_end)
        changed_since = note_rules_change(wh, window, rules, config)
        if changed_since:
            result["rules_changed_since"] = changed_since
    log.info(
        "profiles as of %s: %s (%s new, %s merged away)",
        window.interval_end,
        result["profiles"],
        result["profiles_created"],
        result["merges"],
    )
    return result


def note_rules_change(
    wh: Warehouse, window: RunWindow, rules: IdentityRules, config: PipelineConfig
) -> str | None:
    """Record the rules the run is built with (and the SQL that applies them); when they differ
    from those of the date built before it, warn and return that date. Both of a run's
    snapshots (D-1 and D) use today's rules, so a change joins, splits or re-keys profiles with
    no profile_merges row and no audit row (docs/identity.md, "Known limits"): the operator,
    and the consumers they tell, must hear of it from somewhere."""
    fingerprint = rules_fingerprint(rules)
    wh.setup()  # (a warehouse from before the log)
    ds = check_ds(window.ds)
    before = wh.query(
        "SELECT CAST(dt AS VARCHAR), fingerprint FROM identity_rules_log "
        f"WHERE dt < DATE '{ds}' ORDER BY dt DESC LIMIT 1"
    )
    # A date built again under other rules than its last build regroups what consumers hold
    # from that build. Said when nothing else says it: when the date before it, built under
    # these rules, says nothing and that build was the odd one out (the latest date, or the date
    # after it has these rules: a rules change rolled back and the date it was deployed for run
    # again), and for the earliest date (no date before it to compare with: a backfill from the
    # start of history). Other dates of a backfill after a change are not named (the date after
    # each still has the old rules): the backfill's first date is, and the latest date.
    itself = wh.query(f"SELECT fingerprint FROM identity_rules_log WHERE dt = DATE '{ds}'")
    after = wh.query(
        f"SELECT fingerprint FROM identity_rules_log WHERE dt > DATE '{ds}' ORDER BY dt LIMIT 1"
    )
    wh.run_sql("identity/rules_log", ds=window.ds, fingerprint=fingerprint)
    if before and before[0][1] != fingerprint:
        since = str(before[0][0])[:10]
    elif (
        itself
        and itself[0][0] != fingerprint
        and (not before or not after or after[0][0] == fingerprint)
    ):
        since = ds
    else:
        return None
    log.warning(
        "the identity rules (%s), or the SQL that applies them (a new version), changed since "
        "the run for %s: this run's profiles are grouped by the new ones, and profile_merges "
        "does not show what the change joined, split or re-keyed. Treat it as a migration: have "
        "consumers replace their copy from this full snapshot (docs/identity.md, Known limits)",
        config.identity_config,
        since,
    )
    return since


def require_run_build(wh: Warehouse, window: RunWindow, table: str, step: str) -> None:
    """Fail at once, saying what to clear, when the run's build (``<run schema>.<table>``) is
    gone: a finished run's cleanup dropped it, and a task cleared after that cannot redo its
    step without the steps before it. (Each retry failed the same way; build_segments reported
    the missing table as a mistake in segments.yml.)"""
    rs = window.run_schema_in(wh)
    if table not in wh.table_names(rs, views=False):
        raise RunBuildMissing(
            f"{rs}.{table} is missing: the run for {window.ds} finished before "
            "and its cleanup dropped the build (or an erasure did, the run having done nothing "
            f"for a day). To run {step} again, clear resolve_identities with Downstream (or the "
            "whole run)"
        )


def interactions_from(wh: Warehouse, config: PipelineConfig, window: RunWindow) -> str | None:
    """The first landing date of interactions the run reads: retention's cutoff as of the latest
    date reached (None: kept for ever). Rows before it may still be in the warehouse, retention's
    next run removes them; a build before then must not count or hand them on.

    Decided once, by build_profiles, and kept in the run's build (``build_cutoffs``): a later
    date published in between moves the cutoff, and the run's tables and exports must agree."""
    rs = window.run_schema_in(wh)
    if "build_cutoffs" in wh.table_names(rs, views=False):
        (value,) = wh.query(f"SELECT interactions_from FROM {rs}.build_cutoffs")[0]
        return None if value is None else str(value)[:10]
    value = cutoffs_as_of(wh, config, window.ds)[1].get("interactions_days")
    wh.execute_script(
        f"CREATE TABLE {rs}.build_cutoffs AS SELECT "
        + (f"DATE '{check_ds(value)}'" if value else "CAST(NULL AS DATE)")
        + " AS interactions_from"
    )
    return value


def build_profiles(window: RunWindow, config: PipelineConfig | None = None) -> dict:
    config = config or load_config()
    mark_in_flight(config, window)
    with open_warehouse(config) as wh:
        rs = window.run_schema_in(wh)
        params = {"rs": rs, **window.as_dict()}
        require_run_build(wh, window, "profile_identifiers", "build_profiles")
        wh.execute_script(f"DROP TABLE IF EXISTS {rs}.build_cutoffs")  # decide anew
        params["interactions_from"] = interactions_from(wh, config, window)
        wh.run_sql_steps("profiles/audience_profiles", **params)
        # audience_profile_interactions is exported straight from its query by publish; its
        # rows are the profiles' interactions, which audience_profiles already counts.
        profiles, interactions = wh.query(
            "SELECT count(*), CAST(coalesce(sum(interactions), 0) AS BIGINT) "
            f"FROM {rs}.audience_profiles"
        )[0]
    log.info("built %s profile(s) with %s attributed interaction(s)", profiles, interactions)
    return {"profiles": profiles, "profile_interactions": interactions}


def build_segments(window: RunWindow, config: PipelineConfig | None = None) -> dict:
    """Evaluate segments.yml into the run's ``segment_memberships`` (none without the file)."""
    config = config or load_config()
    mark_in_flight(config, window)
    definitions = segments.segments_for(config)
    with open_warehouse(config) as wh:
        require_run_build(wh, window, "audience_profiles", "build_segments")
        start = interactions_from(wh, config, window)
        members = segments.build_memberships(
            wh, definitions, window.run_schema_in(wh), window.ds, window.interval_end, start
        )
        unmatched = (
            segments.catalogue_misses(wh, definitions, window.ds, start) if definitions else {}
        )
    if definitions is None:
        log.info("no segments: %s does not exist", config.segments_config)
    else:
        log.info("segment members: %s", members)
    # A warning, not an error: a segment may be written before its poll launches. Not "matches
    # nothing": interactions carry their poll id whether or not its element landed, and keep
    # the title and labels of the date they were enriched.
    for segment_id, misses in unmatched.items():
        log.warning(
            "segment %s (%s) names what %s lacks (a typo? a poll not launched yet?): %s. Such a "
            "rule matches only interactions of elements the catalogue lacks or had otherwise "
            "(content that never landed, a poll renamed or removed since), and none for an "
            "event id; the segment has %s member(s), and a destination syncing it keeps only "
            "those in its address book",
            segment_id,
            definitions.source,
            window.ds,
            "; ".join(misses),
            members.get(segment_id, 0),
        )
    result: dict[str, Any] = {"members": members}
    if unmatched:  # for the run's report (report.build: segments_unmatched)
        result["unmatched"] = unmatched
    return result


# The volume guard's check name starts so (checks/quality.sql); what to do when it fails.
VOLUME_CHECK = "audience_profiles keeps at least"
VOLUME_HINT = (
    ". The run has {} profiles against {} published for {}: was history lost, or a source "
    "truncated? If the drop is meant (a rules change, a mass erasure), run the date with "
    'quality.min_profiles_kept lowered in {} (docs/operations.md, "Quality gates")'
)


def check_quality(window: RunWindow, config: PipelineConfig | None = None) -> dict:
    config = config or load_config()
    mark_in_flight(config, window)
    # With segments configured, build_segments must have made the table: the checks read it.
    has_segments = segments.segments_for(config) is not None
    with open_warehouse(config) as wh:
        rs = window.run_schema_in(wh)
        require_run_build(wh, window, "audience_profiles", "check_quality")
        wh.run_sql("report/tables")  # the volume guard may read pipeline_runs
        results = wh.query_sql(
            "checks/quality",
            rs=rs,
            ds=window.ds,
            segments=has_segments,
            min_profiles_kept=config.quality.min_profiles_kept,
        )
        # Kept before raising, so the run report can name the check that stopped the run.
        wh.run_sql("report/quality_checks", ds=window.ds, run_id=window.run_id, results=results)
        failed = [(name, n) for name, n in results if n]
        shrunk = ""
        if any(name.startswith(VOLUME_CHECK) for name, _ in failed):
            (earlier, before, now), *_ = wh.query_sql("checks/profiles_before", rs=rs, ds=window.ds)
            shrunk = VOLUME_HINT.format(now, before, earlier, config.source_file)
    for name, n in results:
        log.info("check %-70s %s", name, "ok" if not n else f"FAILED ({n} row(s))")
    if failed:
        raise DataQualityError(
            "data quality checks failed, nothing delivered: "
            + "; ".join(f"{name} ({n} row(s))" for name, n in failed)
            + shrunk
        )
    return {"checks": len(results), "failed": 0}


# Written last by publish: the run's exports are complete, and which tables they are.
PUBLISHED_MARKER = "_published.json"


def publish(window: RunWindow, config: PipelineConfig | None = None) -> dict[str, str]:
    """Export the run's output tables for destinations; refresh the warehouse's current tables.

    Run again once ``cleanup`` has dropped the run's schema (Airflow clears ``publish`` with
    ``deliver``, its teardown's setup, to deliver a date again), it hands on the exports the
    earlier publish completed: the build they came from is gone, and they are what it made.
    """
    config = config or load_config()
    mark_in_flight(config, window)
    export_dir = run_dir(config, window) / "export"
    tables: dict[str, str] = {}
    rows: dict[str, int] = {}
    with open_warehouse(config) as wh:
        rs = window.run_schema_in(wh)
        run_tables = wh.table_names(rs)
        if "audience_profiles" not in run_tables:
            return _published_before(window, export_dir, wh)
        # This build's exports replace the earlier publish's from here on: its marker goes first,
        # so a publish that dies half way cannot hand on a mix of the two builds' files later.
        (export_dir / PUBLISHED_MARKER).unlink(missing_ok=True)
        suppress_run_outputs(wh, rs)
        as_of, cutoffs = cutoffs_as_of(wh, config, window.ds)
        run_from = interactions_from(wh, config, window)  # as build_profiles used it
        if window.ds < cutoffs.get("snapshots_days", window.ds):
            # A backfill of a date retention has aged out: its merge history and link audit
            # (identifier values) stay out of the warehouse and of its exports, as the daily
            # extracts keep its interactions out. A re-run brought them back, and delivered them.
            log.warning(
                "%s is past retention as of %s (snapshots_days keeps dates from %s): "
                "profile_merges and identity_link_audit are published empty",
                window.ds,
                as_of,
                cutoffs["snapshots_days"],
            )
            wh.execute_script(
                f"DELETE FROM {rs}.profile_merges; DELETE FROM {rs}.identity_link_audit"
            )
        for table in OUTPUT_TABLES:
            if table == "segment_memberships" and table not in run_tables:
                continue  # segments are optional (segments.yml)
            path = str(export_dir / f"{table}.parquet")
            query = wh.render(
                "publish/exports",
                table=table,
                ds=window.ds,
                rs=rs,
                interactions_from=run_from,
            ).strip()
            rows[table] = wh.export_parquet(query, path)
            tables[table] = path
        latest = wh.query("SELECT max(dt) FROM published_snapshots")[0][0]
        is_latest = latest is None or str(latest) <= window.ds
        home_tables = wh.table_names(views=False)
        wh.run_sql(
            "publish/current",
            rs=rs,
            ds=window.ds,
            run_id=window.run_id,
            is_latest=is_latest,
            interactions_from=run_from,  # the current view's, as the current tables'
            # a warehouse built before it became a view
            interactions_is_table="audience_profile_interactions" in home_tables,
            # the stream ran, and the build says when it started (a build from before it did not)
            has_stream="stream_identifiers" in home_tables and "build_started" in run_tables,
            has_stream_shared="stream_shared_sessions" in home_tables
            and "build_started" in run_tables,
        )
    marker = export_dir / PUBLISHED_MARKER
    published = {"run_id": window.run_id, "tables": tables, "rows": rows, "current": is_latest}
    replace_file(marker, json.dumps(published).encode())
    log.info(
        "published %s (current tables %s): %s",
        window.ds,
        "refreshed" if is_latest else "kept (a later date is live)",
        rows,
    )
    return tables


def publish_from_context(context) -> dict[str, str]:
    """The DAG's ``publish`` task: publish, then describe the date in the task's
    ``audience_profiles_published`` asset event (emitted when the task succeeds)."""
    from audience_profiles.assets import PUBLISHED

    window = RunWindow.from_context(context)
    tables = publish(window)
    context["outlet_events"][PUBLISHED].extra = published_event(window)
    return tables


def published_event(window: RunWindow, config: PipelineConfig | None = None) -> dict:
    """The extra of the ``audience_profiles_published`` asset event of the date's publish.

    ``current`` says whether the publish that made the exports refreshed the warehouse's current
    tables (the latest date built; a backfill of an older date does not); ``rows`` is each
    export's row count (absent for exports from before the count was kept).
    """
    config = config or load_config()
    marker = run_dir(config, window) / "export" / PUBLISHED_MARKER
    published = json.loads(marker.read_text())
    return {
        **window.as_dict(),
        "published_by": published["run_id"],
        "current": published.get("current"),
        "rows": published.get("rows", {}),
        "tables": published["tables"],
    }


def _published_before(window: RunWindow, export_dir: Path, wh) -> dict[str, str]:
    from audience_profiles.privacy.erasure import awaiting_removal

    marker = export_dir / PUBLISHED_MARKER
    published = json.loads(marker.read_text()) if marker.exists() else None
    if published is None or not all(Path(p).exists() for p in published["tables"].values()):
        raise RuntimeError(
            f"{window.ds}: the run's build ({window.run_schema_in(wh)}) is gone and no complete "
            f"export of it is in {export_dir}: clear the run from validate to build the date again"
        )
    # Kept exports were suppressed when they were made; people listed since leave them in the
    # erasure DAG's remove_from_warehouse. Until it has run, delivering them again could send them.
    waiting = awaiting_removal(wh)
    if waiting:
        raise RuntimeError(
            f"{window.ds}: {waiting} erasure request(s) are resolved but not yet out of the kept "
            "exports (the erasure DAG's remove_from_warehouse has not finished them): not "
            "delivered again now; a retry after it does"
        )
    log.info(
        "%s: %s is gone (cleanup ran), so the exports its publish completed are delivered "
        "again: %s",
        window.ds,
        window.run_schema_in(wh),
        sorted(published["tables"]),
    )
    return published["tables"]


def deliver(
    destination_name: str,
    window: RunWindow,
    tables: dict[str, str],
    config: PipelineConfig | None = None,
) -> dict:
    from audience_profiles.destinations import RunInfo, destination_for

    config = config or load_config()
    entry = config.destination(destination_name)
    if not entry.enabled:
        # The run listed its destinations when it started: one switched off since (an outage, a
        # target being retired) must not get this run's delivery, its retries, or a cleared task.
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(
            f"destination {destination_name!r} is disabled in {config.source_file} "
            "(enabled: false): not delivered"
        )
    mark_in_flight(config, window)
    destination = destination_for(entry, config)
    missing = [t for t in destination.config.tables if t not in tables]
    if missing:
        raise ValueError(
            f"destination {destination_name!r} wants table(s) this run did not build: {missing}"
        )
    run = RunInfo(window.ds, window.run_id)
    with exports_lock(config.work_dir, exclusive=False, holder=f"deliver {destination_name}"):
        report = destination.deliver(run, tables).to_dict()
    log.info(
        "delivered to %s: %s row(s) %s",
        destination_name,
        sum(report["rows"].values()),
        report["rows"],
    )
    if report["failures"]:
        raise RuntimeError(
            f"{destination_name}: {len(report['failures'])} failure(s): {report['failures'][:10]}"
        )
    return report


def cleanup(window: RunWindow, config: PipelineConfig | None = None) -> None:
    """Drop the run's scratch schema and staged extracts (exports stay for re-delivery)."""
    config = config or load_config()
    with open_warehouse(config) as wh:
        wh.execute_script(f"DROP SCHEMA IF EXISTS {window.run_schema_in(wh)} CASCADE")
    shutil.rmtree(run_dir(config, window) / "extract", ignore_errors=True)
    (run_dir(config, window) / RUN_IN_FLIGHT_MARKER).unlink(missing_ok=True)
    sweep_scratch(config)


# No task runs longer (execution_timeout is 2 hours): an older scratch folder is a killed task's.
SCRATCH_MAX_AGE = dt.timedelta(days=1)


def sweep_scratch(config: PipelineConfig) -> None:
    """Remove what killed tasks left in ``<work_dir>/tmp/`` (``PipelineConfig.scratch``), and
    in ``<work_dir>/stream/``, where stream batches staged their files before 2026-12-01."""
    oldest = time.time() - SCRATCH_MAX_AGE.total_seconds()
    work = Path(config.work_dir)
    for entry in [*(work / SCRATCH_DIR).glob("*"), *(work / "stream").glob("batch-*")]:
        try:  # another task may end (and remove its folder) while this one looks
            if entry.stat().st_mtime >= oldest:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:  # a stray link or a permission: leave it, say so, never fail
            log.warning("scratch sweep left %s: %s", entry, exc)


def run_all(
    window: RunWindow, config: PipelineConfig | None = None, restate_catalogue: str = ""
) -> dict:
    """The whole build for one date without Airflow, reported: for tests and the benchmarks only.

    The DAG is the real path (the CLI runs it with ``dag.test()``): it waits for the landing and
    maps the extracts itself, so a change to the order of the steps belongs there first."""
    from audience_profiles import report

    config = config or load_config()
    tasks: dict[str, dict] = {}

    def step(name: str, fn, *args):
        started = time.monotonic()
        out = fn(*args)
        tasks[name] = {"state": "success", "seconds": round(time.monotonic() - started, 3)}
        return out

    # No waiting here (the DAG's wait_for_landing waits): a required partition missing fails.
    gaps = landing_gaps(window, config)
    if gaps:
        raise landing_missing(window, gaps, config, again="run_all for it")
    # Extracts touch no warehouse, so they run side by side, as the DAG's mapped tasks do: the
    # four of one day at 10M took 8.2-8.5 s one after another, 6.9-7.1 s two at a time. Two,
    # because each staging DuckDB may take STAGING_MEMORY_LIMIT and the build stays under 2 GiB.
    with ThreadPoolExecutor(max_workers=2) as pool:
        staged = list(
            pool.map(
                lambda s: step(f"extract[{s}]", extract_source, s, window, config),
                VALIDATION_ORDER,
            )
        )
    result: dict[str, Any] = {
        "validate": step("validate", validate, window, staged, config, restate_catalogue)
    }
    result["enrich"] = step("enrich", enrich, window, config)
    result["identity"] = step("resolve_identities", resolve_identities, window, config)
    result["profiles"] = step("build_profiles", build_profiles, window, config)
    result["segments"] = step("build_segments", build_segments, window, config)
    result["checks"] = step("check_quality", check_quality, window, config)
    tables = step("publish", publish, window, config)
    result["deliveries"] = [
        step(f"deliver[{d.name}]", deliver, d.name, window, tables, config)
        for d in config.enabled_destinations
    ]
    step("cleanup", cleanup, window, config)
    outputs = {
        "extract": staged,
        "validate": result["validate"],
        "enrich": result["enrich"],
        "resolve_identities": result["identity"],
        "build_profiles": result["profiles"],
        "build_segments": result["segments"],
        "check_quality": result["checks"],
        "deliver": result["deliveries"],
    }
    result["report"] = report.write_report(window, outputs, tasks, config)
    return result
