"""Erasure in the SQL warehouse destinations (``snowflake``, ``sql``): delete the people, and keep
every later load from bringing them back.

``erase`` (one transaction for a batch of requests), in every table the destination has loaded
(the load log ``ap_loads`` names them), deletes the rows that name an erased profile or
identifier:

- ``profile_id``, and ``merged_profile_id`` / ``surviving_profile_id`` of ``profile_merges``;
- ``email`` (``email_sha256`` under pii ``hashed``), ``session_id``, ``external_id``;
- a (type, value) pair of ``profile_identifiers``, ``profile_merges`` or the link audit (an
  ``email_sha256`` pair under ``hashed``);
- a whole word of a quarantined ``raw`` line (only loads under ``plain`` keep the line).

Values are looked for both as the warehouse keys them and as ``hash_identifier`` hashes, so a
table loaded under another PII policy before is cleaned all the same.

The same transaction records a tombstone per erased profile id and identifier in ``ap_erasures``,
as its hash (no plain identifier stays behind): a session's or SSO id's under ``exact:<type>``,
hashed with its case as identity compares it (``privacy.exact_hash``); one recorded before
(``<type>``, lower-cased) still matches either case. Every later load filters its exports against
them before staging (:func:`without_erased`): an export written before the request (a delivery
that ran while the erasure did, an old run delivered again) cannot put the person back, neither
in the snapshot tables nor in the partition of a date that no daily run rewrites any more.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pyarrow as pa

from audience_profiles.destinations.base import ErasureRequest
from audience_profiles.destinations.drop import (
    IDENTIFIER_PAIRS,
    RAW_COLUMN,
    _literal,
    _quote_ident,
    scratch_duckdb,
)
from audience_profiles.destinations.drop_erasure import PROFILE_COLUMNS, raw_words, raw_words_sql
from audience_profiles.privacy import (
    HASHED_EMAIL,
    WHITESPACE,
    exact_hash,
    hash_identifier,
    normalise_identifier,
)
from audience_profiles.warehouse.base import sql_macro
from audience_profiles.warehouse.duckdb import COMPAT_MACROS

if TYPE_CHECKING:
    from audience_profiles.destinations.warehouse_load import Session, SqlWarehouseDestination

ERASURES_TABLE = "ap_erasures"
VALUE_COLUMNS = ("email", "session_id", "external_id")
PROFILE = "profile_id"  # tombstone type of an erased profile id
EXACT = "exact:"  # before a tombstone's type: a session or SSO id hashed with its case
CASED = ("session_id", "external_id")  # the identifier types compared case and all
T = TypeVar("T", str, tuple[str | None, str])
# Characters no JSON writer escapes in practice (JSON lets any be written as "\\u00XX"; writers
# escape non-ASCII, controls, quotes, backslashes and some of "/<>&'+").
_NEVER_ESCAPED = re.compile(r"[a-z0-9.@_-]+")
# Values one statement lists. Snowflake takes at most 16,384 expressions in an IN list (error
# 001795), and a backlog of requests (an erasure DAG paused for weeks) lists tens of thousands.
LISTED_MAX = 1000
# Characters of values one statement lists: quarantined lines are listed whole, and Snowflake
# advises statements under 1 MB (a longer one runs, but its history keeps it cut short).
LISTED_CHARS_MAX = 256_000


def listed_parts(values: Sequence[T]) -> Iterator[list[T]]:
    """The values in order, in lists of at most ``LISTED_MAX`` and ``LISTED_CHARS_MAX``
    characters (a longer value alone). A value is a string or a pair whose last item is one."""
    part: list[T] = []
    chars = 0
    for value in values:
        size = len(value if isinstance(value, str) else value[-1])
        if part and (len(part) == LISTED_MAX or chars + size > LISTED_CHARS_MAX):
            yield part
            part, chars = [], 0
        part.append(value)
        chars += size
    if part:
        yield part


@dataclass(frozen=True)
class Subjects:
    """What a batch of requests erases: profile ids, and values per identifier type.

    Emails also appear hashed under ``email_sha256``, the form hashed loads hold them in.
    """

    profile_ids: frozenset[str]
    values: dict[str, frozenset[str]]

    @classmethod
    def of(cls, requests: Sequence[ErasureRequest]) -> Subjects:
        values: dict[str, set[str]] = {}
        for request in requests:
            for kind, value in request.identifiers:
                values.setdefault(kind, set()).add(value)
        values[HASHED_EMAIL] = {hash_identifier(v) for v in values.get("email", ())} - {None}
        return cls(
            frozenset(p for r in requests for p in r.profile_ids),
            {k: frozenset(v) for k, v in values.items() if v},
        )

    def parts(self) -> Iterator[Subjects]:
        """The same subjects in parts (``listed_parts``): deleting the rows that name one part
        after another deletes the rows that name any of them."""
        items = [(None, p) for p in sorted(self.profile_ids)] + [
            (kind, v) for kind, vs in sorted(self.values.items()) for v in sorted(vs)
        ]
        for part in listed_parts(items):
            values: dict[str | None, set[str]] = {}
            for kind, value in part:
                values.setdefault(kind, set()).add(value)
            profile_ids = frozenset(values.pop(None, ()))
            yield Subjects(profile_ids, {k: frozenset(v) for k, v in values.items() if k})

    def words(self) -> set[str]:
        """Every plain value, lower-cased as the warehouse narrows quarantined lines down (as SQL
        lower-cases: İ is i)."""
        return {
            normalise_identifier(v)
            for kind, vs in self.values.items()
            if kind != HASHED_EMAIL
            for v in vs
        } - {None}

    @functools.cached_property
    def _emails_and_ids(self) -> tuple[set[str], set[str]]:
        emails = {normalise_identifier(v) for v in self.values.get("email", ())} - {None}
        ids = {v.strip(WHITESPACE) for kind in CASED for v in self.values.get(kind, ())} - {""}
        return emails, ids

    def names(self, line_words: list[str]) -> bool:
        """Whether a quarantined line of these words names one of the values: an email
        whatever its case, a session or SSO id exactly."""
        emails, ids = self._emails_and_ids
        return bool({normalise_identifier(w) for w in line_words} & emails or set(line_words) & ids)


def tombstones(request: ErasureRequest) -> set[tuple[str, str]]:
    """(type, hash) of each profile id and identifier of one request."""
    pairs = {(PROFILE, p) for p in request.profile_ids} | set(request.identifiers)
    return {
        (EXACT + kind, h) if kind in CASED else (kind, h)
        for kind, value in pairs
        if (h := exact_hash(kind, value) if kind in CASED else hash_identifier(value))
    }


def erase_loaded(
    dest: SqlWarehouseDestination,
    db: Session,
    requests: Sequence[ErasureRequest],
    tables: Sequence[str],
) -> dict[str, int]:
    """Delete the requests' people from the loaded ``tables`` and record their tombstones, in one
    transaction; rows removed per table."""
    subjects = Subjects.of(requests)
    ensure_erasures_table(dest, db)
    columns = {t: set(db.columns(dest.qualified(t)) or ()) for t in tables}
    raws = set()
    if RAW_COLUMN in columns.get("quarantine", ()):
        raws = _quarantined_lines(dest, db, subjects)
    removed: dict[str, int] = {}
    with db.transaction():
        for table in tables:
            for where in _erased_wheres(dest, columns[table], subjects, raws):
                rows = db.execute(f"DELETE FROM {dest.qualified(table)} WHERE {where}")
                if rows > 0:
                    removed[table] = removed.get(table, 0) + rows
        _record_tombstones(dest, db, requests)
    return removed


def ensure_erasures_table(dest: SqlWarehouseDestination, db: Session) -> None:
    text = pa.string()
    dest.ensure_table(
        db,
        ERASURES_TABLE,
        {
            "request_id": text,
            "identifier_type": text,
            "identifier_hash": text,
            "erased_at": pa.timestamp("us"),
        },
    )


def _record_tombstones(
    dest: SqlWarehouseDestination, db: Session, requests: Sequence[ErasureRequest]
) -> None:
    table = dest.qualified(ERASURES_TABLE)
    for part in listed_parts([r.request_id for r in requests]):
        ids = ", ".join(dest.literal(request_id) for request_id in part)
        db.execute(f"DELETE FROM {table} WHERE {dest.ident('request_id')} IN ({ids})")
    dest.insert_rows_sql(
        db,
        table,
        [
            f"({dest.literal(r.request_id)}, {dest.literal(kind)}, {dest.literal(h)}, "
            "CURRENT_TIMESTAMP)"
            for r in requests
            for kind, h in sorted(tombstones(r))
        ],
    )


def _quarantined_lines(dest: SqlWarehouseDestination, db: Session, subjects: Subjects) -> set[str]:
    """Quarantined lines holding one of the values as a whole word (:meth:`Subjects.names`).

    The warehouse narrows the lines down by substring (portable POSITION); the words are cut
    here, as warehouses spell regular expressions differently. A JSON writer may have escaped a
    value's characters other than ASCII letters, digits and ``.@_-`` (``jos\\u00e9@x.io``): such a
    value is looked for as its longest run of those in a line holding a backslash.
    """
    words = subjects.words()
    raw = dest.ident(RAW_COLUMN)
    listed = sorted(words)
    candidates = set()
    escaped = f"POSITION({dest.literal(chr(92))} IN {raw}) > 0"

    def holds(word: str) -> str:
        if _NEVER_ESCAPED.fullmatch(word):
            return f"POSITION({dest.literal(word)} IN lower({raw})) > 0"
        run = max(_NEVER_ESCAPED.findall(word), key=len, default="")
        if not run:
            return escaped
        return f"({escaped} AND POSITION({dest.literal(run)} IN lower({raw})) > 0)"

    for part in listed_parts(listed):
        found = " OR ".join(holds(w) for w in part)
        candidates.update(
            line
            for (line,) in db.query(
                f"SELECT DISTINCT {raw} FROM {dest.qualified('quarantine')} WHERE {found}"
            )
        )
    return {line for line in candidates if subjects.names(raw_words(line))}


def _erased_wheres(
    dest: SqlWarehouseDestination, columns: set[str], subjects: Subjects, raws: set[str]
) -> Iterator[str]:
    """SQL conditions, a statement's each, that together name every row of an erased profile or
    identifier; each lists a part (``listed_parts``)."""
    nothing = Subjects(frozenset(), {})
    for part, part_raws in [(part, set()) for part in subjects.parts()] + [
        (nothing, set(lines)) for lines in listed_parts(sorted(raws))
    ]:
        if where := _erased_where(dest, columns, part, part_raws):
            yield where


def _erased_where(
    dest: SqlWarehouseDestination, columns: set[str], subjects: Subjects, raws: set[str]
) -> str:
    """SQL: the row names an erased profile or identifier; empty when no column can."""

    def any_of(expr: str, values: frozenset[str] | set[str]) -> str | None:
        if not values:
            return None
        return f"{expr} IN ({', '.join(dest.literal(v) for v in sorted(values))})"

    def email(expr: str) -> str:
        # As keyed: a table loaded long ago may hold it as entered. Plain trim(), as this SQL
        # must run on every dialect of the sql destination; the exports' emails are validated.
        return f"lower(trim({expr}))"

    terms = [any_of(dest.ident(c), subjects.profile_ids) for c in PROFILE_COLUMNS if c in columns]
    for column in (*VALUE_COLUMNS, HASHED_EMAIL):
        if column in columns:
            expr = email(dest.ident(column)) if column == "email" else dest.ident(column)
            terms.append(any_of(expr, subjects.values.get(column, frozenset())))
    for kind_column, value_column in IDENTIFIER_PAIRS:
        if {kind_column, value_column} <= columns:
            for kind, values in sorted(subjects.values.items()):
                value = dest.ident(value_column)
                listed = any_of(email(value) if kind == "email" else value, values)
                terms.append(f"({dest.ident(kind_column)} = {dest.literal(kind)} AND {listed})")
    if RAW_COLUMN in columns:
        terms.append(any_of(dest.ident(RAW_COLUMN), raws))
    return " OR ".join(t for t in terms if t)


def without_erased(path: str, erased: set[tuple[str, str]], out: Path) -> tuple[str, int]:
    """``path`` without rows naming a tombstoned profile or identifier; (file to load, rows left out).

    The export is compared hash to hash with the warehouse's own hash macro (tested equal to
    ``hash_identifier``), natively in DuckDB: exports can be large (bounded, spilling next to
    ``out``).
    """
    with scratch_duckdb(out.parent) as con:
        con.execute(COMPAT_MACROS)
        con.execute("CREATE TEMP TABLE erased (identifier_type VARCHAR, identifier_hash VARCHAR)")
        con.executemany("INSERT INTO erased VALUES (?, ?)", sorted(erased))
        source = f"read_parquet({_literal(path)})"
        columns = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}

        def hashed(expr: str) -> str:
            return sql_macro("privacy/_macros.sql", "hashed", expr)

        def exact(kind: str, expr: str) -> str:
            return sql_macro("privacy/_macros.sql", "exact_hashed", kind, expr)

        def listed(kind: str) -> str:
            return f"(SELECT identifier_hash FROM erased WHERE identifier_type = '{kind}')"

        terms = [
            f"{hashed(_quote_ident(c))} IN {listed(PROFILE)}"
            for c in PROFILE_COLUMNS
            if c in columns
        ]
        terms += [
            f"{hashed(_quote_ident(c))} IN {listed(c)}" for c in VALUE_COLUMNS if c in columns
        ]
        terms += [
            f"{exact(repr(c), _quote_ident(c))} IN {listed(EXACT + c)}"
            for c in CASED
            if c in columns
        ]
        terms += [
            f"{_quote_ident(t)} || ':' || {hashed(_quote_ident(v))} IN "
            "(SELECT identifier_type || ':' || identifier_hash FROM erased)"
            for t, v in IDENTIFIER_PAIRS
            if {t, v} <= columns
        ]
        terms += [
            f"'{EXACT}' || {_quote_ident(t)} || ':' || {exact(_quote_ident(t), _quote_ident(v))} "
            "IN (SELECT identifier_type || ':' || identifier_hash FROM erased)"
            for t, v in IDENTIFIER_PAIRS
            if {t, v} <= columns
        ]
        if RAW_COLUMN in columns:
            words = raw_words_sql(_quote_ident(RAW_COLUMN))
            terms.append(
                f"list_has_any(list_transform({words}, lambda w: {hashed('w')}), (SELECT "
                f"list(identifier_hash) FROM erased WHERE identifier_type NOT LIKE '{EXACT}%'))"
            )
            terms.append(
                f"list_has_any(list_transform({words}, lambda w: {exact('NULL', 'w')}), (SELECT "
                f"list(identifier_hash) FROM erased WHERE identifier_type LIKE '{EXACT}%'))"
            )
        if not terms:
            return path, 0
        erased_row = " OR ".join(f"coalesce({t}, false)" for t in terms)
        con.execute(
            f"COPY (SELECT * FROM {source} WHERE NOT ({erased_row})) TO {_literal(str(out))} "
            "(FORMAT parquet, COMPRESSION zstd)"
        )
        total = con.execute(f"SELECT count(*) FROM {source}").fetchone()[0]
        kept = con.execute(f"SELECT count(*) FROM read_parquet({_literal(str(out))})").fetchone()[0]
        return str(out), total - kept
