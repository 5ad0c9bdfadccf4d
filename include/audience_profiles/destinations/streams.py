"""What every stream destination shares: the record schema, batching and retrying failed entries.

One record per output row, as compact UTF-8 JSON (schema version 1)::

    {"schema_version": 1, "record_id": "<sha256 hex>", "event_type": "profile_upsert",
     "profile_id": "p-1", "as_of": "2024-05-01", "emitted_at": "2024-05-02T03:04:05.678+00:00",
     "payload": {...the row}}

Which table becomes which event (and which column is the profile / partition key):

- ``profile_merges`` -> ``profile_merge`` (``surviving_profile_id``)
- ``audience_profiles`` -> ``profile_upsert`` (``profile_id``)
- ``audience_profile_interactions`` -> ``interaction`` (``profile_id``)

``profile_erased`` comes from the erasure flow, not from a table: one record per erased
profile_id, payload ``{"profile_id", "request_id", "requested_at"}`` (no personal data), so
consumers delete what they hold of that profile.

``as_of`` is the date a record describes: the run's date (its logical date, ``ds``) for table
records, the day it was sent for ``profile_erased``. A ``profile_upsert`` is a profile's state as of
that date, so a consumer applies it only if its ``as_of`` is not older than the state it holds: a
re-delivered old date then cannot roll a profile back (``emitted_at`` is when a delivery started,
not what it describes).

Delivery is at-least-once: a retried call or a retried task sends some records again, so
``record_id`` is deterministic for consumers to dedup on: sha256 over the event type, the event's
key fields and its payload (never ``emitted_at``). Interactions and merges are facts, identified by
content; a ``profile_upsert`` is the state of a profile as of the run date, so the run date is one
of its key fields (a profile that changes A -> B -> A gets three ids, and a consumer that dedups
over days does not drop the last upsert). Identical rows are distinct facts (the interaction table
has no interaction id: a session voting the same option of the same poll twice a day gives two
identical rows), so the n-th record identical to an earlier one of the same export gets
``occurrence: n`` among its key fields; the first keeps the id it would have alone. Which rows
are identical is decided after the PII policy, on what is sent.

Records are built from the run's Parquet exports a batch of rows at a time, so a table never sits in
Python memory whole; DuckDB finds the rows that may repeat another one beforehand, and only those
are counted in Python. docs/streams.md describes the schema and each destination's limits.
"""

from __future__ import annotations

import abc
import datetime as dt
import functools
import hashlib
import itertools
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from audience_profiles.config import ConfigError, DestinationConfig, PipelineConfig
from audience_profiles.destinations.base import (
    ERASED,
    DeliveryReport,
    Destination,
    ErasureRequest,
    RunInfo,
    erasure_status,
)
from audience_profiles.destinations.drop import (
    IDENTIFIER_PAIRS,
    RAW_COLUMN,
    _quote_ident,
    scratch_duckdb,
)
from audience_profiles.files import replace_file, safe_name
from audience_profiles.privacy import HASHED_EMAIL, PII_COLUMNS, hash_identifier

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

INTERACTION = "interaction"
PROFILE_UPSERT = "profile_upsert"
PROFILE_MERGE = "profile_merge"
PROFILE_ERASED = "profile_erased"  # emitted by the erasure flow (erased_records), not from a table

KIB = 1024
MIB = 1024 * KIB

# Rows read from a Parquet export at a time; profiles are a few hundred bytes to a few KiB each.
DEFAULT_BATCH_ROWS = 5_000
# An undelivered-records message names at most this many ids; the exception holds all of them.
MAX_IDS_IN_MESSAGE = 500
# Key field numbering identical records of one export (2, 3, ...; absent on the first).
OCCURRENCE = "occurrence"
# Exports up to this many rows count identical records in Python (a few MB of ids); larger ones
# first ask DuckDB which rows can repeat another. Connecting to DuckDB costs tens of ms, which a
# stream micro-batch would notice.
IN_MEMORY_REPEAT_ROWS = 50_000


@dataclass(frozen=True)
class TableEvents:
    """How the rows of one output table become stream records."""

    event_type: str
    profile_column: str  # the record's profile_id, also the partition key / message key
    key_columns: tuple[str, ...]
    as_of_run: bool  # a state snapshot: the run date is part of its identity


