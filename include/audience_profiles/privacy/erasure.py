"""Erasure requests, one function per task of the ``audience_profiles_erasure`` DAG.

A request (``erasure_requests/*.csv|json`` under the landing root, every suffix the landing
reads, compressed too: request_id, identifier_type, identifier_value, requested_at, type =
delete | suppress) goes through:

1. ``read_requests``: remove the work folders of ended runs (:func:`clear_ended_runs`), stage
   the request files (every file, every run: the folder is small and a request is acted on
   once, by request_id);
2. ``resolve_requests``: record new requests (identifier hashed), resolve each one through the
   identity graph (the daily ``profile_identifiers`` and the stream's ``stream_identifiers``) to
   its profiles and all their identifiers (``erasure_subjects``), and put every identifier on the
   suppression list (a ``delete`` for someone already listed takes over their entries);
3. ``remove_from_warehouse``: delete (or, for ``suppress``, restrict) their rows everywhere in the
   warehouse, and rewrite the run exports kept for re-delivery (``<work_dir>/runs/*/export``)
   without them, so re-delivering an old run cannot bring them back; the step is ``done`` only
   once both are, else the next run does it again;
4. ``pending_erasures``: write what destinations still owe to a file in the run's work folder;
5. ``erase_destination`` (one per enabled destination): ``Destination.erase``;
6. ``record_erasures``: one ``erasure_log`` row per request and destination; a request every
   destination has confirmed is done, and its plain identifiers (``erasure_subjects``) are purged.
   A failed destination is tried again by the next run.

Logs and XCom carry request ids, statuses and counts, never an identifier.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import re
import shutil
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from audience_profiles import landing
from audience_profiles.config import PipelineConfig, load_config
from audience_profiles.destinations.base import (
    FAILED,
    FINAL_STATUSES,
    SKIPPED,
    ErasureRequest,
    erasure_status,
)
from audience_profiles.destinations.drop import scratch_duckdb
from audience_profiles.destinations.drop_erasure import filter_file, load_subjects
from audience_profiles.errors import NotRetryable
from audience_profiles.exports_lock import ERASE_QUEUE_SECONDS, exports_lock
from audience_profiles.files import replace_file
from audience_profiles.identity import load_rules
from audience_profiles.privacy.retention import RUN_FOLDERS, run_in_flight
from audience_profiles.privacy.suppression import suppress_run_outputs, unlist_placeholders
from audience_profiles.redaction import redact
from audience_profiles.warehouse import open_warehouse
from audience_profiles.warehouse.compact import compact

log = logging.getLogger(__name__)
# under work_dir/state: when the rows the last compaction freed were freed (privacy/rows_freed.sql)
COMPACTED_MARKER = "warehouse-compacted.json"

SOURCE = "erasure_requests"
WAREHOUSE = "warehouse"  # the erasure_log "destination" of the warehouse step
CURRENT_TABLES = (
    "audience_profiles",
    "audience_profile_interactions",
    "profile_identifiers",
    "segment_memberships",
)
# The identity graph a request is resolved through: the daily build's current state, and what
# the stream DAG attached since (stream.py; a person only the stream has seen is only there).
GRAPH_TABLES = ("profile_identifiers", "stream_identifiers")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class ErasureIncompleteError(RuntimeError):
    """Some destination, or the warehouse step's rewrite of the run exports, failed some request;
    it is recorded (its detail redacted) and retried by the next run."""


class _NotRetryableIncomplete(ErasureIncompleteError, NotRetryable):
    """The same, for an error a retry would only repeat (``errors.NotRetryable``)."""


def work_folder(config: PipelineConfig, run_id: str) -> Path:
    """The run's own folder under ``<work_dir>/erasure``: its id made safe, and a hash of it, so
    that no id names a folder above (``..``, which cleanup would remove) or another run's."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:12]
    return Path(config.work_dir) / "erasure" / f"{_UNSAFE.sub('_', run_id)[:80]}-{digest}"


