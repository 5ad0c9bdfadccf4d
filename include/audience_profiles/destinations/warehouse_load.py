"""Loading a run's exports into SQL warehouse tables: the contract the ``snowflake`` and ``sql``
destinations share, and the statements both can run.

Per delivery:
1. set-up (outside any transaction, as DDL commits on its own in most warehouses): create each
   target table that is missing, typed from the export's Parquet schema, and add columns a newer
   export brings;
2. stage: load every table's export into its own staging table
   (``ap_stage_<table>_<yyyymmdd>_<first 8 hex digits of the destination name's sha256>``,
   replaced on every attempt);
3. apply, each table's change atomic (one statement or one transaction):
   - a *snapshot* table (the state as of the run date: profiles, identifiers, profile
     interactions, segment memberships) is synchronised with the run's snapshot (rows changed,
     added, and removed: a profile that disappears, e.g. after an erasure, disappears here too),
     but only when the run date is the latest one loaded into that table: a backfill of an older
     date must not roll the current state back. The run first claims its snapshot tables in the
     load log and the sync re-checks for a later claim in the statement (or transaction) that
     changes the table, so two dates delivering at once leave the newer state live;
   - a *partitioned* table (merges, enriched interactions, quarantine, link audit) gets its
     ``dt`` partition replaced by the run's rows (DELETE + INSERT in one transaction);
   - then, in one transaction, ``profile_merges`` of the run is applied: rows of merged-away
     profiles are removed from ``audience_profiles`` and ``segment_memberships`` and repointed to
     the surviving profile in ``profile_identifiers`` and ``audience_profile_interactions``, so a
     merged-away profile is never live in the warehouse (the snapshot sync already does so; this
     keeps the guarantee explicit), and the load log ``ap_loads`` gets one row per table and date;
4. drop the staging tables.

Erasure (``erase``, warehouse_erasure.py) deletes the people from every table the load log names,
in one transaction, and leaves a hashed tombstone per profile id and identifier in ``ap_erasures``;
step 2 stages every export without the rows those tombstones name, so no load (an export written
before the request, an old run delivered again) puts an erased person back.

Tables are applied one after the other, not in one transaction across tables: Snowflake runs
a MERGE as its own statement (and fakesnow cannot run one inside BEGIN ... COMMIT), so a reader
may for a moment see today's profiles next to yesterday's identifiers, never a half table.

A crash leaves every table either as it was or as the run wants it; the retry repeats every
step (staging tables are replaced, not appended to), so re-running a date changes nothing.

A snapshot row whose key is empty (NULL in a key column that is not ``nullable_key``) has no
identity: no later load could find it again to update or remove it, so a MERGE would insert it once
more on every delivery. The commonest case is the PII policy: under ``omit`` the value of every
email row of ``profile_identifiers`` is NULL (``hashed`` gives NULL for a blank email). Such rows
are left out of the snapshot tables before staging, counted per table in the report's
``details["rows_without_key_left_out"]``; ``rows`` and the load log count the rows loaded.
Partitioned tables are replaced by run date and keep every row.

``audience_profile_interactions`` has no interaction id: one session may vote for the same option
of the same poll several times a day, giving identical rows. Its natural key is therefore
(session_id, event_id, poll_id, interaction_date, attribute, option, occurrence), where
``occurrence`` numbers identical interactions 1..n (ordered by votes). profile_id is left out of
the key on purpose: when profiles merge, a row keeps its identity and only its profile changes.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import functools
import hashlib
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from audience_profiles.destinations.base import (
    ERASED,
    DeliveryReport,
    Destination,
    ErasureRequest,
    RunInfo,
    erasure_status,
)
from audience_profiles.destinations.drop import render_parts
from audience_profiles.destinations.warehouse_erasure import (
    ERASURES_TABLE,
    erase_loaded,
    without_erased,
)
from audience_profiles.privacy import PII_COLUMNS

PARTITION_COLUMN = "dt"
OCCURRENCE_COLUMN = "occurrence"
LOG_TABLE = "ap_loads"
MAX_MERGE_HOPS = 16  # a merged profile's survivor may itself merge later: follow the chain


@dataclass(frozen=True)
class TableSpec:
    key: tuple[str, ...] = ()  # natural key of a snapshot table
    nullable_key: tuple[str, ...] = ()  # key columns that may be NULL: compared null-safely
    ordinal_by: str | None = None  # rows equal on the key are numbered (occurrence) by this
    json_columns: tuple[str, ...] = ()  # JSON text in the export, semi-structured in the warehouse
    partitioned: bool = False  # keyed by run date: the run's dt partition is replaced
    on_merge: str | None = None  # what a merged-away profile's rows become: delete | repoint


TABLES: dict[str, TableSpec] = {
    "audience_profiles": TableSpec(
        key=("profile_id",), json_columns=("answers",), on_merge="delete"
    ),
    "profile_identifiers": TableSpec(
        key=("identifier_type", "identifier_value"), on_merge="repoint"
    ),
    "audience_profile_interactions": TableSpec(
        key=("session_id", "event_id", "poll_id", "interaction_date", "attribute", "option"),
        nullable_key=("attribute", "option"),
        ordinal_by="votes",
        on_merge="repoint",
    ),
    "segment_memberships": TableSpec(key=("segment_id", "profile_id"), on_merge="delete"),
    "profile_merges": TableSpec(partitioned=True),
    "interactions_enriched": TableSpec(partitioned=True),
    "quarantine": TableSpec(partitioned=True),
    "identity_link_audit": TableSpec(partitioned=True),
}


@dataclass
class Staged:
    """One export loaded into its staging table."""

    table: str
    staging: str
    columns: list[tuple[str, pa.DataType]]  # the export's columns (target has these and more)
    rows: int
    spec: TableSpec
    store: bool = True  # False: staged only to apply its merges, not kept

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]

    @property
    def key(self) -> tuple[str, ...]:
        return self.spec.key + ((OCCURRENCE_COLUMN,) if self.spec.ordinal_by else ())


class Session(abc.ABC):
    """A connection to the warehouse as the loader uses it."""

    @abc.abstractmethod
    def execute(self, sql: str) -> int:
        """Run one statement; return the rows it affected (or -1)."""

    @abc.abstractmethod
    def query(self, sql: str) -> list[tuple]: ...

    @abc.abstractmethod
    def columns(self, table: str) -> list[str] | None:
        """Column names (lower case) of ``table``; None when it does not exist."""

    @abc.abstractmethod
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Commit the block's statements together, or none of them."""


