"""What a diff-syncing destination last delivered, kept in a DuckDB file of its own.

Why a separate file and not the warehouse: the embedded DuckDB warehouse takes one writer at a
time, and delivery tasks run beside the build and other destinations. Each syncing destination
owns ``<work_dir>/state/<destination name>.duckdb`` (or its ``state_path`` option). DuckDB locks
the file, so two runs of the same destination cannot interleave: the second fails at open with
:class:`StateLockedError` instead of corrupting the diff (``DeliverOperator`` waits for the lock
on the triggerer, then retries).

Tables:

- ``sync_state``: one row per (segment, email) the target is known to hold, with the hash of the
  fields sent and whether its consent record is still to be sent.
- ``import_rows``: rows submitted in an import that is not yet confirmed. Only the import's report
  moves them into ``sync_state``, so a crash between import and state update loses nothing: the
  next run finds them here and finishes the job.
- ``sync_failures``: rows the target refused, with the reason and attempts; they are not in
  ``sync_state``, so the next diff offers them again.
- ``suppressed``: addresses the target reports as unsubscribed/suppressed; never sent again.
- ``consent_records``: the consent records the target accepted, so none is sent twice.
- ``address_books``, ``sync_meta``: target ids and watermarks (``last_synced_ds``: the latest run
  date whose members started to go out; an older date is not synced over it, see
  :meth:`SyncStateStore.last_synced_ds`).
- ``sync_runs``: one report per sync (added, changed, removed, rejected, reasons).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb

from audience_profiles.destinations.drop import DELIVERY_MEMORY_LIMIT
from audience_profiles.warehouse.duckdb import rollback

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sync_state (
    segment_id VARCHAR NOT NULL,
    email VARCHAR NOT NULL,
    profile_id VARCHAR,
    address_book_id BIGINT,
    row_hash VARCHAR NOT NULL,
    consent_at TIMESTAMP,
    consent_text VARCHAR,
    consent_url VARCHAR,
    consent_pending BOOLEAN NOT NULL DEFAULT false,
    synced_at TIMESTAMP NOT NULL,
    sync_id VARCHAR NOT NULL,
    PRIMARY KEY (segment_id, email)
);
CREATE TABLE IF NOT EXISTS import_rows (
    import_id VARCHAR NOT NULL,
    segment_id VARCHAR NOT NULL,
    email VARCHAR NOT NULL,
    profile_id VARCHAR,
    address_book_id BIGINT NOT NULL,
    row_hash VARCHAR NOT NULL,
    consent_at TIMESTAMP,
    consent_text VARCHAR,
    consent_url VARCHAR,
    submitted_at TIMESTAMP NOT NULL,
    sync_id VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS sync_failures (
    segment_id VARCHAR NOT NULL,
    email VARCHAR NOT NULL,
    profile_id VARCHAR,
    reason VARCHAR NOT NULL,
    attempts INTEGER NOT NULL,
    first_failed_at TIMESTAMP NOT NULL,
    last_failed_at TIMESTAMP NOT NULL,
    sync_id VARCHAR NOT NULL,
    PRIMARY KEY (segment_id, email)
);
CREATE TABLE IF NOT EXISTS suppressed (
    email VARCHAR PRIMARY KEY,
    reason VARCHAR,
    suppressed_at TIMESTAMP,
    source VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS address_books (
    segment_id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    address_book_id BIGINT NOT NULL
);
-- A segment's earlier books (its address_book renamed in pipeline.yml): emptied of the
-- segment's members once they are confirmed in the new one, then forgotten.
CREATE TABLE IF NOT EXISTS retired_address_books (
    segment_id VARCHAR NOT NULL,
    address_book_id BIGINT NOT NULL,
    PRIMARY KEY (segment_id, address_book_id)
);
-- Consent records Dotdigital accepted: a contact keeps them when taken out of a book, so one
-- coming back with the same opt-in is owed none (docs/activation.md, "Consent rules").
CREATE TABLE IF NOT EXISTS consent_records (
    email VARCHAR NOT NULL,
    consent_text VARCHAR NOT NULL,
    consent_at TIMESTAMP NOT NULL,
    PRIMARY KEY (email, consent_text, consent_at)
);
CREATE TABLE IF NOT EXISTS sync_meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS sync_runs (
    sync_id VARCHAR PRIMARY KEY,
    destination VARCHAR NOT NULL,
    run_id VARCHAR,
    ds VARCHAR,
    mode VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP NOT NULL,
    added BIGINT NOT NULL,
    changed BIGINT NOT NULL,
    removed BIGINT NOT NULL,
    rejected BIGINT NOT NULL,
    reasons JSON,
    skipped JSON,
    segments JSON,
    error VARCHAR
);
"""