def read_requests(ds: str, run_id: str, config: PipelineConfig | None = None) -> dict:
    """Stage every request file (no warehouse access), once the folders of ended runs are gone."""
    config = config or load_config()
    clear_ended_runs(config, run_id)
    out = work_folder(config, run_id) / f"{SOURCE}.parquet"
    result = landing.extract(SOURCE, ds, config.landing_root, out, config.landing_conn_id)
    log.info("read %s erasure request row(s) from %s file(s)", result["rows"], result["files"])
    return result


def clear_ended_runs(config: PipelineConfig, run_id: str) -> list[str]:
    """Remove the work folders other erasure runs left (their staged requests and
    ``pending_erasures.json``: plain identifiers); the folders' names.

    A run's ``cleanup`` teardown removes its own, but a run killed, or marked failed or
    successful by hand, never runs it, and its folder stayed for good. The DAG runs one run at a
    time (``max_active_runs=1``), so when a run starts every other folder is an ended run's: none
    of its tasks can need it (an ``erase`` of it cleared later finds no file, as it does after
    that run's ``cleanup``: clear it from ``pending_erasures``).
    """
    own = work_folder(config, run_id)
    removed = []
    for folder in sorted((Path(config.work_dir) / "erasure").glob("*/")):
        if folder != own and folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    if removed:
        log.info("removed the work folders of %s ended erasure run(s): %s", len(removed), removed)
    return removed


def resolve_requests(staged: dict, config: PipelineConfig | None = None) -> dict:
    """Record new requests, resolve them to profiles and identifiers, suppress them all."""
    config = config or load_config()
    rules = load_rules(config.identity_config)
    with open_warehouse(config) as wh:
        wh.setup()
        # before a new request can take over an earlier one's entries (requests.sql)
        unlist_placeholders(wh, rules)
        if staged["rows"]:
            tables = wh.table_names()
            wh.run_sql(
                "privacy/requests",
                staged=wh.staged_relation(staged["path"]),
                graph_tables=[t for t in GRAPH_TABLES if t in tables],
                has_merges="profile_merges" in tables,
                # which values name no one (a placeholder such as test@test.com)
                **rules.sql_params(),
            )
            new = wh.query(
                "SELECT n.request_id, n.type, count(DISTINCT s.profile_id) FROM new_requests n "
                "LEFT JOIN erasure_subjects s USING (request_id) GROUP BY ALL ORDER BY 1"
            )
            for request_id, kind, profiles in new:
                log.info("request %s (%s): %s profile(s)", request_id, kind, profiles)
            wh.run_sql("privacy/case_misses")
            for request_id, profiles in wh.query("SELECT * FROM case_misses ORDER BY 1"):
                log.warning(
                    "request %s: no profile holds its identifier as written, %s in another case:"
                    " session and SSO ids are compared case and all (docs/privacy.md, "
                    '"Identifiers and their case"); file it again as the id is spelt if so meant',
                    request_id,
                    profiles,
                )
            skipped = wh.query(
                "SELECT request_id, _file, _line, "
                "coalesce(reason, 'request_id: repeats an earlier row, ignored') "
                "FROM staged_requests WHERE reason IS NOT NULL OR copy_no > 1 ORDER BY _file, _line"
            )
            for request_id, file, line, reason in skipped:
                # The reason names fields, never values: it is safe to log.
                log.warning("invalid request %s at %s:%s: %s", request_id, file, line, reason)
        else:
            new = []
        pending = wh.query("SELECT count(*) FROM erasure_requests WHERE status = 'pending'")[0][0]
    return {"new": len(new), "pending": pending}


def awaiting_removal(wh) -> int:
    """Requests resolved (their people on the suppression list) whose warehouse step is not done:
    their rows may still be in the warehouse and in the kept run exports."""
    if "erasure_requests" not in wh.table_names(views=False):
        return 0
    return wh.query(
        "SELECT count(*) FROM erasure_requests r WHERE status = 'pending' "
        "AND resolved_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM erasure_log l "
        f"WHERE l.request_id = r.request_id AND l.destination = '{WAREHOUSE}' "
        "AND l.status = 'done')"
    )[0][0]


