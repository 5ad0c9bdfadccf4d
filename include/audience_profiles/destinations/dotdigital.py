"""``dotdigital``: segment members into Dotdigital address books, consent-gated and diff-synced.

pipeline.yml (see docs/activation.md for every option)::

    - name: dotdigital
      kind: dotdigital
      conn_id: dotdigital_default
      tables: [segment_memberships, audience_profiles]
      segments:
        manchester_blue_fans: {address_book: "AP Manchester Blue fans"}
        partner_marketing: {address_book: "AP partner marketing", partner: true}
      consent:
        text: "Yes, send me news from the club."
        partner_text: "Yes, send me offers from the club's partners."
      data_fields: {TEAM: "answers.Which team do you support?", LASTINTERACTION: last_seen}

One sync, in order:

1. finish imports an earlier, interrupted sync left behind (``import_rows`` in the state file);
2. refresh the suppression list (``GET /v2/contacts/suppressed-since``) into the state file;
3. build the wanted members per segment: profiles whose consent column is explicitly true
   (``optin_1``; ``optin_2`` for ``partner: true`` segments), with an email, not suppressed;
4. diff against ``sync_state``: added and changed rows (a hash of the mapped fields and the
   consent time) go out as CSV bulk imports; only what an import's fault report confirms is
   written back to ``sync_state``; faults are kept in ``sync_failures`` and retried next run;
5. members no longer wanted are taken out of the address book (unless another segment syncing
   to that book wants them), and so are those of segments no longer configured;
6. consent records (text, time, URL) go to the v3 contact API for new opt-ins;
7. one ``sync_runs`` row and the DeliveryReport say what happened.

Run dates only move forward. The state remembers the latest run date whose members started to go
out (``last_synced_ds`` in ``sync_meta``, claimed right before step 4). Delivering an older date
after it (a cleared task, a backfill, catch-up runs finishing out of order) would roll the address
books back: re-add a fan who opted out in the newer run. Such a delivery does steps 1, 2 and 6
only, which move nothing backwards (they finish imports already sent, refresh what Dotdigital
says is suppressed, send consent records owed for contacts already in the books), leaves the
address books as the newer date made them, and says so in ``details["snapshots_kept_newer"]``
(the segments kept, as the warehouse destinations name the snapshot tables they keep) and a
``sync_runs`` row with status ``kept_newer``. The same date again syncs as usual: retries and
the deferred rounds of one delivery re-enter ``deliver`` with the same date.

Crash safety: an import is upserted by email on Dotdigital's side, and state moves only from an
import's report. Whatever point a sync dies at, the next one either finishes the recorded import
or sends the same rows again; no contact is lost or doubled.

Waiting for imports: ``deliver`` polls them itself (:func:`wait_for_imports`) unless
``defer_imports: true``. Then it returns right after submitting, with the import ids in
``details["pending_imports"]`` (``sync_runs.status`` "pending"); a deferrable task waits on them
with :class:`~audience_profiles.triggers.dotdigital.DotdigitalImportTrigger`, freeing its worker
slot, and calls ``deliver`` again, which confirms them (step 1) and finishes the sync.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audience_profiles.config import (
    PROFILE_COLUMNS,
    ConfigError,
    DestinationConfig,
    PipelineConfig,
    default_state_path,
    reject_unknown,
)
from audience_profiles.destinations.base import (
    ERASED,
    FAILED,
    SKIPPED,
    DeliveryReport,
    Destination,
    ErasureRequest,
    RunInfo,
    erasure_status,
    register,
)
from audience_profiles.destinations.drop import render_parts
from audience_profiles.destinations.sync_state import SyncStateStore, utcnow
from audience_profiles.errors import NotRetryable
from audience_profiles.hooks.dotdigital import (
    IMPORT_FINISHED,
    MAX_ACTIVE_IMPORTS,
    MAX_IMPORT_BYTES,
    DotdigitalApiError,
    DotdigitalHook,
)
from audience_profiles.privacy import sql_normalised
from audience_profiles.redaction import redactor
from audience_profiles.triggers.dotdigital import wait_for_imports

log = logging.getLogger(__name__)

# Import fault reasons that mean "this address must not be mailed": remembered, never retried.
SUPPRESSION_FAULTS = (
    "Globally Suppressed",
    "Blocked",
    "Unsubscribed",
    "Hard Bounced",
    "Isp Complaints",
    "Domain Suppressed",
    "Mail Blocked",
    "Suppressed by you",
)
DEFAULT_DATA_FIELDS = {"FIRSTNAME": "first_name", "LASTNAME": "last_name"}
_DATA_FIELD_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,19}$")
_NUMERIC_TYPES = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "FLOAT",
    "DOUBLE",
    "DECIMAL",
)
_NUMERIC_TYPES += tuple("U" + t for t in _NUMERIC_TYPES[:5]) + ("REAL",)
SUPPRESSIONS_FROM = dt.date(2000, 1, 1)  # first fetch (and full re-sync) reads the whole list
DRY_RUN_SAMPLE = 20  # ids printed per change kind and segment in a dry run
# How often accepted consent records are written to the state while they are being sent.
CONSENT_FLUSH_SECONDS = 5.0


class DotdigitalImportFailed(RuntimeError):
    """An import ended in a failure status (watchdog, invalid file...); its rows stay unsynced."""


class ImportFileTooLarge(RuntimeError, NotRetryable):
    """One contact's row is over Dotdigital's import limit: no file can carry it."""


class DotdigitalDeliveryError(RuntimeError):
    """A delivery's error whose text could not be redacted in place (its type builds the text
    from other parts: an OSError, a requests or aiohttp error), raised instead with its type's
    name and the redacted text."""


class _NotRetryableDeliveryError(DotdigitalDeliveryError, NotRetryable):
    """The same, for an error a retry would only repeat (``errors.NotRetryable``)."""


def redacted(exc: Exception, known: Iterable[tuple[str, str]] = ()) -> Exception:
    """``exc`` as the task log, the alert and ``sync_runs.error`` may keep it: without email
    addresses and the ``known`` (label, value) pairs (see :func:`audience_profiles.redaction.redact`).

    ``exc`` itself, edited, when its text is its one argument (``DotdigitalApiError``, a
    ``ValueError``, DuckDB's errors): its type and stack stay. Else a
    :class:`DotdigitalDeliveryError` with the redacted text, to raise ``from None``. Errors chained
    to it are printed with it (a failed task's traceback): if one quotes someone, the chain goes.
    """
    clean = redactor(known)
    text = str(exc)
    safe = clean(text)
    if isinstance(exc, DotdigitalApiError):
        exc.message = clean(exc.message)  # the consent loop counts refusals by it
    if any(clean(str(e)) != str(e) for e in _chained(exc)):
        exc.__cause__, exc.__context__, exc.__suppress_context__ = None, None, True
    if safe == text:
        return exc
    with suppress(Exception):  # a type that refuses new args is wrapped below
        exc.args = (safe,)
    if str(exc) == safe:
        return exc
    kind = _NotRetryableDeliveryError if isinstance(exc, NotRetryable) else DotdigitalDeliveryError
    return kind(f"{type(exc).__name__}: {safe}")


def _chained(exc: BaseException) -> Iterator[BaseException]:
    seen = {id(exc)}
    link = exc.__cause__ or exc.__context__
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


@contextmanager
def _redacting(known: Callable[[], Iterable[tuple[str, str]]]) -> Iterator[None]:
    """Errors leave the block redacted (:func:`redacted`) with the personal values ``known()``
    gives, read only when an error comes: nothing is spent on a call that succeeds."""
    try:
        yield
    except Exception as exc:
        try:
            values = list(known())
        except Exception:  # the state could not say (a failed statement): addresses still go
            log.warning("Could not read the batch's values to redact an error with")
            values = []
        error = redacted(exc, values)
        if error is exc:
            raise
        # Raised from None, the stack would be lost: logged here without the message.
        log.error(
            "%s (its text redacted, raised below) was raised at:\n%s",
            type(exc).__name__,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        raise error from None


def _personal_fields(opts: DotdigitalOptions) -> list[str]:
    """The data fields whose values may name someone: text (names, external ids, answers) and
    times. Counts and yes/no fields name no one, and taking every "3" or "true" out of an error
    would take its status codes and counts with them."""
    impersonal = ("BOOLEAN", *_NUMERIC_TYPES)
    return [
        name
        for name, source in opts.data_fields.items()
        if not PROFILE_COLUMNS.get(source, "VARCHAR").startswith(impersonal)
    ]


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _lit(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def _flag(opts: dict, key: str, where: str) -> bool:
    """A yes/no option, strictly a YAML true or false, as config._flag reads every other one:
    a quoted "false" must not switch on a full re-sync, nor "no" mean one thing here and fail
    the load elsewhere."""
    value = opts.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false (unquoted), not {value!r}")
    return value


def _given(value: Any, default: float) -> Any:
    """A number option's value, or ``default`` when it is left out or null: pipeline.yml's load
    checks the numbers given and passes a null as left out (``config._positive_number``)."""
    return default if value is None else value


@dataclass(frozen=True)
class SegmentTarget:
    segment_id: str
    address_book: str
    consent_column: str
    consent_text: str | None
    consent_url: str | None


# The keys of one entry under ``segments`` and of ``consent`` (docs/activation.md).
SEGMENT_KEYS = ("address_book", "consent_column", "consent_text", "consent_url", "partner")
CONSENT_KEYS = ("column", "partner_column", "partner_text", "text", "url")


@dataclass(frozen=True)
class DotdigitalOptions:
    segments: tuple[SegmentTarget, ...]
    data_fields: dict[str, str]
    state_path: Path
    full_resync: bool = False
    dry_run: bool = False
    defer_imports: bool = False
    max_file_mb: float = 20.0
    max_active_imports: int = 10
    poll_interval: float = 10.0
    import_timeout: float = 3600.0
    max_attempts: int = 6
    backoff_base: float = 1.0
    max_rate_limit_wait: float = 900.0

    @classmethod
    def from_config(cls, config: DestinationConfig, pipeline: PipelineConfig) -> DotdigitalOptions:
        opts = config.options
        where = f"{pipeline.source_file}: destination {config.name!r}"
        if config.pii != "plain":
            # Contacts are keyed by their email and carry their names: hashed or omitted, there
            # is nothing to sync, and ignoring the setting would send what it says to withhold.
            raise ConfigError(
                f"{where}: pii: {config.pii!r} cannot apply to Dotdigital, which keys contacts by "
                "their email and is sent their names (FIRSTNAME, LASTNAME); leave pii out (plain)"
            )
        what = f"in destination {config.name!r} (kind dotdigital)"
        consent = opts.get("consent") or {}
        if not isinstance(consent, dict):
            raise ConfigError(f"{where}: consent must be a mapping ({', '.join(CONSENT_KEYS)})")
        reject_unknown(consent, CONSENT_KEYS, "consent.", pipeline.source_file, what)
        segments_raw = opts.get("segments")
        if not isinstance(segments_raw, dict) or not segments_raw:
            raise ConfigError(f"{where}: segments must map segment ids to address books")
        segments = []
        for segment_id, seg in segments_raw.items():
            seg = seg or {}
            if not isinstance(seg, dict):
                raise ConfigError(
                    f"{where}: segments.{segment_id} must be a mapping "
                    f"({', '.join(SEGMENT_KEYS)}), not {seg!r}"
                )
            # A typo would sync to a book named after the segment, or send consent without text.
            reject_unknown(seg, SEGMENT_KEYS, f"segments.{segment_id}.", pipeline.source_file, what)
            partner = _flag(seg, "partner", f"{where}: segments.{segment_id}")
            default_column = (
                consent.get("partner_column", "optin_2")
                if partner
                else consent.get("column", "optin_1")
            )
            default_text = consent.get("partner_text") if partner else consent.get("text")
            segments.append(
                SegmentTarget(
                    segment_id=str(segment_id),
                    address_book=str(seg.get("address_book") or segment_id),
                    consent_column=str(seg.get("consent_column", default_column)),
                    consent_text=seg.get("consent_text", default_text),
                    consent_url=seg.get("consent_url", consent.get("url")),
                )
            )
        data_fields = {**DEFAULT_DATA_FIELDS, **(opts.get("data_fields") or {})}
        for name, source in data_fields.items():
            if not _DATA_FIELD_NAME.match(str(name)):
                raise ConfigError(
                    f"{where}: data field {name!r} must be upper case letters, digits and _ "
                    "(at most 20, starting with a letter), as Dotdigital names them"
                )
            if '"' in str(source):
                raise ConfigError(f"{where}: data field {name}: source {source!r} contains a quote")
        state_path = opts.get("state_path") or default_state_path(pipeline.work_dir, config.name)
        max_active = int(_given(opts.get("max_active_imports"), 10))
        if not 1 <= max_active <= MAX_ACTIVE_IMPORTS:
            raise ConfigError(f"{where}: max_active_imports must be 1..{MAX_ACTIVE_IMPORTS}")
        max_file_mb = float(_given(opts.get("max_file_mb"), 20))
        if not 0 < max_file_mb < MAX_IMPORT_BYTES / 1024 / 1024:
            raise ConfigError(
                f"{where}: max_file_mb must be above 0 and below 47.6 (MiB: Dotdigital's import "
                "limit is 50 MB)"
            )
        return cls(
            segments=tuple(segments),
            data_fields={str(k): str(v) for k, v in data_fields.items()},
            state_path=Path(state_path),  # resolved as pipeline.yml loaded
            full_resync=_flag(opts, "full_resync", where),
            dry_run=_flag(opts, "dry_run", where),
            defer_imports=_flag(opts, "defer_imports", where),
            max_file_mb=max_file_mb,
            max_active_imports=max_active,
            poll_interval=float(_given(opts.get("poll_interval"), 10)),
            import_timeout=float(_given(opts.get("import_timeout"), 3600)),
            max_attempts=int(_given(opts.get("max_attempts"), 6)),
            backoff_base=float(_given(opts.get("backoff_base"), 1.0)),
            max_rate_limit_wait=float(_given(opts.get("max_rate_limit_wait"), 900)),
        )


def check_profile_columns(config: DestinationConfig, pipeline: PipelineConfig) -> None:
    """Refuse a consent column or data field source that audience_profiles does not have (a
    consent column must be yes/no), naming the key. wait_for_landing calls it after
    :meth:`DotdigitalOptions.from_config`, so the mistake fails the run's first task instead of
    this delivery after the whole build (``_build_desired`` checks again, against the export it
    reads). Not part of ``from_config``: an erasure reads the options too, and must not wait on a
    column it does not use."""
    opts, columns = config.options, PROFILE_COLUMNS
    where = f"{pipeline.source_file}: destination {config.name!r}"
    consent = opts.get("consent") or {}
    named = [(f"consent.{k}", consent[k]) for k in ("column", "partner_column") if k in consent]
    named += [
        (f"segments.{segment_id}.consent_column", seg["consent_column"])
        for segment_id, seg in (opts.get("segments") or {}).items()
        if isinstance(seg, dict) and "consent_column" in seg
    ]
    for key, column in named:
        if columns.get(str(column)) != "BOOLEAN":  # else the sync's IS TRUE fails, or never holds
            yes_no = sorted(c for c, kind in columns.items() if kind == "BOOLEAN")
            raise ConfigError(
                f"{where}: {key}: {column!r} is not a yes/no column of audience_profiles "
                f"({', '.join(yes_no)})"
            )
    for name, source in (opts.get("data_fields") or {}).items():
        if not str(source).startswith("answers.") and str(source) not in columns:
            raise ConfigError(
                f"{where}: data_fields.{name}: {source!r} is neither an audience_profiles column "
                f"({', '.join(sorted(columns))}) nor answers.<element title>"
            )


@dataclass
class SyncTally:
    """Counts for the run report, per segment and overall."""

    segments: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    reasons: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    pending_imports: list[str] = field(default_factory=list)

    def add(self, segment_id: str, **counts: int) -> None:
        self.segments[segment_id].update(counts)

    def total(self, key: str) -> int:
        return sum(c[key] for c in self.segments.values())

    def totals(self) -> dict[str, int]:
        return {k: self.total(k) for k in ("added", "changed", "removed", "rejected")}


@register("dotdigital")
class DotdigitalDestination(Destination):
    # read by DotdigitalOptions.from_config (segments also by segments.py)
    OPTIONS = frozenset(
        {
            "segments",
            "consent",
            "data_fields",
            "state_path",
            "full_resync",
            "dry_run",
            "defer_imports",
            "max_file_mb",
            "max_active_imports",
            "poll_interval",
            "import_timeout",
            "max_attempts",
            "backoff_base",
            "max_rate_limit_wait",
        }
    )

    def deliver(self, run: RunInfo, tables: dict[str, str]) -> DeliveryReport:
        opts = DotdigitalOptions.from_config(self.config, self.pipeline)
        missing = {"segment_memberships", "audience_profiles"} - tables.keys()
        if missing:
            raise ConfigError(
                f"{self.pipeline.source_file}: destination {self.name!r} needs tables "
                f"{sorted(missing)}; add them to its tables: list"
            )
        sync_id = str(uuid.uuid4())
        mode = "dry_run" if opts.dry_run else "full_resync" if opts.full_resync else "diff"
        started = utcnow()
        tally = SyncTally()
        with SyncStateStore(opts.state_path) as store:
            newer = store.last_synced_ds()
            kept_newer = newer is not None and dt.date.fromisoformat(run.ds) < newer
            try:
                # Any error, whatever raised it, without addresses (a batch's own values went
                # where it was sent): what is recorded is what the task log and alert show.
                with _redacting(lambda: ()):
                    if kept_newer:
                        self._keep_newer(store, opts, run, newer, tally, sync_id)
                    elif opts.dry_run:
                        self._dry_run(store, opts, tables, tally)
                    else:
                        self._sync(store, opts, run, tables, tally, sync_id)
            except Exception as exc:
                self._record(store, run, sync_id, mode, "failed", started, tally, str(exc))
                raise
            if opts.dry_run:
                status = "dry_run"
            elif kept_newer:
                status = "kept_newer"
            else:
                status = "pending" if tally.pending_imports else "success"
            self._record(store, run, sync_id, mode, status, started, tally, None)
            last_synced = store.last_synced_ds()
        report = self.report()
        report.rows = tally.totals()
        report.details = {
            "sync_id": sync_id,
            "mode": mode,
            "segments": {s: dict(c) for s, c in tally.segments.items()},
            "reasons": dict(tally.reasons),
            "skipped": dict(tally.skipped),
            "state_path": str(opts.state_path),
            "pending_imports": tally.pending_imports,
            # Segments whose address books were left as a newer run date made them.
            "snapshots_kept_newer": [s.segment_id for s in opts.segments] if kept_newer else [],
            "last_synced_ds": last_synced.isoformat() if last_synced else None,
        }
        # Per-contact faults are handled, not failures: the rest of the import counts, the rows
        # wait in sync_failures for the next run and suppressions go to the list. Failing the
        # task for them re-sent the rows on each retry, and every day for an address Dotdigital
        # always refuses. A whole import that fails raises (DotdigitalImportFailed).
        if tally.reasons:
            log.warning(
                "%s: %d contact row(s) rejected, kept for the next run or suppressed: %s",
                self.config.name,
                sum(tally.reasons.values()),
                dict(tally.reasons.most_common(10)),
            )
        return report

    # -- erasure ------------------------------------------------------------------------------

    def erase(self, requests: Sequence[ErasureRequest]) -> dict[str, dict[str, str]]:
        """Take each person's addresses out of every address book they may be in.

        Addresses are the request's emails plus every email the sync state holds for its
        profiles; the books are the configured ones plus every book the sync state knows (so a
        segment dropped from the config or a renamed book is cleared too); the state forgets
        them. The contact itself stays in the Dotdigital account (deleting it there is the
        account owner's call, see docs/privacy.md). A request whose address an unconfirmed
        import carries fails (the import could add it back) and is retried next run.
        """
        opts = DotdigitalOptions.from_config(self.config, self.pipeline)
        if opts.dry_run:
            return {
                r.request_id: erasure_status(SKIPPED, "dry_run: nothing is sent to Dotdigital")
                for r in requests
            }
        statuses: dict[str, dict[str, str]] = {}
        with SyncStateStore(opts.state_path) as store:
            emails = {
                r.request_id: sorted(
                    {e.lower() for e in r.values("email")}
                    | store.emails_of_profiles(list(r.profile_ids))
                )
                for r in requests
            }
            in_flight = store.in_flight(sorted({e for a in emails.values() for e in a}))
            for r in requests:
                if in_flight.intersection(emails[r.request_id]):
                    # Removing now would race the import that adds them back.
                    statuses[r.request_id] = erasure_status(
                        FAILED,
                        "an unconfirmed import carries this contact; retried next run, once "
                        "the import is confirmed",
                    )
            everyone = {
                e for rid, addresses in emails.items() if rid not in statuses for e in addresses
            }
            removed: Counter[str] = Counter()
            if everyone:
                removed = self._remove_everywhere(store, opts, everyone)
                store.erase(sorted(everyone))
        return {
            r.request_id: statuses.get(r.request_id)
            or erasure_status(
                ERASED,
                f"removed from {sum(removed[e] for e in emails[r.request_id])} "
                "address book membership(s)",
            )
            for r in requests
        }

    def _remove_everywhere(
        self, store: SyncStateStore, opts: DotdigitalOptions, everyone: set[str]
    ) -> Counter[str]:
        """Remove ``everyone`` from the configured books and every book the state knows.

        Returns the memberships removed per address.
        """
        hook = self._hook(opts)
        names = {seg.address_book for seg in opts.segments}
        known_ids = store.address_book_ids(sorted(everyone))
        removed: Counter[str] = Counter()
        for book in hook.list_address_books():
            if book["name"] not in names and int(book["id"]) not in known_ids:
                continue
            members = self._members(hook, int(book["id"]))
            self._remove(hook, store, opts, int(book["id"]), members, everyone)
            removed.update(everyone & members.keys())
        return removed

    # -- the sync -----------------------------------------------------------------------------

    def _hook(self, opts: DotdigitalOptions) -> DotdigitalHook:
        return DotdigitalHook(
            self.config.conn_id or DotdigitalHook.default_conn_name,
            max_attempts=opts.max_attempts,
            backoff_base=opts.backoff_base,
            max_rate_limit_wait=opts.max_rate_limit_wait,
        )

    def _sync(
        self,
        store: SyncStateStore,
        opts: DotdigitalOptions,
        run: RunInfo,
        tables: dict[str, str],
        tally: SyncTally,
        sync_id: str,
    ) -> None:
        hook = self._catch_up(store, opts, tally, sync_id)
        fields = self._build_desired(store, opts, tables, tally)
        # From here on this date's members go out: an older date must no longer sync over them.
        store.claim_ds(run.ds)
        self._ensure_data_fields(hook, fields)
        books: dict[str, int] = {}
        for seg in opts.segments:
            books[seg.segment_id] = int(hook.ensure_address_book(seg.address_book)["id"])
            store.set_address_book(seg.segment_id, seg.address_book, books[seg.segment_id])
        self._plan_upserts(store, opts, books)
        with self.pipeline.scratch("dotdigital-") as tmp:
            jobs = self._render_imports(store, opts, list(fields), Path(tmp))
            for start in range(0, len(jobs), opts.max_active_imports):
                import_ids = []
                for segment_id, book_id, path in jobs[start : start + opts.max_active_imports]:
                    part = self._rows_in(segment_id, path)
                    # An answer refusing the file may quote its rows: their names, ids...
                    with _redacting(self._known(store, opts, part)):
                        import_id = hook.import_contacts(book_id, path)["id"]
                        rows = store.record_import(import_id, sync_id, part)
                    log.info("Import %s: %d rows into address book %s", import_id, rows, book_id)
                    import_ids.append(import_id)
                if opts.defer_imports:
                    # The task defers on these (DotdigitalImportTrigger) and delivers again; that
                    # run confirms them first, then carries on where this one stopped.
                    tally.pending_imports = import_ids
                    return
                self._finish_imports(hook, store, opts, import_ids, tally, sync_id)
        for seg in opts.segments:
            self._remove_members(hook, store, seg.segment_id, books, opts, tally)
        self._remove_dropped(hook, store, books, opts, tally)
        self._send_consent(hook, store, opts, tally)

    def _keep_newer(
        self,
        store: SyncStateStore,
        opts: DotdigitalOptions,
        run: RunInfo,
        newer: dt.date,
        tally: SyncTally,
        sync_id: str,
    ) -> None:
        """An older date than the last one synced: do only what moves nothing backwards.

        Its members are not synced: that would re-add people who opted out (or left a segment)
        in the newer run, and take out people who joined. What is still right: confirming
        imports already sent (whichever run sent them; they are in Dotdigital now), refreshing
        the suppression list (Dotdigital's current word) and sending consent records owed for
        contacts already in the address books.
        """
        log.warning(
            "Dotdigital %s: run date %s is older than %s, the latest date synced, so its members "
            "are not synced: the address books keep the newer date's members (syncing an older "
            "date would re-add people who opted out since). Unconfirmed imports, suppressions "
            "and owed consent records are still handled. To sync again, deliver %s or later.",
            self.name,
            run.ds,
            newer.isoformat(),
            newer.isoformat(),
        )
        if opts.dry_run:
            print(
                f"Dotdigital dry run for {self.name!r}: {run.ds} is older than "
                f"{newer.isoformat()}, the latest date synced; a real run would leave the "
                "address books as they are."
            )
            return
        hook = self._catch_up(store, opts, tally, sync_id)
        self._send_consent(hook, store, opts, tally)

    def _catch_up(
        self, store: SyncStateStore, opts: DotdigitalOptions, tally: SyncTally, sync_id: str
    ) -> DotdigitalHook:
        """Steps 1 and 2 of every sync: finish imports an earlier sync left unconfirmed, then
        refresh the suppression list. Returns the hook the rest of the sync uses."""
        hook = self._hook(opts)
        pending = store.pending_imports()
        if pending:
            log.info("Finishing %d import(s) an earlier sync left unconfirmed", len(pending))
            self._finish_imports(hook, store, opts, pending, tally, sync_id)
        self._refresh_suppressions(hook, store, opts.full_resync)
        return hook

    def _finish_imports(
        self,
        hook: DotdigitalHook,
        store: SyncStateStore,
        opts: DotdigitalOptions,
        import_ids: list[str],
        tally: SyncTally,
        sync_id: str,
    ) -> None:
        """Wait for imports, apply what each confirms; raise if any failed as a whole."""
        # An answer confirming or refusing them may quote their rows (names, ids...).
        imported = "SELECT email, profile_id FROM import_rows WHERE list_contains(?, import_id)"
        with _redacting(self._known(store, opts, imported, [import_ids])):
            statuses = wait_for_imports(
                hook, import_ids, poll_interval=opts.poll_interval, timeout=opts.import_timeout
            )
            failed = []
            for import_id in import_ids:
                status = statuses[import_id]
                if status != IMPORT_FINISHED:
                    for segment_id, rows in store.discard_import(import_id).items():
                        tally.add(segment_id, rejected=rows)
                        tally.reasons[f"import {status}"] += rows
                    failed.append(f"{import_id}: {status}")
                    continue
                # Dotdigital's own counts, for the task log (counts only: no addresses in logs).
                log.info("Import %s finished: %s", import_id, hook.get_import_report(import_id))
                faults = {
                    f["email"].lower(): f["reason"] for f in hook.get_import_faults(import_id)
                }
                applied = store.apply_import(import_id, sync_id, faults, SUPPRESSION_FAULTS)
                for segment_id, counts in applied.items():
                    tally.add(segment_id, **counts)
                tally.reasons.update(faults.values())
            if failed:
                raise DotdigitalImportFailed(
                    f"Dotdigital import(s) failed: {'; '.join(failed)}. Their rows were not "
                    "recorded as synced and go again next run. RejectedByWatchdog means "
                    "Dotdigital's watchdog holds the import for review (often a list that looks "
                    "bought or stale): ask Dotdigital support to release the account before "
                    "re-running."
                )

    # -- inputs and diff ----------------------------------------------------------------------

    def _build_desired(
        self,
        store: SyncStateStore,
        opts: DotdigitalOptions,
        tables: dict[str, str],
        tally: SyncTally,
    ) -> dict[str, tuple[str, str]]:
        """Temp table ``desired``: wanted (segment, email) rows; returns field -> (sql, type)."""
        con = store.con
        # Dotdigital keys by the address as privacy.normalise_identifier has it.
        profiles = f"read_parquet({_lit(tables['audience_profiles'])})"
        memberships = f"read_parquet({_lit(tables['segment_memberships'])})"
        columns = {
            name: col_type
            for name, col_type, *_ in con.execute(f"DESCRIBE SELECT * FROM {profiles}").fetchall()
        }
        where = f"{self.pipeline.source_file}: destination {self.name!r}"
        fields = {
            name: self._field_sql(src, columns, where) for name, src in opts.data_fields.items()
        }
        recency = "p.last_seen" if "last_seen" in columns else "NULL"
        selects = []
        for seg in opts.segments:
            if seg.consent_column not in columns:
                raise ConfigError(
                    f"{where}: consent column {seg.consent_column!r} (segment {seg.segment_id}) "
                    "is not in audience_profiles"
                )
            at_col, source_col = f"{seg.consent_column}_at", f"{seg.consent_column}_source"
            consent_at = f"p.{_q(at_col)}" if at_col in columns else "NULL"
            url = _lit(seg.consent_url)
            if source_col in columns:
                src = f"p.{_q(source_col)}"
                url = f"CASE WHEN {src} ILIKE 'http%' THEN {src} ELSE {url} END"
            selects.append(
                f"""
                SELECT m.segment_id, {sql_normalised("p.email")} AS email, p.profile_id,
                       p.{_q(seg.consent_column)} AS consented,
                       CAST({consent_at} AS TIMESTAMP) AS consent_at,
                       CAST({_lit(seg.consent_text)} AS VARCHAR) AS consent_text,
                       CAST({url} AS VARCHAR) AS consent_url,
                       {recency} AS recency,
                       {", ".join(f"{sql} AS {_q(name)}" for name, (sql, _) in fields.items())}
                FROM {memberships} m JOIN {profiles} p ON p.profile_id = m.profile_id
                WHERE m.segment_id = {_lit(seg.segment_id)}
                """
            )
        con.execute(f"CREATE OR REPLACE TEMP TABLE candidates AS {' UNION ALL '.join(selects)}")
        # Every profile's data fields by address, read only to redact an error (_known): a
        # contact taken out of a book is in no segment now, yet Dotdigital holds its fields.
        con.execute(
            f"""
            CREATE OR REPLACE TEMP VIEW profile_fields AS
            SELECT {sql_normalised("p.email")} AS email,
                   {", ".join(f"{sql} AS {_q(name)}" for name, (sql, _) in fields.items())}
            FROM {profiles} p
            """
        )
        hashed = ", ".join(f"'{name}': {_q(name)}" for name in fields)
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE desired AS
            SELECT * EXCLUDE (consented, recency),
                   md5(CAST(to_json({{'email': email, 'consent_at': consent_at, {hashed}}}) AS VARCHAR))
                       AS row_hash
            FROM candidates c
            WHERE coalesce(email, '') <> '' AND consented IS TRUE
              AND NOT EXISTS (SELECT 1 FROM suppressed s WHERE s.email = c.email)
            QUALIFY row_number() OVER (
                PARTITION BY segment_id, email ORDER BY recency DESC NULLS LAST, profile_id
            ) = 1
            """
        )
        for segment_id, no_email, no_consent, suppressed in con.execute(
            """
            SELECT segment_id,
                   count(*) FILTER (WHERE coalesce(email, '') = ''),
                   count(*) FILTER (WHERE coalesce(email, '') <> '' AND consented IS NOT TRUE),
                   count(*) FILTER (WHERE coalesce(email, '') <> '' AND consented IS TRUE
                                    AND email IN (SELECT email FROM suppressed))
            FROM candidates GROUP BY segment_id
            """
        ).fetchall():
            tally.skipped.update(no_email=no_email, no_consent=no_consent, suppressed=suppressed)
            tally.add(segment_id, skipped_no_consent=no_consent, skipped_suppressed=suppressed)
        return fields

    @staticmethod
    def _field_sql(source: str, columns: dict[str, str], where: str) -> tuple[str, str]:
        """SQL rendering a profile column (or ``answers.<title>``) as text, and its field type."""
        if source.startswith("answers."):
            if "answers" not in columns:
                raise ConfigError(
                    f"{where}: {source!r} needs an answers column in audience_profiles"
                )
            path = "$." + '"' + source.removeprefix("answers.") + '"'
            return f"json_extract_string(p.answers, {_lit(path)})", "String"
        if source not in columns:
            raise ConfigError(f"{where}: data field source {source!r} is not a profile column")
        col_type, ident = columns[source].upper(), f"p.{_q(source)}"
        if col_type.startswith(("TIMESTAMP", "DATE")):
            return f"strftime({ident}, '%Y-%m-%dT%H:%M:%S')", "Date"
        if col_type == "BOOLEAN":
            return f"CASE WHEN {ident} THEN 'true' WHEN NOT {ident} THEN 'false' END", "Boolean"
        kind = "Numeric" if col_type.startswith(_NUMERIC_TYPES) else "String"
        return f"CAST({ident} AS VARCHAR)", kind

    def _plan_upserts(
        self, store: SyncStateStore, opts: DotdigitalOptions, books: dict[str, int | None]
    ) -> None:
        """Temp table ``upserts``: desired rows that are new, changed or in another book."""
        store.con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE upserts AS
            SELECT d.*, b.address_book_id, s.email IS NULL AS is_new
            FROM desired d
            JOIN (
                SELECT unnest(CAST(? AS VARCHAR[])) AS segment_id,
                       unnest(CAST(? AS BIGINT[])) AS address_book_id
            ) b USING (segment_id)
            LEFT JOIN sync_state s USING (segment_id, email)
            WHERE {str(opts.full_resync).upper()} OR s.email IS NULL OR s.row_hash <> d.row_hash
               OR s.address_book_id IS DISTINCT FROM b.address_book_id
            """,
            [list(books), list(books.values())],
        )

    def _render_imports(
        self, store: SyncStateStore, opts: DotdigitalOptions, fields: list[str], tmp: Path
    ) -> list[tuple[str, int, Path]]:
        """CSV import files per segment, each under Dotdigital's 50 MB limit."""
        columns = ", ".join(["email AS Email", *(_q(f) for f in fields)])
        jobs = []
        for segment_id, book_id in store.con.execute(
            "SELECT DISTINCT segment_id, address_book_id FROM upserts ORDER BY segment_id"
        ).fetchall():
            source = tmp / f"{segment_id}.parquet"
            store.con.execute(
                f"COPY (SELECT {columns} FROM upserts WHERE segment_id = {_lit(segment_id)} "
                f"ORDER BY email) TO {_lit(str(source))} (FORMAT parquet)"
            )
            # Each part is cut until it fits max_file_mb (below 50 MB: pipeline.yml's check),
            # unless one row alone is larger. An API import is not a spreadsheet: no formula
            # escaping, values go in as they are.
            parts, _ = render_parts(
                str(source), "csv", tmp / segment_id, escape_csv=False, max_file_mb=opts.max_file_mb
            )
            for path, _rows in parts:
                if (size := path.stat().st_size) >= MAX_IMPORT_BYTES:
                    raise ImportFileTooLarge(
                        f"segment {segment_id}: one contact's row of import file {path.name} is "
                        f"{size / 1024 / 1024:.0f} MiB, over Dotdigital's 50 MB "
                        "import limit: send fewer or shorter data_fields"
                    )
            jobs.extend((segment_id, book_id, path) for path, rows in parts if rows)
        return jobs

    @staticmethod
    def _rows_in(segment_id: str, part: Path) -> str:
        """SQL selecting the ``upserts`` rows a CSV part carries (its emails, read back)."""
        return (
            f"SELECT * FROM upserts WHERE segment_id = {_lit(segment_id)} AND email IN "
            f"(SELECT Email FROM read_csv({_lit(str(part))}, header = true, all_varchar = true))"
        )

    # -- removals, suppressions, consent ------------------------------------------------------

    def _remove_members(
        self,
        hook: DotdigitalHook,
        store: SyncStateStore,
        segment_id: str,
        books: dict[str, int],
        opts: DotdigitalOptions,
        tally: SyncTally,
    ) -> None:
        """Take out of the segment's book the members no longer wanted; and out of its retired
        books (its address_book renamed) every member, once confirmed in the current book.
        A member another segment sharing the book wants stays in it."""
        book_id = books[segment_id]

        def wanted_in(book: int) -> set[str]:
            return self._wanted_in(store, books, book)

        wanted = wanted_in(book_id)
        gone_rows = store.con.execute(
            """
            SELECT s.email, s.address_book_id FROM sync_state s
            WHERE s.segment_id = ? AND NOT EXISTS (
                SELECT 1 FROM desired d WHERE d.segment_id = s.segment_id AND d.email = s.email)
            ORDER BY s.email
            """,
            [segment_id],
        ).fetchall()
        gone = [email for email, _ in gone_rows]
        retired = store.retired_address_books(segment_id)
        removed = 0
        if gone or opts.full_resync:
            members = self._members(hook, book_id)
            remove = set(gone)
            if opts.full_resync:
                # A full re-sync also takes out members the state never knew (the book is ours).
                remove |= members.keys()
            removed += self._remove(hook, store, opts, book_id, members, remove - wanted)
        for retired_id in retired:
            # Members the state still records here (not yet confirmed in the current book)
            # stay until they are, unless they are gone. Moving is not leaving the segment.
            try:
                members = self._members(hook, retired_id)
            except DotdigitalApiError as exc:
                if exc.status != 404:
                    raise
                # Deleted in Dotdigital (the account's user, or the book the segment had was
                # deleted and ensure_address_book made it again): no one is left to take out.
                members = {}
            # Another segment may sync to this book now: its members stay.
            kept = wanted_in(retired_id)
            left = {email for email, book in gone_rows if book == retired_id}
            removed += self._remove(hook, store, opts, retired_id, members, left - kept)
            moved = self._remove(
                hook,
                store,
                opts,
                retired_id,
                members,
                set(store.moved_from(segment_id, retired_id)) - kept,
            )
            if moved:
                log.info(
                    "Segment %s: %d member(s) taken out of its earlier address book %s",
                    segment_id,
                    moved,
                    retired_id,
                )
        store.forget(segment_id, gone)
        for retired_id in retired:
            store.forget_retired_book(segment_id, retired_id)
        tally.add(segment_id, removed=removed)

    @staticmethod
    def _wanted_in(store: SyncStateStore, books: dict[str, int], book: int) -> set[str]:
        """Who the segments syncing to ``book`` now want in it."""
        sharing = [s for s, b in books.items() if b == book]
        return {
            r[0]
            for r in store.con.execute(
                "SELECT DISTINCT email FROM desired WHERE list_contains(?, segment_id)", [sharing]
            ).fetchall()
        }

    def _remove_dropped(
        self,
        hook: DotdigitalHook,
        store: SyncStateStore,
        books: dict[str, int],
        opts: DotdigitalOptions,
        tally: SyncTally,
    ) -> None:
        """Take the members of segments no longer synced (removed from ``segments:``) out of
        the books the state records them in, and forget those segments. Left there, every one
        of them stayed in a book the sync made, opt-outs included, and no run took them out.
        A member a configured segment syncing to the same book wants stays."""
        for segment_id, book_ids in store.dropped_segments(list(books)).items():
            emails = {email for _, email in store.profiles_of(segment_id)}
            removed = 0
            for book_id in sorted(book_ids):
                try:
                    members = self._members(hook, book_id)
                except DotdigitalApiError as exc:
                    if exc.status != 404:
                        raise
                    members = {}  # the book was deleted in Dotdigital: no one to take out
                removed += self._remove(
                    hook,
                    store,
                    opts,
                    book_id,
                    members,
                    emails - self._wanted_in(store, books, book_id),
                )
            log.info(
                "Segment %s is no longer synced: %d member(s) taken out of its address book(s)",
                segment_id,
                removed,
            )
            store.forget_segment(segment_id)
            tally.add(segment_id, removed=removed)

    @staticmethod
    def _members(hook: DotdigitalHook, book_id: int) -> dict[str, int]:
        return {c["email"].lower(): c["id"] for c in hook.list_address_book_contacts(book_id)}

    def _remove(
        self,
        hook: DotdigitalHook,
        store: SyncStateStore,
        opts: DotdigitalOptions,
        book_id: int,
        members: dict[str, int],
        emails,
    ) -> int:
        chosen = sorted(e for e in emails if e in members)
        ids = [members[e] for e in chosen]
        if ids:
            # An answer refusing the removal may quote the contacts: ids, addresses, fields.
            gone = (
                "SELECT email, profile_id FROM sync_state WHERE list_contains(?, email) "
                "UNION ALL SELECT unnest(CAST(? AS VARCHAR[])), NULL"
            )
            with _redacting(self._known(store, opts, gone, [chosen, chosen], ids)):
                hook.remove_contacts(book_id, ids)
        return len(ids)

    @staticmethod
    def _known(
        store: SyncStateStore,
        opts: DotdigitalOptions,
        rows: str,
        params: Sequence = (),
        contact_ids: Iterable[int] = (),
    ) -> Callable[[], Iterator[tuple[str, str]]]:
        """The personal values of a batch being sent, read when called (on an error only), to
        redact its errors with: ``rows`` is SQL selecting its ``email`` and ``profile_id``; their
        data fields that may name someone come from this run's profiles (``profile_fields``)
        once this sync has read them: before (an import an earlier sync left, confirmed first),
        the state has their addresses and profile ids only."""

        def values() -> Iterator[tuple[str, str]]:
            built = store.con.execute(
                "SELECT count(*) FROM duckdb_views() "
                "WHERE temporary AND view_name = 'profile_fields'"
            ).fetchone()[0]
            fields = _personal_fields(opts) if built else []
            names = ["email", "profile_id", *fields]
            columns = ", ".join(["r.email", "r.profile_id", *(f"d.{_q(f)}" for f in fields)])
            join = " LEFT JOIN profile_fields d ON d.email = r.email" if fields else ""
            for row in store.con.execute(
                f"SELECT DISTINCT {columns} FROM ({rows}) r{join}", list(params)
            ).fetchall():
                yield from zip(names, row, strict=True)
            yield from (("contact_id", str(i)) for i in contact_ids)

        return values

    def _refresh_suppressions(
        self, hook: DotdigitalHook, store: SyncStateStore, full: bool
    ) -> None:
        last = None if full else store.suppressed_since()
        # A day of overlap: the API filters by date and the last fetch may have been mid-day.
        since = SUPPRESSIONS_FROM if last is None else last - dt.timedelta(days=1)
        today = utcnow().date()
        rows = []
        for item in hook.list_suppressed_since(since):
            contact = item.get("suppressedContact") or {}
            if contact.get("email"):
                rows.append(
                    (contact["email"], item.get("reason"), _parse_time(item.get("dateRemoved")))
                )
        store.store_suppressed(rows, today, replace=last is None)

    def _ensure_data_fields(self, hook: DotdigitalHook, fields: dict[str, tuple[str, str]]) -> None:
        existing = {f["name"].upper(): f for f in hook.list_data_fields()}
        for name, (_, data_type) in fields.items():
            if name not in existing:
                hook.create_data_field(name, data_type)
            elif existing[name].get("type") != data_type:
                log.warning(
                    "Dotdigital data field %s is %s, the mapped column gives %s: values that do "
                    "not fit will show up as import faults",
                    name,
                    existing[name].get("type"),
                    data_type,
                )

    def _send_consent(
        self,
        hook: DotdigitalHook,
        store: SyncStateStore,
        opts: DotdigitalOptions,
        tally: SyncTally,
    ) -> None:
        """One consent record per contact and wording; rows stay pending until it is accepted.

        What was accepted is written to the state every ``CONSENT_FLUSH_SECONDS`` (and when the
        loop ends, or fails): a state write per contact scanned the state each time. A process
        killed between two writes sends those seconds' records again next run (Dotdigital then
        holds two identical records for those contacts); nothing is lost.
        """
        owed: dict[tuple, list[str]] = defaultdict(list)
        for segment_id, email, consent_at, text, url in store.pending_consent():
            owed[(email, text, consent_at, url)].append(segment_id)
        sent: list[tuple[str, str]] = []
        flushed = time.monotonic()
        try:
            for (email, text, consent_at, url), segment_ids in owed.items():
                record = {
                    "text": text,
                    "dateTimeConsented": consent_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                if url:
                    record["url"] = url
                # An answer refusing a record may quote the contact (its fields as Dotdigital
                # holds them); the refusal is counted by its message, kept in sync_runs.
                contact = "SELECT email, profile_id FROM sync_state WHERE email = ?"
                try:
                    with _redacting(self._known(store, opts, contact, [email])):
                        hook.add_consent_records(email, [record])
                except DotdigitalApiError as exc:
                    if exc.status is None or exc.status == 429 or exc.status >= 500:
                        raise
                    for segment_id in segment_ids:
                        tally.add(segment_id, consent_rejected=1)
                    tally.reasons[f"consent record: {exc.message}"] += 1
                    continue
                sent.extend((segment_id, email) for segment_id in segment_ids)
                for segment_id in segment_ids:
                    tally.add(segment_id, consent_records=1)
                if time.monotonic() - flushed >= CONSENT_FLUSH_SECONDS:
                    store.consent_sent(sent)
                    sent, flushed = [], time.monotonic()
        finally:
            store.consent_sent(sent)

    # -- dry run and report -------------------------------------------------------------------

    def _dry_run(
        self,
        store: SyncStateStore,
        opts: DotdigitalOptions,
        tables: dict[str, str],
        tally: SyncTally,
    ) -> None:
        """Print the diff against the state file; no call reaches Dotdigital."""
        self._build_desired(store, opts, tables, tally)
        known = {seg.segment_id: store.address_book(seg.segment_id) for seg in opts.segments}
        self._plan_upserts(store, opts, {s: (b[1] if b else None) for s, b in known.items()})
        lines = [
            f"Dotdigital dry run for {self.name!r} ({'full re-sync' if opts.full_resync else 'diff'}):"
            " nothing is sent; profile ids shown, not emails."
        ]
        for seg in opts.segments:
            book = known[seg.segment_id]
            book_note = (
                f"id {book[1]}" if book and book[0] == seg.address_book else "not synced yet"
            )
            changes = store.con.execute(
                """
                SELECT CASE WHEN is_new THEN 'added' ELSE 'changed' END, profile_id FROM upserts
                WHERE segment_id = ?
                UNION ALL
                SELECT 'removed', s.profile_id FROM sync_state s
                WHERE s.segment_id = ? AND NOT EXISTS (
                    SELECT 1 FROM desired d WHERE d.segment_id = s.segment_id AND d.email = s.email)
                ORDER BY 1, 2
                """,
                [seg.segment_id, seg.segment_id],
            ).fetchall()
            by_kind: dict[str, list[str]] = defaultdict(list)
            for kind, profile_id in changes:
                by_kind[kind].append(profile_id)
            tally.add(seg.segment_id, **{k: len(v) for k, v in by_kind.items()})
            lines.append(
                f"  segment {seg.segment_id} -> address book {seg.address_book!r} ({book_note}): "
                f"+{len(by_kind['added'])} added, ~{len(by_kind['changed'])} changed, "
                f"-{len(by_kind['removed'])} removed"
            )
            for kind, mark in (("added", "+"), ("changed", "~"), ("removed", "-")):
                ids = by_kind[kind]
                lines.extend(f"    {mark} {pid}" for pid in ids[:DRY_RUN_SAMPLE])
                if len(ids) > DRY_RUN_SAMPLE:
                    lines.append(f"    {mark} ... and {len(ids) - DRY_RUN_SAMPLE} more")
        configured = {s: b[1] for s, b in known.items() if b}
        for segment_id, book_ids in store.dropped_segments(list(known)).items():
            # A real run takes them out of the books (_remove_dropped), bar those wanted there.
            kept = set().union(*(self._wanted_in(store, configured, b) for b in book_ids))
            ids = sorted({pid for pid, email in store.profiles_of(segment_id) if email not in kept})
            tally.add(segment_id, removed=len(ids))
            lines.append(f"  segment {segment_id} (no longer synced): -{len(ids)} removed")
            lines.extend(f"    - {pid}" for pid in ids[:DRY_RUN_SAMPLE])
            if len(ids) > DRY_RUN_SAMPLE:
                lines.append(f"    - ... and {len(ids) - DRY_RUN_SAMPLE} more")
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(tally.skipped.items()))
        lines.append(f"  not sent ({skipped})")
        print("\n".join(lines))

    def _record(
        self,
        store: SyncStateStore,
        run: RunInfo,
        sync_id: str,
        mode: str,
        status: str,
        started: dt.datetime,
        tally: SyncTally,
        error: str | None,
    ) -> None:
        store.record_run(
            sync_id=sync_id,
            destination=self.name,
            run_id=run.run_id,
            ds=run.ds,
            mode=mode,
            status=status,
            started_at=started,
            finished_at=utcnow(),
            **tally.totals(),
            reasons=dict(tally.reasons),
            skipped=dict(tally.skipped),
            segments={s: dict(c) for s, c in tally.segments.items()},
            error=error,
        )


def _parse_time(value: Any) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