class StateLockedError(RuntimeError):
    """The state file is open in another process (another run of the same destination)."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class SyncStateStore:
    """Open (and create) the state file; use as a context manager."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # bounded as every delivery-side DuckDB (spilling beside the file, <path>.tmp/)
            self.con = duckdb.connect(
                str(self.path), config={"memory_limit": DELIVERY_MEMORY_LIMIT}
            )
        except duckdb.IOException as exc:
            raise StateLockedError(
                f"sync state {self.path} is in use by another process ({exc}); "
                "runs of one destination must not overlap"
            ) from exc
        self.con.execute("SET TimeZone = 'UTC'")  # TIMESTAMPTZ inputs become naive UTC
        had_records = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'consent_records'"
        ).fetchone()[0]
        self.con.execute(_SCHEMA)
        if not had_records:  # a state file from before the table: the records it knows sent
            self.con.execute(
                """
                INSERT OR IGNORE INTO consent_records
                SELECT DISTINCT email, consent_text, consent_at FROM sync_state
                WHERE NOT consent_pending AND consent_text IS NOT NULL AND consent_at IS NOT NULL
                """
            )

    def __enter__(self) -> SyncStateStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.con.close()

    # -- imports ------------------------------------------------------------------------------

    def record_import(self, import_id: str, sync_id: str, rows_sql: str) -> int:
        """Remember what an import carries (``rows_sql`` selects the import_rows columns)."""
        self.con.execute(
            f"""
            INSERT INTO import_rows
            SELECT ? AS import_id, segment_id, email, profile_id, address_book_id, row_hash,
                   consent_at, consent_text, consent_url, ? AS submitted_at, ? AS sync_id
            FROM ({rows_sql})
            """,
            [import_id, utcnow(), sync_id],
        )
        return self.con.execute(
            "SELECT count(*) FROM import_rows WHERE import_id = ?", [import_id]
        ).fetchone()[0]

    def pending_imports(self) -> list[str]:
        rows = self.con.execute(
            "SELECT import_id FROM import_rows GROUP BY import_id ORDER BY min(submitted_at)"
        ).fetchall()
        return [r[0] for r in rows]

    def apply_import(
        self,
        import_id: str,
        sync_id: str,
        faults: dict[str, str],
        suppression_reasons: Iterable[str],
    ) -> dict[str, dict[str, int]]:
        """Move an import's confirmed rows into ``sync_state``; file its faults.

        ``faults`` maps email -> Dotdigital's reason. Faults whose reason is a suppression go to
        ``suppressed`` (never retried); other faults go to ``sync_failures`` (retried next run).
        Returns counts per segment: ``{segment: {"added", "changed", "rejected"}}``.
        """
        now = utcnow()
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                "CREATE OR REPLACE TEMP TABLE import_faults (email VARCHAR, reason VARCHAR)"
            )
            if faults:
                con.executemany(
                    "INSERT INTO import_faults VALUES (?, ?)",
                    [(e.lower(), r) for e, r in faults.items()],
                )
            con.execute(
                """
                CREATE OR REPLACE TEMP TABLE confirmed AS
                SELECT r.*, s.email IS NOT NULL AS existed,
                       r.consent_text IS NOT NULL AND r.consent_at IS NOT NULL AND (
                           s.email IS NULL OR s.consent_pending
                           OR s.consent_at IS DISTINCT FROM r.consent_at
                       ) AND k.email IS NULL AS consent_pending
                FROM import_rows r
                LEFT JOIN sync_state s USING (segment_id, email)
                LEFT JOIN consent_records k
                  ON k.email = r.email AND k.consent_text = r.consent_text
                 AND k.consent_at = r.consent_at
                WHERE r.import_id = ? AND r.email NOT IN (SELECT email FROM import_faults)
                """,
                [import_id],
            )
            con.execute(
                """
                INSERT OR REPLACE INTO sync_state
                SELECT segment_id, email, profile_id, address_book_id, row_hash, consent_at,
                       consent_text, consent_url, consent_pending, ?, ?
                FROM confirmed
                """,
                [now, sync_id],
            )
            con.execute(
                """
                DELETE FROM sync_failures f USING confirmed c
                WHERE f.segment_id = c.segment_id AND f.email = c.email
                """
            )
            reasons = list(suppression_reasons)
            con.execute(
                """
                INSERT OR REPLACE INTO suppressed
                SELECT f.email, f.reason, ?, 'import report' FROM import_faults f
                WHERE list_contains(?, f.reason)
                """,
                [now, reasons],
            )
            con.execute(
                """
                INSERT INTO sync_failures
                SELECT r.segment_id, r.email, r.profile_id, f.reason, 1, ?, ?, ?
                FROM import_rows r JOIN import_faults f USING (email)
                WHERE r.import_id = ? AND NOT list_contains(?, f.reason)
                ON CONFLICT (segment_id, email) DO UPDATE SET
                    reason = excluded.reason, attempts = sync_failures.attempts + 1,
                    last_failed_at = excluded.last_failed_at, sync_id = excluded.sync_id,
                    profile_id = excluded.profile_id
                """,
                [now, now, sync_id, import_id, reasons],
            )
            counts = con.execute(
                """
                SELECT segment_id,
                       count(*) FILTER (WHERE c.email IS NOT NULL AND NOT c.existed),
                       count(*) FILTER (WHERE c.email IS NOT NULL AND c.existed),
                       count(*) FILTER (WHERE c.email IS NULL)
                FROM import_rows r LEFT JOIN confirmed c USING (segment_id, email)
                WHERE r.import_id = ?
                GROUP BY segment_id
                """,
                [import_id],
            ).fetchall()
            con.execute("DELETE FROM import_rows WHERE import_id = ?", [import_id])
            con.execute("COMMIT")
        except BaseException:
            rollback(con)
            raise
        return {seg: {"added": a, "changed": c, "rejected": r} for seg, a, c, r in counts}

    def discard_import(self, import_id: str) -> dict[str, int]:
        """Forget an import that failed as a whole; its rows stay unsynced and are retried."""
        counts = self.con.execute(
            "SELECT segment_id, count(*) FROM import_rows WHERE import_id = ? GROUP BY ALL",
            [import_id],
        ).fetchall()
        self.con.execute("DELETE FROM import_rows WHERE import_id = ?", [import_id])
        return dict(counts)

    # -- removals and consent -----------------------------------------------------------------

    def forget(self, segment_id: str, emails: list[str]) -> None:
        """Drop members taken out of the target."""
        self.con.execute(
            "DELETE FROM sync_state WHERE segment_id = ? AND list_contains(?, email)",
            [segment_id, emails],
        )

    def profiles_of(self, segment_id: str) -> list[tuple[str, str]]:
        """(profile id, email) of the segment's members the target holds."""
        return self.con.execute(
            "SELECT profile_id, email FROM sync_state WHERE segment_id = ? ORDER BY profile_id",
            [segment_id],
        ).fetchall()

    def dropped_segments(self, configured: list[str]) -> dict[str, set[int]]:
        """Segments the state knows that are not in ``configured``, with every book they may
        have members in (theirs, earlier ones, and those their members are recorded in). A
        segment with an import awaiting confirmation waits for it (it could add members)."""
        rows = self.con.execute(
            """
            SELECT segment_id, address_book_id FROM sync_state
            UNION SELECT segment_id, address_book_id FROM address_books
            UNION SELECT segment_id, address_book_id FROM retired_address_books
            UNION SELECT segment_id, NULL FROM sync_failures
            """
        ).fetchall()
        waiting = {r[0] for r in self.con.execute("SELECT segment_id FROM import_rows").fetchall()}
        dropped: dict[str, set[int]] = {}
        for segment_id, book_id in rows:
            if segment_id in configured or segment_id in waiting:
                continue
            books = dropped.setdefault(segment_id, set())
            if book_id is not None:
                books.add(int(book_id))
        return dropped

    def forget_segment(self, segment_id: str) -> None:
        """Forget a segment no longer synced: its members, failures and books."""
        for table in ("sync_state", "sync_failures", "address_books", "retired_address_books"):
            self.con.execute(f"DELETE FROM {table} WHERE segment_id = ?", [segment_id])

    def pending_consent(self) -> list[tuple[str, str, dt.datetime, str, str | None]]:
        """(segment, email, consent_at, consent_text, consent_url) still owed a consent record."""
        return self.con.execute(
            """
            SELECT segment_id, email, consent_at, consent_text, consent_url FROM sync_state
            WHERE consent_pending ORDER BY email, segment_id
            """
        ).fetchall()

    def consent_sent(self, sent: list[tuple[str, str]]) -> None:
        """Mark (segment, email) rows' consent records sent, and remember the records: one
        statement for many rows (one per row scanned the table each time: 4 ms a row at 280k
        rows, hours for a first sync)."""
        if not sent:
            return
        self.con.execute(
            """
            CREATE OR REPLACE TEMP TABLE consent_sent AS
            SELECT unnest(CAST(? AS VARCHAR[])) AS segment_id,
                   unnest(CAST(? AS VARCHAR[])) AS email
            """,
            [[seg for seg, _ in sent], [email for _, email in sent]],
        )
        self.con.execute(
            """
            INSERT OR IGNORE INTO consent_records
            SELECT DISTINCT s.email, s.consent_text, s.consent_at
            FROM sync_state s JOIN consent_sent USING (segment_id, email)
            WHERE s.consent_text IS NOT NULL AND s.consent_at IS NOT NULL
            """
        )
        self.con.execute(
            """
            UPDATE sync_state SET consent_pending = false FROM consent_sent AS sent
            WHERE sync_state.segment_id = sent.segment_id AND sync_state.email = sent.email
            """
        )

    # -- erasure ------------------------------------------------------------------------------

    def emails_of_profiles(self, profile_ids: list[str]) -> set[str]:
        """Every email the state holds for these profiles (synced, in flight or failed)."""
        rows = self.con.execute(
            """
            SELECT email FROM sync_state WHERE list_contains(?, profile_id)
            UNION SELECT email FROM import_rows WHERE list_contains(?, profile_id)
            UNION SELECT email FROM sync_failures WHERE list_contains(?, profile_id)
            """,
            [profile_ids] * 3,
        ).fetchall()
        return {r[0] for r in rows}

    def in_flight(self, emails: list[str]) -> set[str]:
        """Which of ``emails`` an unconfirmed import carries."""
        rows = self.con.execute(
            "SELECT DISTINCT email FROM import_rows WHERE list_contains(?, email)", [emails]
        ).fetchall()
        return {r[0] for r in rows}

    def address_book_ids(self, emails: list[str]) -> set[int]:
        """Every address book id the state knows: those of these addresses (synced, in flight,
        failed) and every segment's book it has recorded."""
        rows = self.con.execute(
            """
            SELECT address_book_id FROM sync_state WHERE list_contains(?, email)
            UNION SELECT address_book_id FROM import_rows WHERE list_contains(?, email)
            UNION SELECT b.address_book_id FROM sync_failures f JOIN address_books b
                USING (segment_id) WHERE list_contains(?, f.email)
            UNION SELECT address_book_id FROM address_books
            UNION SELECT address_book_id FROM retired_address_books
            """,
            [emails] * 3,
        ).fetchall()
        return {int(r[0]) for r in rows if r[0] is not None}

    def erase(self, emails: list[str]) -> None:
        """Forget these addresses everywhere but the suppression list of the target's own."""
        for table in ("sync_state", "sync_failures", "consent_records"):
            self.con.execute(f"DELETE FROM {table} WHERE list_contains(?, email)", [emails])

    # -- suppressions -------------------------------------------------------------------------

    def suppressed_since(self) -> dt.date | None:
        value = self.meta("suppressed_fetched_on")
        return dt.date.fromisoformat(value) if value else None

    def store_suppressed(
        self, rows: list[tuple[str, str, dt.datetime | None]], fetched_on: dt.date, replace: bool
    ) -> None:
        """Add (email, reason, when) suppressions; ``replace`` drops the earlier list first."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            if replace:
                self.con.execute("DELETE FROM suppressed")
            if rows:
                self.con.executemany(
                    "INSERT OR REPLACE INTO suppressed VALUES (lower(?), ?, ?, 'suppressed-since')",
                    rows,
                )
            self.set_meta("suppressed_fetched_on", fetched_on.isoformat())
            self.con.execute("COMMIT")
        except BaseException:
            rollback(self.con)
            raise

    # -- run dates ----------------------------------------------------------------------------

    def last_synced_ds(self) -> dt.date | None:
        """The latest run date whose members started to go to the target, if any.

        Syncing an older date after it would roll the target back (re-add people who opted out
        since), so the destination skips such a date. State files written before this watermark
        existed have none: the latest date of a ``success`` or ``pending`` run in ``sync_runs``
        stands in for it (both sent that date's members; a failed run may not have).
        """
        value = self.meta("last_synced_ds")
        if value is None:
            dates = self.con.execute(
                "SELECT DISTINCT ds FROM sync_runs WHERE status IN ('success', 'pending')"
            ).fetchall()
            parsed = [_as_date(d) for (d,) in dates]
            return max((d for d in parsed if d is not None), default=None)
        return _as_date(value)

    def claim_ds(self, ds: str) -> dt.date:
        """Record that ``ds``'s members are going out; the watermark only moves forward."""
        day = dt.date.fromisoformat(ds)
        last = self.last_synced_ds()
        if last is None or day > last:
            self.set_meta("last_synced_ds", day.isoformat())
            return day
        if self.meta("last_synced_ds") is None:  # state from before the watermark: store it
            self.set_meta("last_synced_ds", last.isoformat())
        return last

    # -- small things -------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.con.execute("SELECT value FROM sync_meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO sync_meta VALUES (?, ?)", [key, value])

    def address_book(self, segment_id: str) -> tuple[str, int] | None:
        row = self.con.execute(
            "SELECT name, address_book_id FROM address_books WHERE segment_id = ?", [segment_id]
        ).fetchone()
        return (row[0], row[1]) if row else None

    def set_address_book(self, segment_id: str, name: str, address_book_id: int) -> None:
        """Record the segment's book; the one it had before, if another, is retired."""
        earlier = self.address_book(segment_id)
        if earlier and earlier[1] != address_book_id:
            self.con.execute(
                "INSERT OR IGNORE INTO retired_address_books VALUES (?, ?)",
                [segment_id, earlier[1]],
            )
        self.con.execute(
            "DELETE FROM retired_address_books WHERE segment_id = ? AND address_book_id = ?",
            [segment_id, address_book_id],
        )
        self.con.execute(
            "INSERT OR REPLACE INTO address_books VALUES (?, ?, ?)",
            [segment_id, name, address_book_id],
        )

    def retired_address_books(self, segment_id: str) -> list[int]:
        rows = self.con.execute(
            "SELECT address_book_id FROM retired_address_books WHERE segment_id = ? ORDER BY 1",
            [segment_id],
        ).fetchall()
        return [int(r[0]) for r in rows]

    def moved_from(self, segment_id: str, address_book_id: int) -> list[str]:
        """The segment's members confirmed in a book other than this (retired) one."""
        rows = self.con.execute(
            "SELECT email FROM sync_state WHERE segment_id = ? "
            "AND address_book_id IS DISTINCT FROM ? ORDER BY email",
            [segment_id, address_book_id],
        ).fetchall()
        return [r[0] for r in rows]

    def forget_retired_book(self, segment_id: str, address_book_id: int) -> None:
        """Forget a retired book once no member of the segment is recorded in it, and no import
        into it waits for confirmation."""
        self.con.execute(
            """
            DELETE FROM retired_address_books r
            WHERE r.segment_id = ? AND r.address_book_id = ?
              AND NOT EXISTS (SELECT 1 FROM sync_state s WHERE s.segment_id = r.segment_id
                              AND s.address_book_id = r.address_book_id)
              AND NOT EXISTS (SELECT 1 FROM import_rows i WHERE i.segment_id = r.segment_id
                              AND i.address_book_id = r.address_book_id)
            """,
            [segment_id, address_book_id],
        )

    def record_run(self, **run: Any) -> None:
        """One row of ``sync_runs``; JSON columns take plain dicts."""
        for key in ("reasons", "skipped", "segments"):
            run[key] = json.dumps(run.get(key) or {}, sort_keys=True)
        columns = ", ".join(run)
        marks = ", ".join("?" for _ in run)
        self.con.execute(
            f"INSERT OR REPLACE INTO sync_runs ({columns}) VALUES ({marks})", list(run.values())
        )


def _as_date(value: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(value)[:10]) if value else None
    except ValueError:
        return None