def remove_from_warehouse(config: PipelineConfig | None = None) -> dict[str, Any]:
    """Delete (or restrict) every resolved request's rows in the warehouse and the kept run
    exports: ``{"requests": n, "rows_removed": {table: rows}, "exports_rewritten": [date]}``
    (``n`` requests whose step this call finished; the dates whose run exports lost rows), all
    empty when no request was waiting.

    The warehouse step of a request is logged ``done`` only once both are: if rewriting the
    exports fails, it is logged ``failed`` and the next run does the step again (everything
    already taken out is found gone, so it costs a scan). What a failed try took out is kept in
    ``<work_dir>/erasure/removal_progress.json`` (counts and dates, no one named) and reported
    by the try that finishes: otherwise its rows and dates would be in no announcement.
    """
    config = config or load_config()
    with open_warehouse(config) as wh:
        wh.setup()
        if not awaiting_removal(wh):
            return removal_result()
    # Alone with the run exports: deliveries under way finish first (exports_lock.py).
    with (
        exports_lock(config.work_dir, exclusive=True, holder="remove_from_warehouse"),
        open_warehouse(config) as wh,
    ):
        waiting = awaiting_removal(wh)
        if not waiting:  # another run did it meanwhile
            return removal_result()
        tables = wh.table_names(views=False)  # audience_profile_interactions follows its tables
        wh.run_sql(
            "privacy/erase_warehouse",
            step="remove",
            current_tables=[t for t in CURRENT_TABLES if t in tables],
            has_merges="profile_merges" in tables,
            has_audit="identity_link_audit" in tables,
            has_stream="stream_identifiers" in tables,
            has_stream_shared="stream_shared_sessions" in tables,
        )
        removed = {
            t: int(n)
            for t, n in wh.query(
                "SELECT source, sum(rows_removed) FROM erasure_report GROUP BY source ORDER BY 1"
            )
            if n
        }
        everyone = ErasureRequest(
            request_id="batch",
            requested_at="",
            profile_ids=tuple(r[0] for r in wh.query("SELECT profile_id FROM removal_profiles")),
            identifiers=tuple(
                (t, v) for t, v in wh.query("SELECT identifier_type, value FROM removal_values")
            ),
        )
        _add_progress(config, removed)  # committed: a failure from here on must not lose it
        dropped, running = clear_run_schemas(wh, config)
        clear_staged_extracts(config)
        try:
            exported_rows = scrub_exports(
                config, everyone, lambda run, rows: _add_progress(config, {RUN_EXPORTS: rows}, run)
            )
        except Exception as exc:
            detail = _redacted(f"run exports: {type(exc).__name__}: {exc}", [everyone])
            # The stack without the message: the error itself may quote the people (a file
            # name, a value), and a raise of it would put that in the task log and the alert.
            log.error(
                "warehouse: rewriting the run exports failed: %s\n%s",
                detail,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            wh.run_sql("privacy/erase_warehouse", step="log", status=FAILED, detail=detail)
            # as retryable as the error was (fails_fast: a retry that would only repeat it)
            kind = (
                _NotRetryableIncomplete if isinstance(exc, NotRetryable) else ErasureIncompleteError
            )
            raise kind(f"warehouse: {detail}") from None
        if running:
            log.info(
                "run schema(s) in flight kept, their outputs without the people (their "
                "cleanup drops them): %s",
                running,
            )
        wh.run_sql("privacy/erase_warehouse", step="log", status="done", exported=exported_rows)
        progress = _progress(config)
        _progress_file(config).unlink(missing_ok=True)  # reported below, once
    if exported_rows:
        removed[RUN_EXPORTS] = exported_rows
    if dropped:
        removed["run schemas dropped"] = len(dropped)
    log.info("warehouse: %s request(s); rows taken out: %s", waiting, removed)
    return removal_result(waiting, progress["rows_removed"], progress["exports_rewritten"])


RUN_EXPORTS = "run exports"  # rows_removed's key for the kept Parquet exports


def removal_result(
    requests: int = 0, rows_removed: dict[str, int] | None = None, exports: list[str] | None = None
) -> dict[str, Any]:
    """What ``remove_from_warehouse`` did (an XCom: JSON only)."""
    return {
        "requests": requests,
        "rows_removed": rows_removed or {},
        "exports_rewritten": exports or [],
    }


def _progress_file(config: PipelineConfig) -> Path:
    return Path(config.work_dir) / "erasure" / "removal_progress.json"


def _progress(config: PipelineConfig) -> dict:
    """What the warehouse steps under way have taken out so far (earlier tries' included)."""
    path = _progress_file(config)
    if not path.exists():
        return {"rows_removed": {}, "exports_rewritten": []}
    return json.loads(path.read_text())


def _add_progress(config: PipelineConfig, rows: dict[str, int], run: str | None = None) -> None:
    """Add rows taken out (per table) and the date of a run export rewritten to
    :func:`_progress`. One writer at a time: the step holds the exports lock alone."""
    progress = _progress(config)
    for table, count in rows.items():
        progress["rows_removed"][table] = progress["rows_removed"].get(table, 0) + count
    if run is not None:
        progress["exports_rewritten"] = sorted({*progress["exports_rewritten"], run})
    path = _progress_file(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, json.dumps(progress, sort_keys=True).encode())


def announce_erasure(removal: dict[str, Any], context) -> None:
    """The erasure DAG's ``announce_erasure`` task: describe what the run took out in its
    ``audience_profiles_erased`` asset event, or skip (no event) when it carried out no request."""
    from airflow.sdk.exceptions import AirflowSkipException

    from audience_profiles.assets import ERASED

    extra = erased_event(removal, str(context["run_id"]))
    if extra is None:
        raise AirflowSkipException("no request was carried out in the warehouse: no event")
    context["outlet_events"][ERASED].extra = extra


def compact_warehouse(config: PipelineConfig | None = None) -> dict[str, Any]:
    """The erasure DAG's ``compact_warehouse`` task: copy the DuckDB warehouse into a new file
    (``warehouse.compact``) when rows were freed for good since the last copy
    (privacy/rows_freed.sql: a request finished, or retention removed rows): DuckDB frees
    deleted rows' blocks without overwriting them, and an erased address stayed readable in the
    file's bytes. Decided from the warehouse, not from this run's other tasks: a run whose
    destination failed (the task does not run) may have finished other requests, and the next
    run that gets here compacts for them. Skipped on Snowflake, with
    ``warehouse.compact_after_erasure: false``, or when nothing was freed."""
    from airflow.sdk.exceptions import AirflowSkipException

    config = config or load_config()
    if config.warehouse.engine != "duckdb":
        raise AirflowSkipException("Snowflake manages its own storage: nothing to compact")
    if not config.warehouse.compact_after_erasure:
        raise AirflowSkipException("warehouse.compact_after_erasure is false in pipeline.yml")
    with open_warehouse(config) as wh:
        wh.setup()
        [(freed_at,)] = wh.query_sql("privacy/rows_freed", run_folders=RUN_FOLDERS)
    marker = Path(config.work_dir) / "state" / COMPACTED_MARKER
    warehouse = str(Path(config.warehouse.path).resolve())
    through = _compacted_through(marker, warehouse)
    if freed_at is None or (through is not None and freed_at <= through):
        raise AirflowSkipException(
            f"no rows freed since the last compaction ({through or 'none yet'}): nothing to copy"
        )
    freed = freed_at.isoformat(" ")
    done = compact(config.warehouse, then="clear compact_warehouse")
    marker.parent.mkdir(parents=True, exist_ok=True)
    replace_file(marker, json.dumps({"path": warehouse, "through": freed}).encode())
    log.info(
        "compacted %s (rows freed up to %s): %d bytes -> %d (%d tables, %d rows checked "
        "against the old file)",
        done.path,
        freed_at,
        done.bytes_before,
        done.bytes_after,
        done.tables,
        done.rows,
    )
    return {
        "freed_at": freed,
        "bytes_before": done.bytes_before,
        "bytes_after": done.bytes_after,
    }


def _compacted_through(marker: Path, warehouse: str) -> datetime.datetime | None:
    """When the rows the last compaction of ``warehouse`` freed were freed, from ``marker``;
    None when it says nothing of that file (none yet, another path, or unreadable: compacting
    once more costs a copy, skipping would keep freed bytes)."""
    if not marker.is_file():
        return None
    try:
        recorded = json.loads(marker.read_text())
        if recorded.get("path") != warehouse:
            return None
        # compared as times: DuckDB's text drops a fraction's trailing zeros, Python's keeps six
        return datetime.datetime.fromisoformat(recorded["through"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("%s is unreadable (%s): compacting as if never compacted", marker, exc)
        return None


def erased_event(removal: dict[str, Any], run_id: str) -> dict[str, Any] | None:
    """The extra of the erasure DAG's ``audience_profiles_erased`` asset event; None when the run
    finished no request's warehouse step (no event: consumers are not woken hourly for nothing).

    It names no one (the metadata database is reached by neither erasure nor retention): a
    consumer holding a copy replaces it from the current tables, and re-copies the run exports of
    the dates listed (docs/operations.md, "Scheduling on the outputs"). Decided by requests, not
    rows: a request whose people were taken out by an earlier, failed try finds no rows left.
    """
    if not removal["requests"]:
        return None
    return {"erased_by": run_id, **removal}


def clear_run_schemas(wh, config: PipelineConfig) -> tuple[list[str], list[str]]:
    """Take the suppression list's people out of the daily runs' scratch schemas
    (``run_YYYYMMDD``, ``Warehouse.scratch_schema``) and the stream's: ``(dropped, in flight)``.

    A run's cleanup drops its schema, but a run that failed (a quality check, a run marked
    failed) leaves it, holding identifiers and profiles, which the tables above do not reach.
    A schema whose run is not in flight (its folder's marker, which every step of the build
    touches, gone or a day old) is dropped: a task of that run that needs it fails, saying to
    clear the run from where it is built again. One in flight is in use: its outputs
    (profiles, identifiers, segments, merges, audit) lose the people, as publish does for a
    request filed during a build, and its cleanup drops it. (Its scratch tables are left: a run
    that fails after this keeps them until it is cleared, or a later erasure finds it ended.)
    """
    dropped, running = [], []
    # A stream batch's schemas (stream.BATCH_SCHEMA, WORK_SCHEMA) outlive a batch that failed
    # (a destination down) until a later batch brings files. No batch is under way here (DuckDB
    # has one writer; on Snowflake the warehouse pool), and the next one builds them afresh.
    from audience_profiles.stream import BATCH_SCHEMA, WORK_SCHEMA  # heavy: only when used

    stream_schemas = {wh.scratch_schema(n).lower() for n in (BATCH_SCHEMA, WORK_SCHEMA)}
    # This deployment's run schemas only: on Snowflake another deployment's may share the database.
    run_schema = re.compile(re.escape(wh.scratch_schema("run_").lower()) + r"(\d{4})(\d{2})(\d{2})")
    for (name,) in wh.query(
        "SELECT schema_name FROM information_schema.schemata "
        "WHERE catalog_name = current_database() ORDER BY 1"
    ):
        schema = str(name).lower()
        found = run_schema.fullmatch(schema)
        if found and run_in_flight(Path(config.work_dir) / "runs" / "-".join(found.groups())):
            suppress_run_outputs(wh, schema)
            running.append(schema)
        elif found or schema in stream_schemas:
            wh.execute_script(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            dropped.append(schema)
    if dropped:
        log.info("dropped %s run schema(s) left by runs not in flight: %s", len(dropped), dropped)
    return dropped, running


def clear_staged_extracts(config: PipelineConfig) -> list[str]:
    """Remove the staged extracts (``<work_dir>/runs/<date>/extract/``: the landing's rows as
    read, people's identifiers in plain) that runs not in flight left: the dates removed.

    A run's cleanup removes them, but a run that died after its extract keeps them, as it keeps
    its scratch schema (:func:`clear_run_schemas`, same test of in flight). Nothing of the run
    needs them again: its validate, cleared, extracts a source whose staged file is gone.
    """
    removed = []
    for staged in sorted(Path(config.work_dir).glob("runs/*/extract")):
        if staged.is_dir() and not run_in_flight(staged.parent):
            shutil.rmtree(staged, ignore_errors=True)
            removed.append(staged.parent.name)
    if removed:
        log.info("removed the staged extracts runs not in flight left: %s", removed)
    return removed


def scrub_exports(
    config: PipelineConfig,
    subjects: ErasureRequest,
    rewritten: Callable[[str, int], None] | None = None,
) -> int:
    """Rewrite the kept run exports without these people; rows removed. ``rewritten(run, rows)``
    is told of each file as soon as it is in place (``run``: the run's date).

    Idempotent: a file already rewritten holds no match and is left alone, so after a failure
    the next call does what is left.
    """
    removed = 0
    # bounded as a delivery's DuckDB work is (filter_file holds a whole export in a temp table)
    with scratch_duckdb(config.scratch_root) as con:
        load_subjects(con, [subjects])
        for path in sorted(Path(config.work_dir).glob("runs/*/export/*.parquet")):
            out = path.with_name(path.name + ".erasing")
            try:
                _, rows = filter_file(con, path, "parquet", False, out)
                if rows:
                    out.replace(path)  # atomic: a delivery reads the old file or the new
                    removed += rows
                    if rewritten is not None:  # runs/<date>/export/<table>.parquet
                        rewritten(path.parent.parent.name, rows)
            finally:
                out.unlink(missing_ok=True)  # a half-written copy of other people's rows
    return removed


def pending_erasures(run_id: str, config: PipelineConfig | None = None) -> str:
    """Write the delete requests destinations still owe to the run's work folder; its path."""
    config = config or load_config()
    with open_warehouse(config) as wh:
        subjects = wh.query_sql("privacy/pending_erasures")
        done = wh.query(
            "SELECT request_id, destination FROM erasure_log WHERE status IN "
            f"({', '.join(repr(s) for s in sorted(FINAL_STATUSES))})"
        )
    confirmed: dict[str, list[str]] = {}
    for request_id, destination in done:
        confirmed.setdefault(request_id, []).append(destination)
    by_request: dict[str, dict] = {}
    for request_id, requested_at, identifier_type, value, profile_id in subjects:
        request = by_request.setdefault(
            request_id,
            {
                "request_id": request_id,
                "requested_at": str(requested_at),
                "profile_ids": set(),
                "identifiers": set(),
                "done": sorted(confirmed.get(request_id, [])),
            },
        )
        if value is not None:  # None: a profile id alone (a delete after a suppress)
            request["identifiers"].add((identifier_type, value))
        if profile_id:
            request["profile_ids"].add(profile_id)
    requests = [
        {**r, "profile_ids": sorted(r["profile_ids"]), "identifiers": sorted(r["identifiers"])}
        for _, r in sorted(by_request.items())
    ]
    path = work_folder(config, run_id) / "pending_erasures.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"requests": requests}))
    log.info("%s delete request(s) owed to destinations", len(requests))
    return str(path)


def _redacted(text: str, requests: Sequence[ErasureRequest]) -> str:
    """``text`` (a failure's detail: logged, alerted, kept in ``erasure_log``) without what names
    the people of ``requests``: every identifier of theirs, whatever its type (an SSO id or a
    session looks like nothing in particular), their profile ids, and any email address."""
    known = [
        pair
        for r in requests
        for pair in (*r.identifiers, *(("profile_id", p) for p in r.profile_ids))
    ]
    return redact(text, known)[:500]


def erase_destination(
    destination_name: str, pending_path: str, config: PipelineConfig | None = None
) -> dict[str, Any]:
    """Erase the pending requests this destination has not confirmed yet; statuses per request."""
    from audience_profiles.destinations import destination_for

    config = config or load_config()
    owed = [
        ErasureRequest(
            request_id=r["request_id"],
            requested_at=r["requested_at"],
            profile_ids=tuple(r["profile_ids"]),
            identifiers=tuple((t, v) for t, v in r["identifiers"]),
        )
        for r in json.loads(Path(pending_path).read_text())["requests"]
        if destination_name not in r["done"]
    ]
    if not owed:
        return {"destination": destination_name, "statuses": {}}
    try:
        destination = destination_for(config.destination(destination_name), config)
        # A drop's erase rewrites the parts a delivery writes: alone, or a part a delivery had
        # just written could be replaced by the erased copy of its older version. Other kinds
        # delete by key or send tombstones, which a delivery under way cannot undo.
        lock = (
            exports_lock(
                config.work_dir,
                exclusive=True,
                holder=f"erase {destination_name}",
                queue_seconds=ERASE_QUEUE_SECONDS,  # behind another drop's erasure
            )
            if destination.WRITES_FILES
            else contextlib.nullcontext()
        )
        with lock:
            statuses = destination.erase(owed)
    except Exception as exc:  # recorded per request and retried next run; record_erasures fails
        detail = _redacted(f"{type(exc).__name__}: {exc}", owed)
        log.error("erasure in %s failed: %s", destination_name, detail)
        statuses = {r.request_id: erasure_status(FAILED, detail) for r in owed}
    # A destination's own details too: they reach the log, XCom and erasure_log, and one that
    # quotes an error (a service's answer) may quote the person.
    statuses = {
        request_id: {**status, "detail": _redacted(status.get("detail") or "", owed)}
        for request_id, status in statuses.items()
    }
    for request_id, status in statuses.items():
        log.info("%s: request %s %s %s", destination_name, request_id, *status.values())
    return {"destination": destination_name, "statuses": statuses}


def record_erasures(results: list[dict], run_id: str, config: PipelineConfig | None = None) -> dict:
    """Log every destination's answer; finish requests every destination confirmed.

    Every destination in pipeline.yml must answer, disabled ones too: one switched off for a
    while (an outage) may hold the person, and a finished request forgets the identifiers it
    would need once it is back on. Its requests wait (logged) until it is enabled and answers,
    or until it is taken out of pipeline.yml.
    """
    config = config or load_config()
    destinations = [d.name for d in config.destinations]
    disabled = [d.name for d in config.destinations if not d.enabled]
    rows = [
        (request_id, result["destination"], status["status"], status["detail"])
        for result in results
        for request_id, status in result["statuses"].items()
    ]
    with open_warehouse(config) as wh:
        wh.run_sql(
            "privacy/record_erasures",
            rows=rows,
            run_id=run_id,
            destinations=destinations,
            skipped=SKIPPED,
            final=sorted(FINAL_STATUSES),
        )
        done = [r[0] for r in wh.query("SELECT request_id FROM completed_requests ORDER BY 1")]
        pending = wh.query("SELECT count(*) FROM erasure_requests WHERE status = 'pending'")[0][0]
    failed = sorted({(r[0], r[1]) for r in rows if r[2] == FAILED})
    log.info("completed request(s): %s; still pending: %s", done or "none", pending)
    if pending and disabled:
        log.warning(
            "disabled destination(s) %s must answer too before a request is done (they may "
            "hold the people): enable them, or take them out of pipeline.yml",
            ", ".join(disabled),
        )
    if failed:
        raise ErasureIncompleteError(
            f"{len(failed)} erasure(s) failed and will be retried by the next run: "
            + ", ".join(f"{request} in {destination}" for request, destination in failed[:20])
        )
    return {"completed": done, "pending": pending}


def cleanup(run_id: str, config: PipelineConfig | None = None) -> None:
    """Remove the run's staged requests and pending file (they hold plain identifiers), and what
    killed tasks left in the scratch folder (rows of people: swept hourly here, not only daily)."""
    from audience_profiles.pipeline import sweep_scratch

    config = config or load_config()
    shutil.rmtree(work_folder(config, run_id), ignore_errors=True)
    sweep_scratch(config)


def run_erasure(ds: str, config: PipelineConfig | None = None, run_id: str = "manual") -> dict:
    """The erasure DAG's steps that erase, in order, without Airflow: for tests and scripts (the
    DAG is the real path). Not its asset event (``announce_erasure``) nor its ``retention``
    branch, which erases nobody (``retention.apply_retention``), nor ``compact_warehouse``."""
    config = config or load_config()
    try:
        result: dict[str, Any] = {
            "resolve": resolve_requests(read_requests(ds, run_id, config), config)
        }
        result["warehouse"] = remove_from_warehouse(config)
        pending = pending_erasures(run_id, config)
        results = [erase_destination(d.name, pending, config) for d in config.enabled_destinations]
        result["destinations"] = results
        result["record"] = record_erasures(results, run_id, config)
        return result
    finally:
        cleanup(run_id, config)