@dataclass
class LoadPlan:
    run: RunInfo
    staged: list[Staged] = field(default_factory=list)
    snapshots_skipped: list[str] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)  # snapshot rows without a key


class SqlWarehouseDestination(Destination):
    """The load contract above; subclasses say how to connect, type, quote and stage."""

    LOADS_TABLES = True

    @abc.abstractmethod
    def session(self) -> contextlib.AbstractContextManager[Session]: ...

    @abc.abstractmethod
    def ident(self, name: str) -> str:
        """A column or table name as this warehouse spells it."""

    @abc.abstractmethod
    def qualified(self, table: str) -> str:
        """A table name qualified with the destination's schema."""

    @abc.abstractmethod
    def column_type(self, arrow_type: pa.DataType, json: bool = False) -> str: ...

    @abc.abstractmethod
    def literal(self, value: Any) -> str: ...

    @abc.abstractmethod
    def prepare(self, db: Session) -> None:
        """Create what the destination needs before any table (schema, stage)."""

    @abc.abstractmethod
    def load_staging(self, db: Session, staged: Staged, path: str) -> None:
        """Create ``staged.staging`` (replacing it) and load the Parquet file at ``path``."""

    @abc.abstractmethod
    def sync_snapshot(self, db: Session, staged: Staged, ds: str) -> None:
        """Make the target equal the staged snapshot, atomically, unless a later run date than
        ``ds`` is in the load log for the table (:meth:`later_load`), checked in the statement or
        transaction that changes the table, not before (see :meth:`apply`)."""

    def json_value(self, expr: str) -> str:
        """The staged JSON text as the target's JSON column takes it."""
        return expr

    def null_safe_equal(self, a: str, b: str) -> str:
        return f"{a} IS NOT DISTINCT FROM {b}"

    # -- the contract -------------------------------------------------------------------------

    def deliver(self, run: RunInfo, tables: dict[str, str]) -> DeliveryReport:
        report = self.report()
        plan = LoadPlan(run)
        withheld = 0
        with self.session() as db, self.pipeline.scratch("load-") as tmp:
            self.prepare(db)
            self.ensure_log_table(db)
            erased = self.erased(db)
            wanted = list(self.config.tables)
            if "profile_merges" not in wanted and "profile_merges" in tables:
                wanted.append("profile_merges")  # staged to apply its merges, not stored
            for table in wanted:
                path = tables[table]
                if erased:
                    path, rows = without_erased(path, erased, Path(tmp) / f"{table}-kept.parquet")
                    withheld += rows
                path = self.prepared_file(table, path, Path(tmp))
                if table in self.config.tables and TABLES[table].key:
                    path, rows = with_key(path, TABLES[table], Path(tmp) / f"{table}-keyed.parquet")
                    if rows:
                        plan.left_out[table] = rows
                staged = self.staged_table(table, path, run, store=table in self.config.tables)
                if staged.store:
                    self.ensure_target(db, staged)
                self.load_staging(db, staged, path)
                plan.staged.append(staged)
            try:
                self.apply(db, plan)
            finally:
                for staged in plan.staged:
                    db.execute(f"DROP TABLE {staged.staging}")
        for staged in plan.staged:
            if staged.store:
                report.rows[staged.table] = staged.rows
        report.details = {"snapshots_kept_newer": plan.snapshots_skipped}
        if withheld:
            report.details["erased_rows_withheld"] = withheld
        left_out = {t: n for t, n in plan.left_out.items() if t not in plan.snapshots_skipped}
        if left_out:
            report.details["rows_without_key_left_out"] = left_out
        return report

    def erase(self, requests: Sequence[ErasureRequest]) -> dict[str, dict[str, str]]:
        """Delete the people from every table loaded so far; later loads leave them out."""
        with self.session() as db:
            if db.columns(self.qualified(LOG_TABLE)) is None:
                detail = "nothing loaded yet"  # later loads come from suppressed exports
            else:
                loaded = [
                    t
                    for t in TABLES
                    if t in self.latest_loaded(db) and db.columns(self.qualified(t)) is not None
                ]
                removed = erase_loaded(self, db, requests, loaded)
                detail = f"{sum(removed.values())} row(s) removed from {len(removed)} table(s)"
        return {r.request_id: erasure_status(ERASED, detail) for r in requests}

    def erased(self, db: Session) -> set[tuple[str, str]]:
        """Tombstones of erased people: (identifier type, hash)."""
        table = self.qualified(ERASURES_TABLE)
        if db.columns(table) is None:
            return set()
        kind, digest = self.ident("identifier_type"), self.ident("identifier_hash")
        return {(k, h) for k, h in db.query(f"SELECT DISTINCT {kind}, {digest} FROM {table}")}

    def prepared_file(self, table: str, path: str, tmp: Path) -> str:
        """The export with the destination's PII policy applied (drop.py's rules)."""
        if self.config.pii == "plain":
            return path
        parts, _ = render_parts(path, "parquet", tmp / table, pii=self.config.pii, escape_csv=False)
        return str(parts[0][0])

    def staged_table(self, table: str, path: str, run: RunInfo, store: bool) -> Staged:
        spec = TABLES[table]
        schema = pq.read_schema(path)
        columns = [(f.name.lower(), f.type) for f in schema]
        # Named after the destination too: two destinations loading one schema at once (each
        # stages profile_merges) replaced and dropped each other's staging table.
        owner = hashlib.sha256(self.name.encode()).hexdigest()[:8]
        staging = self.qualified(f"ap_stage_{table}_{run.ds.replace('-', '')}_{owner}")
        rows = pq.read_metadata(path).num_rows
        return Staged(table, staging, columns, rows, spec, store)

    def target_columns(self, staged: Staged) -> list[tuple[str, str]]:
        """Target columns and types: the export's, then the key's occurrence or the partition."""
        spec = staged.spec
        columns = [
            (name, self.column_type(arrow_type, json=name in spec.json_columns))
            for name, arrow_type in staged.columns
        ]
        if spec.ordinal_by:
            columns.append((OCCURRENCE_COLUMN, self.column_type(pa.int64())))
        if spec.partitioned:
            columns.append((PARTITION_COLUMN, self.column_type(pa.date32())))
        return columns

    def ensure_target(self, db: Session, staged: Staged) -> None:
        target = self.qualified(staged.table)
        wanted = self.target_columns(staged)
        existing = db.columns(target)
        if existing is None:
            cols = ", ".join(f"{self.ident(n)} {t}" for n, t in wanted)
            db.execute(f"CREATE TABLE {target} ({cols})")
            return
        for name, col_type in wanted:
            if name not in existing:  # a newer export brings a column: add it, keep the rows
                db.execute(f"ALTER TABLE {target} ADD COLUMN {self.ident(name)} {col_type}")
        # A personal-data column the export no longer carries (pii switched from plain to hashed
        # or omit): nothing would write it again, and every row kept would keep its plain value.
        delivered = {n for n, _ in wanted}
        for name in existing:
            if name in PII_COLUMNS and name not in delivered:
                db.execute(f"ALTER TABLE {target} DROP COLUMN {self.ident(name)}")

    def ensure_table(self, db: Session, table: str, columns: dict[str, pa.DataType]) -> None:
        """Create one of the destination's own bookkeeping tables if it is missing."""
        qualified = self.qualified(table)
        if db.columns(qualified) is None:
            cols = ", ".join(f"{self.ident(n)} {self.column_type(t)}" for n, t in columns.items())
            db.execute(f"CREATE TABLE {qualified} ({cols})")

    def ensure_log_table(self, db: Session) -> None:
        self.ensure_table(
            db,
            LOG_TABLE,
            {
                "table_name": pa.string(),
                PARTITION_COLUMN: pa.date32(),
                "run_id": pa.string(),
                "row_count": pa.int64(),
                "loaded_at": pa.timestamp("us"),
            },
        )

    def staged_select(self, staged: Staged) -> str:
        """The staged rows as the target takes them (JSON parsed, occurrence numbered)."""
        spec = staged.spec
        exprs = [
            self.json_value(self.ident(n)) + f" AS {self.ident(n)}"
            if n in spec.json_columns
            else self.ident(n)
            for n in staged.names
        ]
        if spec.ordinal_by:
            partition = ", ".join(self.ident(k) for k in spec.key)
            exprs.append(
                f"row_number() OVER (PARTITION BY {partition} "
                f"ORDER BY {self.ident(spec.ordinal_by)}) AS {self.ident(OCCURRENCE_COLUMN)}"
            )
        return f"SELECT {', '.join(exprs)} FROM {staged.staging}"

    def key_match(self, staged: Staged, left: str, right: str, null_safe: bool = False) -> str:
        """Rows ``left`` and ``right`` have the same key; NULL equals NULL in ``nullable_key``
        columns, or in every column with ``null_safe`` (to find rows whose key is empty)."""
        conditions = []
        for k in staged.key:
            a, b = f"{left}.{self.ident(k)}", f"{right}.{self.ident(k)}"
            nullable = null_safe or k in staged.spec.nullable_key
            conditions.append(self.null_safe_equal(a, b) if nullable else f"{a} = {b}")
        return " AND ".join(conditions)

    def latest_loaded(self, db: Session) -> dict[str, dt.date]:
        rows = db.query(
            f"SELECT {self.ident('table_name')}, max({self.ident(PARTITION_COLUMN)}) "
            f"FROM {self.qualified(LOG_TABLE)} GROUP BY {self.ident('table_name')}"
        )
        return {name: day for name, day in rows}

    def apply(self, db: Session, plan: LoadPlan) -> None:
        """Every change of the delivery; each table's change is atomic (see the module doc)."""
        run_day = dt.date.fromisoformat(plan.run.ds)
        latest = self.latest_loaded(db)
        stored = [s for s in plan.staged if s.store]
        partitioned = [s for s in stored if s.spec.partitioned]
        if partitioned:
            with db.transaction():
                for staged in partitioned:
                    self.replace_partition(db, staged, plan.run.ds)
        snapshots = []
        for staged in stored:
            if staged.spec.partitioned:
                continue
            if staged.table not in latest or run_day >= _as_date(latest[staged.table]):
                snapshots.append(staged)
            else:
                plan.snapshots_skipped.append(staged.table)
        # Two deliveries of different dates may overlap (catch-up runs several dates at once).
        # The check above is read before the sync, so it alone would let the older date's sync
        # land after the newer one's. So each date first claims its snapshot tables in the log,
        # and each sync re-checks, in the statement or transaction that changes the table, that
        # no later date has claimed it: whichever order the two run in, the newer state stays.
        if snapshots:
            with db.transaction():
                self.log_loads(db, plan.run, snapshots)
        for staged in snapshots:
            self.sync_snapshot(db, staged, plan.run.ds)
            if db.query(self.later_load(staged.table, plan.run.ds)):
                plan.snapshots_skipped.append(staged.table)  # a later date's state is live
        merges = next((s for s in plan.staged if s.table == "profile_merges"), None)
        with db.transaction():
            if merges is not None:
                # Not to a snapshot a later date's state holds: an older date's merge would take
                # a profile that is live there out of it (an erasure can split one again).
                merged_into = [s for s in stored if s.table not in plan.snapshots_skipped]
                self.apply_merges(db, merges.staging, merged_into, plan.run.ds)
            self.log_loads(db, plan.run, stored)

    def log_loads(self, db: Session, run: RunInfo, loaded: list[Staged]) -> None:
        """Record (replace) the run date's row per table in the load log."""
        log = self.qualified(LOG_TABLE)
        ds = f"DATE {self.literal(run.ds)}"
        names = ", ".join(self.literal(s.table) for s in loaded)
        db.execute(
            f"DELETE FROM {log} WHERE {self.ident(PARTITION_COLUMN)} = {ds} "
            f"AND {self.ident('table_name')} IN ({names})"
        )
        run_id = self.literal(run.run_id)
        self.insert_rows_sql(
            db,
            log,
            [
                f"({self.literal(s.table)}, {ds}, {run_id}, {s.rows}, CURRENT_TIMESTAMP)"
                for s in loaded
            ],
        )

    def later_load(self, table: str, ds: str) -> str:
        """SQL: the load log's rows of ``table`` for run dates later than ``ds`` (loaded or
        claimed)."""
        return (
            f"SELECT 1 FROM {self.qualified(LOG_TABLE)} "
            f"WHERE {self.ident('table_name')} = {self.literal(table)} "
            f"AND {self.ident(PARTITION_COLUMN)} > DATE {self.literal(ds)}"
        )

    def insert_rows_sql(self, db: Session, table: str, rows: list[str]) -> None:
        """Insert literal rows; one statement each, as multi-row VALUES is not portable."""
        for row in rows:
            db.execute(f"INSERT INTO {table} VALUES {row}")

    def replace_partition(self, db: Session, staged: Staged, ds: str) -> None:
        target = self.qualified(staged.table)
        day = f"DATE {self.literal(ds)}"
        names = [self.ident(n) for n in staged.names] + [self.ident(PARTITION_COLUMN)]
        db.execute(f"DELETE FROM {target} WHERE {self.ident(PARTITION_COLUMN)} = {day}")
        db.execute(
            f"INSERT INTO {target} ({', '.join(names)}) "
            f"SELECT s.*, {day} FROM ({self.staged_select(staged)}) s"
        )

    def apply_merges(self, db: Session, merges: str, stored: list[Staged], ds: str) -> None:
        """Take merged-away profiles out of ``stored`` (or point their rows at the survivor).

        A snapshot's statements change nothing once a later date has claimed it (checked in
        each statement, as ``sync_snapshot`` does): the check before this transaction could be
        passed just before a later date claimed and synced the table. A partition's rows take
        every merge whatever the date."""
        merged = f"SELECT {self.ident('merged_profile_id')} FROM {merges}"
        profile = self.ident("profile_id")
        for staged in stored:
            target = self.qualified(staged.table)
            unclaimed = (
                ""
                if staged.spec.partitioned
                else f" AND NOT EXISTS ({self.later_load(staged.table, ds)})"
            )
            if staged.spec.on_merge == "delete":
                db.execute(f"DELETE FROM {target} WHERE {profile} IN ({merged}){unclaimed}")
            elif staged.spec.on_merge == "repoint":
                for _ in range(MAX_MERGE_HOPS):
                    if not db.execute(self.repoint_sql(target, merges) + unclaimed):
                        break

    def repoint_sql(self, target: str, merges: str) -> str:
        """Point rows of merged-away profiles at their survivor (one hop of a merge chain); ends
        with its WHERE clause, which a caller may extend with ``AND ...``."""
        profile = self.ident("profile_id")
        merged, surviving = self.ident("merged_profile_id"), self.ident("surviving_profile_id")
        return (
            f"UPDATE {target} SET {profile} = (SELECT max(m.{surviving}) FROM {merges} m "
            f"WHERE m.{merged} = {target}.{profile}) "
            f"WHERE {profile} IN (SELECT {merged} FROM {merges})"
        )


def with_key(path: str, spec: TableSpec, out: Path) -> tuple[str, int]:
    """``path`` without the rows whose key is empty; (file to load, rows left out).

    A key column that is not ``nullable_key`` is compared with ``=`` (a NULL matches nothing), so
    such a row could never be updated or removed by a later load: it is left out instead. The
    file is rewritten (streamed, schema kept) only when some row goes.
    """
    names = {name.lower(): name for name in pq.read_schema(path).names}
    required = [names[k] for k in spec.key if k not in spec.nullable_key and k in names]
    if not required:
        return path, 0
    dataset = pads.dataset(path, format="parquet")
    keyed = functools.reduce(operator.and_, [pads.field(c).is_valid() for c in required])
    left_out = dataset.count_rows() - dataset.count_rows(filter=keyed)
    if not left_out:
        return path, 0
    with pq.ParquetWriter(out, dataset.schema) as writer:
        for batch in dataset.to_batches(filter=keyed):
            writer.write_batch(batch)
    return str(out), left_out


def _as_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])