# In delivery order: a merge reaches a consumer before the surviving profile's upsert (they share
# the partition key), and profiles before their interactions.
STREAM_TABLES: dict[str, TableEvents] = {
    "profile_merges": TableEvents(
        PROFILE_MERGE,
        "surviving_profile_id",
        ("merged_profile_id", "surviving_profile_id", "identifier_type", "identifier_value"),
        as_of_run=False,
    ),
    "audience_profiles": TableEvents(PROFILE_UPSERT, "profile_id", ("profile_id",), as_of_run=True),
    "audience_profile_interactions": TableEvents(
        INTERACTION,
        "profile_id",
        (
            "profile_id",
            "interaction_date",
            "poll_id",
            "event_id",
            "session_id",
            "attribute",
            "option",
        ),
        as_of_run=False,
    ),
}


class RecordTooLargeError(ValueError):
    """One record exceeds what the service accepts per record; it can never be delivered."""


class RetryableCallError(Exception):
    """A whole call failed in a way worth retrying (throttling, service unavailable)."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


class UndeliveredRecordsError(RuntimeError):
    """Records still not delivered after the last attempt; ``record_ids`` names every one."""

    def __init__(self, target: str, record_ids: list[str], errors: Counter[str], retried: str):
        self.target = target
        self.record_ids = record_ids
        self.errors = errors
        shown = record_ids[:MAX_IDS_IN_MESSAGE]
        more = f" (first {len(shown)} of {len(record_ids)})" if len(shown) < len(record_ids) else ""
        causes = ", ".join(f"{code} x{count}" for code, count in errors.most_common())
        super().__init__(
            f"{len(record_ids)} record(s) not delivered to {target} {retried} "
            f"[{causes}]; delivery stopped there, so later records of the run were not sent "
            # Not "the run again": a daily delivery's retry goes on after what its checkpoint
            # holds (DeliveryCheckpoint); a stream batch's sends the batch again.
            f"(a task retry sends them and the later records; consumers dedup by record_id). "
            f"Undelivered record_ids{more}: " + ", ".join(shown)
        )


def canonical_json(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def json_safe(value: Any) -> Any:
    """A Parquet value as JSON: dates and times ISO 8601, decimals as exact strings, NaN as null."""
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def apply_pii(row: dict[str, Any], policy: str) -> dict[str, Any]:
    """The destination's PII policy on one row; the same rule as the SQL of drop.select_list.

    ``email`` / name columns: ``hashed`` sends ``email_sha256`` instead of ``email`` and drops the
    names (not matchable once hashed), ``omit`` drops all three. The value of an email (type,
    value) identifier pair (drop.IDENTIFIER_PAIRS: identifiers, merges, the link audit) becomes
    its hash with the type ``email_sha256`` (``hashed``) or null (``omit``). A quarantined ``raw``
    line is null under both.
    """
    if policy == "plain":
        return row
    pair_type = {value: kind for kind, value in IDENTIFIER_PAIRS if kind in row and value in row}
    out: dict[str, Any] = {}
    for name, value in row.items():
        if name in PII_COLUMNS:
            if policy == "hashed" and name == "email":
                out[HASHED_EMAIL] = hash_identifier(value)
            continue
        if name in pair_type:
            if row[pair_type[name]] == "email":
                value = hash_identifier(value) if policy == "hashed" else None
        elif policy == "hashed" and name in pair_type.values():
            if value == "email":
                value = HASHED_EMAIL
        elif name == RAW_COLUMN:
            value = None
        out[name] = value
    return out


def pii_columns(columns: Iterable[str], policy: str) -> set[str]:
    """The columns among ``columns`` whose values :func:`apply_pii` may change or drop."""
    columns = set(columns)
    if policy == "plain":
        return set()
    changed = columns & {*PII_COLUMNS, RAW_COLUMN}
    for kind, value in IDENTIFIER_PAIRS:
        if {kind, value} <= columns:
            changed |= {kind, value}
    return changed


@dataclass(frozen=True)
class StreamRecord:
    record_id: str
    event_type: str
    profile_id: str
    emitted_at: str
    payload: dict[str, Any]
    as_of: str  # the date the record describes (YYYY-MM-DD): the run's date

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "record_id": self.record_id,
            "event_type": self.event_type,
            "profile_id": self.profile_id,
            "as_of": self.as_of,
            "emitted_at": self.emitted_at,
            "payload": self.payload,
        }

    def encode(self) -> bytes:
        return json.dumps(
            self.as_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")


def record_id(event_type: str, key: dict[str, Any], payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json([event_type, key, payload]).encode("utf-8")).hexdigest()


def build_record(
    table: str,
    row: dict[str, Any],
    ds: str,
    emitted_at: str,
    pii: str = "plain",
    occurrence: int = 1,
) -> StreamRecord:
    """The stream record of one row of ``table`` (an output table in :data:`STREAM_TABLES`);
    ``occurrence`` n > 1 for the n-th row of an export identical to an earlier one."""
    events = STREAM_TABLES[table]
    payload = json_safe(apply_pii(row, pii))
    profile_id = payload.get(events.profile_column)
    if not profile_id:
        raise ValueError(f"{table}: a row has no {events.profile_column}")
    key = {column: payload.get(column) for column in events.key_columns}
    if events.as_of_run:
        key["as_of"] = ds
    if occurrence > 1:  # the first keeps the id it has alone
        key[OCCURRENCE] = occurrence
    return StreamRecord(
        record_id=record_id(events.event_type, key, payload),
        event_type=events.event_type,
        profile_id=str(profile_id),
        emitted_at=emitted_at,
        payload=payload,
        as_of=ds,
    )


def repeat_candidates(
    parquet_path: str,
    columns: Sequence[str],
    batch_rows: int = DEFAULT_BATCH_ROWS,
    spill_parent: Path | None = None,
) -> Iterator[tuple[int, int, int]]:
    """The rows of ``parquet_path`` that share their ``columns`` values with another row, in
    file order: (row number, the group's first row number, its last), 0-based.

    Rows with equal records always share these values (``columns`` are among a record's key
    fields and left alone by the PII policy), so only these rows can repeat one another; the
    group's last row says when its counts can be forgotten. DuckDB does the grouping, bounded
    and spilling under ``spill_parent`` (``drop.scratch_duckdb``), so the table never has to fit
    in memory: unbounded, the window over 5.8M rows took 1.5 GiB.
    """
    partition = ", ".join(_quote_ident(c) for c in columns)
    with scratch_duckdb(spill_parent) as con:
        reader = con.sql(
            "SELECT file_row_number, min(file_row_number) OVER w, max(file_row_number) OVER w "
            "FROM read_parquet($path, file_row_number = true) "
            f"WINDOW w AS ({'PARTITION BY ' + partition if partition else ''}) "
            "QUALIFY count(*) OVER w > 1 ORDER BY file_row_number",
            params={"path": parquet_path},
        ).to_arrow_reader(batch_rows)
        for batch in reader:
            yield from zip(*(column.to_pylist() for column in batch.columns), strict=True)


def records_from_export(
    table: str,
    parquet_path: str,
    ds: str,
    *,
    pii: str = "plain",
    emitted_at: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    spill_parent: Path | None = None,
) -> Iterator[StreamRecord]:
    """Yield the stream records of one table export, reading ``batch_rows`` rows at a time
    (a large export's repeats are found by DuckDB, spilling under ``spill_parent``).

    The n-th record equal to an earlier one of the export gets ``occurrence`` n in its key, so
    identical rows (two identical votes) keep distinct ids; ids depend only on the export's
    rows, not on their order or on when they are sent.
    """
    if table not in STREAM_TABLES:
        raise ValueError(f"table {table!r} has no stream event (one of {', '.join(STREAM_TABLES)})")
    events = STREAM_TABLES[table]
    emitted_at = emitted_at or utc_now()
    parquet = pq.ParquetFile(parquet_path)
    schema = parquet.schema_arrow
    changed = pii_columns(schema.names, pii)
    # Which rows can repeat another: in a large export, those sharing the values of the key
    # columns the policy leaves alone (floats excluded: NaN and null are both null in JSON), as
    # equal records are equal there; in a small one, simply every row.
    group_by = [
        c
        for c in events.key_columns
        if c in schema.names and c not in changed and not pa.types.is_floating(schema.field(c).type)
    ]
    rows = parquet.metadata.num_rows
    repeats = (
        repeat_candidates(parquet_path, group_by, batch_rows, spill_parent)
        if rows > IN_MEMORY_REPEAT_ROWS
        else ((n, 0, rows - 1) for n in range(rows))
    )
    seen: dict[int, Counter[str]] = {}  # group's first row -> record_id (occurrence 1) -> count
    number = 0
    try:
        candidate = next(repeats, None)
        for batch in parquet.iter_batches(batch_size=batch_rows):
            for row in batch.to_pylist():
                number += 1
                try:
                    record = build_record(table, row, ds, emitted_at, pii)
                    if candidate is not None and candidate[0] == number - 1:
                        _, first, last = candidate
                        counts = seen.setdefault(first, Counter())
                        counts[record.record_id] += 1
                        occurrence = counts[record.record_id]
                        if last == number - 1:
                            del seen[first]
                        candidate = next(repeats, None)
                        if occurrence > 1:
                            record = build_record(table, row, ds, emitted_at, pii, occurrence)
                except ValueError as exc:
                    exc.add_note(f"row {number} of {parquet_path}")  # not the row: it may hold PII
                    raise
                yield record
    finally:
        repeats.close()
        parquet.close()


def erased_records(
    requests: Sequence[ErasureRequest], emitted_at: str | None = None
) -> Iterator[StreamRecord]:
    """One ``profile_erased`` record per profile of each request (ids are stable: a retried
    erasure sends the same record_ids). Its ``as_of`` is the day it is sent (UTC): a consumer
    keeping it as a tombstone then ignores any upsert of an earlier date delivered again."""
    emitted_at = emitted_at or utc_now()
    sent = dt.datetime.fromisoformat(emitted_at)
    as_of = (sent.astimezone(dt.UTC) if sent.tzinfo else sent).date().isoformat()
    for request in requests:
        for profile_id in request.profile_ids:
            payload = {
                "profile_id": profile_id,
                "request_id": request.request_id,
                "requested_at": request.requested_at,
            }
            key = {"profile_id": profile_id, "request_id": request.request_id}
            yield StreamRecord(
                record_id=record_id(PROFILE_ERASED, key, payload),
                event_type=PROFILE_ERASED,
                profile_id=profile_id,
                emitted_at=emitted_at,
                payload=payload,
                as_of=as_of,
            )


def erased_statuses(requests: Sequence[ErasureRequest], target: str) -> dict[str, dict[str, str]]:
    return {
        r.request_id: erasure_status(
            ERASED, f"{len(r.profile_ids)} profile_erased record(s) sent to {target}"
        )
        for r in requests
    }


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def stream_tables(config: DestinationConfig, pipeline: PipelineConfig) -> list[str]:
    """The destination's tables in delivery order; a table with no stream event is a ConfigError."""
    unknown = [t for t in config.tables if t not in STREAM_TABLES]
    if unknown:
        raise ConfigError(
            f"{pipeline.source_file}: destination {config.name!r} ({config.kind}) cannot stream "
            f"{', '.join(unknown)}; stream tables are {', '.join(STREAM_TABLES)}"
        )
    return [t for t in STREAM_TABLES if t in config.tables]


# --- batching ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One record encoded for a service: ``data`` is what is sent, ``key`` its partition key."""

    record: StreamRecord
    data: bytes

    @property
    def record_id(self) -> str:
        return self.record.record_id

    @property
    def key(self) -> str:
        return self.record.profile_id


@dataclass(frozen=True)
class BatchLimits:
    """A service's per-call limits. ``key_counts``: the partition key counts toward the sizes."""

    call: str  # named in errors, e.g. "Kinesis PutRecords"
    max_records: int
    max_batch_bytes: int
    max_record_bytes: int
    key_counts: bool

    def size(self, entry: Entry) -> int:
        return len(entry.data) + (len(entry.key.encode("utf-8")) if self.key_counts else 0)


def batches(entries: Iterable[Entry], limits: BatchLimits) -> Iterator[list[Entry]]:
    """Group entries, in order, into calls within ``limits``; a record over the per-record limit
    raises :class:`RecordTooLargeError` naming it (no retry could ever deliver it)."""
    batch: list[Entry] = []
    batch_bytes = 0
    for entry in entries:
        size = limits.size(entry)
        if size > limits.max_record_bytes:
            what = " incl. its partition key" if limits.key_counts else ""
            raise RecordTooLargeError(
                f"record {entry.record_id} ({entry.record.event_type}, profile_id "
                f"{entry.key!r}) is {size:,} bytes{what}; {limits.call} accepts at most "
                f"{limits.max_record_bytes:,} bytes per record"
            )
        if batch and (
            len(batch) >= limits.max_records or batch_bytes + size > limits.max_batch_bytes
        ):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(entry)
        batch_bytes += size
    if batch:
        yield batch


# --- retrying failed entries ------------------------------------------------------------------

# Sends one batch; returns the entries that failed with each one's error code. Raises
# RetryableCallError when the whole call failed and is worth retrying.
SendBatch = Callable[[list[Entry]], list[tuple[Entry, str]]]


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded attempts with exponential backoff and full jitter (sleep uniform in [0, cap])."""

    max_attempts: int = 8
    base_seconds: float = 0.2
    max_seconds: float = 10.0

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> RetryPolicy:
        policy = cls(
            max_attempts=int(options.get("max_attempts", cls.max_attempts)),
            base_seconds=float(options.get("retry_base_seconds", cls.base_seconds)),
            max_seconds=float(options.get("retry_max_seconds", cls.max_seconds)),
        )
        if policy.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {policy.max_attempts}")
        return policy

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return rng.uniform(0, min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1)))


def aws_batch_failures(
    batch: list[Entry],
    call: Callable[[], dict],
    retryable: frozenset[str],
    *,
    failed_count: str,
    results: str,
) -> list[tuple[Entry, str]]:
    """One AWS batch put (Kinesis PutRecords, Firehose PutRecordBatch) as a :data:`SendBatch`
    step: a whole-call error whose code is in ``retryable`` becomes :class:`RetryableCallError`
    (any other fails now); otherwise the entries the response's ``results`` mark with an
    ``ErrorCode``, when its ``failed_count`` is not 0. Results come back in request order."""
    from botocore.exceptions import ClientError  # only the AWS destinations need it

    try:
        response = call()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in retryable:
            raise RetryableCallError(code) from exc
        raise
    if not response.get(failed_count):
        return []
    return [
        (entry, result["ErrorCode"])
        for entry, result in zip(batch, response[results], strict=True)
        if result.get("ErrorCode")
    ]


def send_with_retries(
    batch: list[Entry],
    send: SendBatch,
    policy: RetryPolicy,
    target: str,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> int:
    """Send ``batch``, re-sending only the entries that failed, until all are in or attempts run
    out (then :class:`UndeliveredRecordsError`). Returns how many entries were re-sent."""
    rng = rng or random.Random()
    pending = batch
    resent = 0
    failed: list[tuple[Entry, str]] = []
    for attempt in range(1, policy.max_attempts + 1):
        try:
            failed = send(pending)
        except RetryableCallError as exc:
            failed = [(entry, exc.code) for entry in pending]
        if not failed:
            return resent
        if attempt < policy.max_attempts:
            pending = [entry for entry, _ in failed]
            resent += len(pending)
            sleep(policy.delay(attempt, rng))
    raise UndeliveredRecordsError(
        target,
        [entry.record_id for entry, _ in failed],
        Counter(code for _, code in failed),
        f"after {policy.max_attempts} attempt(s)",
    )


class DeliveryCheckpoint:
    """How many records of each table an unfinished delivery got confirmed, so that its retry
    goes on from there instead of sending the whole run again (6.6M records at 10M
    interactions: a stream throttled at the same point would fail every attempt the same way).

    Kept beside the run's exports (``.delivery-<destination>.json`` in their folder; a name with
    other characters than letters, digits, ``_ . -`` is made safe and a hash of it added) while the
    delivery has not finished, with each export's size and modification time: a new publish of
    the date (or an erasure rewriting an export) starts that table over, and changed
    ``settings`` (another stream, topic, connection target or PII policy, or a Kinesis or
    Firehose stream created again under its name: ``run_records``) the whole delivery. Removed
    when the delivery completes, so delivering a date again sends it all. Written every
    ``FLUSH_SECONDS`` (Kafka looks every ``kafka.SAVE_EVERY`` messages) and when an attempt ends
    or fails, and by Kinesis and Firehose after each table too: a worker lost in between sends
    again what was confirmed since the last write, as the at-least-once guarantee allows
    (consumers deduplicate on ``record_id``).
    """

    FLUSH_SECONDS = 5.0

    def __init__(self, destination: str, run: RunInfo, exports: dict[str, str], settings: str = ""):
        first = Path(next(iter(exports.values()))) if exports else None
        self.path = first.parent / f".delivery-{safe_name(destination)}.json" if first else None
        self.run_id = run.run_id
        self.settings = settings
        self.versions = {t: self._version(p) for t, p in exports.items()}
        self.counts: dict[str, int] = {}
        self.written = time.monotonic()
        if self.path and self.path.exists():
            try:
                saved = json.loads(self.path.read_text())
            except (OSError, ValueError):
                saved = {}
            if saved.get("run_id") == self.run_id and saved.get("settings") == settings:
                for table, entry in (saved.get("tables") or {}).items():
                    if table in self.versions and entry.get("version") == self.versions[table]:
                        self.counts[table] = int(entry.get("sent", 0))
        self.resumed = {t: n for t, n in self.counts.items() if n}

    @staticmethod
    def _version(path: str) -> list[int]:
        stat = Path(path).stat()
        return [stat.st_size, stat.st_mtime_ns]

    def sent(self, table: str) -> int:
        return self.counts.get(table, 0)

    def confirm(self, table: str, count: int, *, write: bool = False) -> None:
        self.counts[table] = count
        if self.path and (write or time.monotonic() - self.written >= self.FLUSH_SECONDS):
            state = {
                "run_id": self.run_id,
                "settings": self.settings,
                "tables": {
                    t: {"version": self.versions[t], "sent": n} for t, n in self.counts.items()
                },
            }
            replace_file(self.path, json.dumps(state).encode())
            self.written = time.monotonic()

    def remove(self) -> None:
        if self.path:
            self.path.unlink(missing_ok=True)


def run_records(
    destination: Destination, run: RunInfo, tables: dict[str, str]
) -> tuple[DeliveryCheckpoint, list[tuple[str, Iterator[StreamRecord]]]]:
    """A stream destination's delivery of ``run``: its checkpoint, and the records of each of
    its tables in order (read lazily, with one ``emitted_at``). Fails before anything is sent
    when the run has no export of one of them."""
    missing = [t for t in destination.tables if t not in tables]
    if missing:
        raise ValueError(f"{destination.target}: run {run.run_id} has no export of {missing[0]}")
    emitted_at = utc_now()
    records = [
        (
            table,
            records_from_export(
                table,
                tables[table],
                run.ds,
                pii=destination.config.pii,
                emitted_at=emitted_at,
                spill_parent=destination.pipeline.scratch_root,
            ),
        )
        for table in destination.tables
    ]
    exports = {t: tables[t] for t in destination.tables}
    # What the records are and where they go; an attempt under others starts over. Not the
    # retry options: raising max_attempts for a throttled stream must keep what got through.
    settings = json.dumps(
        [
            destination.config.kind,
            destination.target,
            destination.config.pii,
            SCHEMA_VERSION,
            connection_target(destination.conn_id),
            # the stream itself: one deleted and created again under its name since an earlier
            # attempt holds none of what that attempt sent
            destination.target_identity()
            if isinstance(destination, BatchedStreamDestination)
            else None,
        ],
        sort_keys=True,
        default=str,
    )
    settings = hashlib.sha256(settings.encode()).hexdigest()[:16]
    return DeliveryCheckpoint(destination.name, run, exports, settings), records


# The parts of an Airflow connection's extra that say where records go (a broker, a region,
# an endpoint, an account), never a secret: another cluster or account means starting over.
CONNECTION_TARGET_EXTRA = (
    "bootstrap.servers",
    "region_name",
    "endpoint_url",
    "role_arn",
    "aws_access_key_id",
    "service_config",
)


def connection_target(conn_id: str) -> list | None:
    """Where the connection ``conn_id`` points (see :data:`CONNECTION_TARGET_EXTRA`); None
    when it is not defined (an AWS client then takes the environment's credentials)."""
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        # Only "not defined". A backend denying access fails the try: taken as no connection,
        # it would change the settings and make the retry send everything again. (Airflow
        # itself reads a backend's other errors as "not defined".)
        return None
    extra = conn.extra_dejson
    return [
        conn.conn_type,
        conn.host,
        conn.port,
        conn.schema,
        conn.login,
        {k: extra[k] for k in CONNECTION_TARGET_EXTRA if k in extra},
    ]


class BatchedStreamDestination(Destination):
    """A stream taking batches of records per call (Kinesis PutRecords, Firehose PutRecordBatch)."""

    STREAMED = True
    limits: ClassVar[BatchLimits]

    def __init__(self, config: DestinationConfig, pipeline: PipelineConfig):
        super().__init__(config, pipeline)
        self.tables = stream_tables(config, pipeline)
        try:
            self.retry = RetryPolicy.from_options(config.options)
        except ValueError as exc:
            raise ConfigError(
                f"{pipeline.source_file}: destination {config.name!r}: {exc}"
            ) from exc

    @property
    @abc.abstractmethod
    def target(self) -> str:
        """What records go to, for messages: e.g. "Kinesis stream 'profiles'"."""

    @abc.abstractmethod
    def open_sender(self) -> SendBatch:
        """A client-bound function sending one batch (see :data:`SendBatch`)."""

    @functools.cached_property
    def sender(self) -> SendBatch:
        """:meth:`open_sender`, once: creating a client costs a few hundred ms, so the stream
        DAG creates it in a thread while DuckDB works (``stream.run_batch``)."""
        return self.open_sender()

    @property
    def conn_id(self) -> str:
        return self.config.conn_id or "aws_default"

    def describe_target(self) -> str | None:
        """What tells the stream apart from one deleted and created again under its name (its
        ARN and creation time), asked of the service; None for a kind that cannot tell."""
        return None

    def target_identity(self) -> str | None:
        """:meth:`describe_target`, asked once per delivery; None when the service does not
        say (no permission to describe, the stream missing), and a retry then goes on after
        what an earlier attempt sent, as it did before it could tell."""
        from botocore.exceptions import BotoCoreError, ClientError  # AWS destinations only

        try:
            return self.describe_target()
        except (BotoCoreError, ClientError) as exc:
            log.warning(
                "%s: could not describe it (%s), so a retry cannot tell whether it was deleted "
                "and created again since an earlier attempt; grant the describe permission "
                '(docs/streams.md, "Retries")',
                self.target,
                exc,
            )
            return None

    def encode(self, record: StreamRecord) -> bytes:
        return record.encode()

    def deliver(self, run: RunInfo, tables: dict[str, str]) -> DeliveryReport:
        report = self.report()
        send = self.sender
        resent = 0
        checkpoint, streams = run_records(self, run, tables)
        for table, records in streams:
            # An earlier attempt of this delivery confirmed these: not sent again.
            delivered = checkpoint.sent(table)
            remaining = itertools.islice(records, delivered, None)
            try:
                for batch in batches((Entry(r, self.encode(r)) for r in remaining), self.limits):
                    resent += send_with_retries(batch, send, self.retry, self.target)
                    delivered += len(batch)
                    checkpoint.confirm(table, delivered)
            finally:  # also when a batch failed: its retry starts at that batch
                checkpoint.confirm(table, delivered, write=True)
            report.rows[table] = delivered
        report.details = {"target": self.target, "resent": resent}
        if checkpoint.resumed:
            report.details["resumed_after"] = checkpoint.resumed
        checkpoint.remove()
        return report

    def erase(self, requests: Sequence[ErasureRequest]) -> dict[str, dict[str, str]]:
        """Send a ``profile_erased`` record per erased profile (consumers delete theirs)."""
        send = self.sender
        entries = (Entry(r, self.encode(r)) for r in erased_records(requests))
        for batch in batches(entries, self.limits):
            send_with_retries(batch, send, self.retry, self.target)
        return erased_statuses(requests, self.target)
