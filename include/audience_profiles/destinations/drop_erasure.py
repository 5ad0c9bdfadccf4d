"""Erasure in timed drops (local, S3, Azure): rewrite every partition that holds an erased person.

Every daily partition of a snapshot table holds everyone, so erasure visits every partition of
every table the destination delivers (``<prefix>/<table>/dt=*/``), one pass for a whole batch of
requests. A part file with matching rows is rewritten without them, in its own format and
compression; parts without a match are left byte for byte as they are. The write order is
drop.py's: the partition's ``_manifest.json`` is withdrawn before the first part changes and
written again last, with the new row counts, sizes and SHA-256 of the rewritten parts and the ids
of the requests that changed it. Before it is withdrawn it is saved beside it as
``_manifest.erasing.json`` (which readers ignore, and a delivery of the date removes as a stale
file), so a retry of an erasure that failed midway resumes from the copy, writes the manifest
again for the parts as they are then, and deletes the copy. Kept rows keep their values: a CSV
part's ``""`` stays an empty string and an empty field stays null.

A row matches when any of its columns names an erased profile or identifier: ``profile_id`` (and
the merge columns), ``email`` (or ``email_sha256`` in hashed drops), ``session_id``,
``external_id``, an (``identifier_type``, ``identifier_value``) pair (also ``left_`` / ``right_``
in the link audit; in hashed drops an ``email_sha256`` pair, matched by the hash), or a whole word
of a quarantined ``raw`` line (plain drops only: hashed and omit drops carry no raw line). CSV
cells escaped against formula injection (a leading ``'``) are matched without the escape.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb

from audience_profiles.config import OUTPUT_TABLES
from audience_profiles.destinations.base import (
    ERASED,
    Destination,
    ErasureRequest,
    erasure_status,
)
from audience_profiles.destinations.drop import (
    IDENTIFIER_PAIRS,
    MANIFEST,
    RAW_COLUMN,
    Sink,
    _copy_options,
    _literal,
    _quote_ident,
    _sha256,
    scratch_duckdb,
)
from audience_profiles.privacy import HASHED_EMAIL, WHITESPACE, hash_identifier, sql_normalised

# The manifest saved while an erasure rewrites the partition's parts (readers read only
# _manifest.json; drop.write_partition removes this as a stale file).
ERASING_MANIFEST = "_manifest.erasing.json"
_PART = re.compile(r"part-\d{5}\.(csv|json|parquet)(\.gz)?$")
# A part's temporary copy (files.replace_file: ".<part>.<random>.tmp"; "<part>.tmp" before
# 2026-12-01), left by a write that was killed: rows of people that no manifest names and that
# the erasure would otherwise pass over.
_PART_TMP = re.compile(
    r"/(\.part-\d{5}\.(csv|json|parquet)(\.gz)?\.[0-9a-f]+|part-\d{5}\.(csv|json|parquet)(\.gz)?)"
    r"\.tmp$"
)
# A word of a raw line (CSV field, JSON string), as the tokens macro of
# include/sql/privacy/_macros.sql cuts it (raw_words): Python's re and DuckDB's RE2 read it
# alike. Every white space character separates words (the characters themselves, none special
# in a class).
RAW_WORD = "[^" + WHITESPACE + ',;"{}]+'
_TOKEN = _literal(RAW_WORD)


def _json_decoded(word: str) -> str | None:
    """The word read as the content of a JSON string ("jos\\u00e9" is "josé"), or None when
    it is not one; nor is a lone surrogate ("\\ud83d"), which DuckDB and Snowflake refuse."""
    try:
        text = json.loads('"' + word + '"')
        text.encode()
    except (ValueError, UnicodeEncodeError):
        return None
    return text


def raw_words(line: str) -> list[str]:
    """The words of a quarantined line, as the tokens macro of include/sql/privacy/_macros.sql
    yields them: cut at white space and ``,;"{}``, then each word holding a backslash read as a
    JSON string's content and cut again. A JSON writer escapes an identifier's non-ASCII
    characters ("jos\\u00e9@x.io") and the white space padding it ("a@b.io\\u00a0"), so the
    word with the escapes names nobody; a word that does not decode is only itself."""
    words = re.findall(RAW_WORD, line)
    decoded = (_json_decoded(w) for w in words if "\\" in w)
    return words + [w for text in decoded if text is not None for w in re.findall(RAW_WORD, text)]


def raw_words_sql(raw: str) -> str:
    """DuckDB SQL: the list of :func:`raw_words` of the text expression ``raw``."""
    words = f"regexp_extract_all({raw}, {_TOKEN})"
    decoded = "json_extract_string(TRY_CAST('\"' || w || '\"' AS JSON), '$')"
    return (
        f"list_concat({words}, flatten(list_transform("
        f"list_filter({words}, lambda w: contains(w, chr(92))), "
        f"lambda w: coalesce(regexp_extract_all({decoded}, {_TOKEN}), []))))"
    )


_JSON_LINE = chr(31)  # a delimiter that never occurs: every JSON line is one value
PROFILE_COLUMNS = ("profile_id", "merged_profile_id", "surviving_profile_id")
VALUE_COLUMNS = ("email", HASHED_EMAIL, "session_id", "external_id")
CANDIDATE_COLUMNS = (
    PROFILE_COLUMNS
    + VALUE_COLUMNS
    + tuple(c for pair in IDENTIFIER_PAIRS for c in pair)
    + (RAW_COLUMN,)
)


def load_subjects(con: duckdb.DuckDBPyConnection, requests: Sequence[ErasureRequest]) -> None:
    """Temp tables erase_profiles and erase_values (what :func:`matches` looks rows up in)."""
    profiles = sorted({p for r in requests for p in r.profile_ids})
    values = {pair for r in requests for pair in r.identifiers}
    # Hashed drops carry email_sha256 instead of the address (drop.select_list).
    values |= {(HASHED_EMAIL, hash_identifier(v)) for t, v in set(values) if t == "email"}
    con.execute("CREATE OR REPLACE TEMP TABLE erase_profiles (profile_id VARCHAR)")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE erase_values (identifier_type VARCHAR, value VARCHAR)"
    )
    if profiles:
        con.executemany("INSERT INTO erase_profiles VALUES (?)", [[p] for p in profiles])
    if values:
        con.executemany("INSERT INTO erase_values VALUES (?, ?)", sorted(values))


def _email(expr: str) -> str:
    # Emails are matched as the warehouse keys them: a drop fed by an older export may hold
    # them as entered.
    return sql_normalised(expr)


def matches(columns: set[str], value_of: Callable[[str], str]) -> str:
    """SQL: the row names an erased profile or identifier (``value_of`` reads a column as text)."""
    terms = [
        f"{value_of(c)} IN (SELECT profile_id FROM erase_profiles)"
        for c in PROFILE_COLUMNS
        if c in columns
    ]
    terms += [
        f"{_email(value_of(c)) if c == 'email' else value_of(c)} IN "
        f"(SELECT value FROM erase_values WHERE identifier_type = '{c}')"
        for c in VALUE_COLUMNS
        if c in columns
    ]
    terms += [
        f"{value_of(t)} || ':' || CASE WHEN {value_of(t)} = 'email' THEN {_email(value_of(v))} "
        f"ELSE {value_of(v)} END IN (SELECT identifier_type || ':' || value FROM erase_values)"
        for t, v in IDENTIFIER_PAIRS
        if t in columns and v in columns
    ]
    if RAW_COLUMN in columns:
        # a word of the line: an email whatever its case, a session or SSO id exactly
        raw = value_of(RAW_COLUMN)
        terms.append(
            f"len(list_intersect(list_transform({raw_words_sql(raw)}, lambda w: lower(w)), (SELECT "
            "list(lower(value)) FROM erase_values WHERE identifier_type = 'email'))) > 0"
        )
        terms.append(
            f"len(list_intersect({raw_words_sql(raw)}, (SELECT "
            "list(value) FROM erase_values WHERE identifier_type <> 'email'))) > 0"
        )
    return " OR ".join(f"coalesce({t}, false)" for t in terms) or "false"


def _relation(con: duckdb.DuckDBPyConnection, path: Path, fmt: str) -> tuple[str, str]:
    """(SQL relation of the part, its row predicate)."""
    source = _literal(str(path))
    if fmt == "parquet":
        relation = f"read_parquet({source})"
        columns = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
        return relation, matches(columns, lambda c: f"CAST({_quote_ident(c)} AS VARCHAR)")
    if fmt == "csv":
        relation = (
            f"read_csv({source}, header = true, all_varchar = true, delim = ',', quote = '\"', "
            "escape = '\"', allow_quoted_nulls = false, hive_partitioning = false)"
        )
        columns = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
        # Undo drop.py's formula escaping ('=..., '+..., '-..., '@...) before comparing.
        return relation, matches(
            columns, lambda c: f"regexp_replace({_quote_ident(c)}, '^''([-=+@\t\r])', '\\1')"
        )
    relation = (
        f"read_csv({source}, columns = {{'line': 'VARCHAR'}}, header = false, "
        f"delim = {_literal(_JSON_LINE)}, quote = '', escape = '', auto_detect = false, "
        "hive_partitioning = false)"
    )
    return relation, matches(
        set(CANDIDATE_COLUMNS), lambda c: f"json_extract_string(line, {_literal(f'$.{c}')})"
    )


def filter_file(
    con: duckdb.DuckDBPyConnection, path: Path, fmt: str, gzip: bool, out: Path
) -> tuple[int, int]:
    """Write ``path`` without matching rows to ``out`` (only when some match); (kept, removed)."""
    relation, predicate = _relation(con, path, fmt)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE part AS SELECT *, ({predicate}) AS _erased FROM {relation}"
    )
    kept, removed = con.execute(
        "SELECT coalesce(count_if(NOT _erased), 0), coalesce(count_if(_erased), 0) FROM part"
    ).fetchone()
    if removed:
        options = (
            _copy_options(fmt, gzip)
            if fmt != "json"
            else f"FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER {_literal(_JSON_LINE)}"
            + (", COMPRESSION gzip" if gzip else "")
        )
        con.execute(
            f"COPY (SELECT * EXCLUDE (_erased) FROM part WHERE NOT _erased) "
            f"TO {_literal(str(out))} ({options})"
        )
    return kept, removed


def _rewrite_partition(
    con: duckdb.DuckDBPyConnection,
    sink: Sink,
    partition: str,
    keys: list[str],
    request_ids: list[str],
    tmp: Path,
) -> tuple[int, int]:
    """Rewrite the partition's parts that hold matching rows; (rows removed, files rewritten).

    Resumable: the manifest is saved as ``_manifest.erasing.json`` before it is withdrawn, so a
    retry of an erasure that failed midway finds the copy, finishes the partition and writes the
    manifest again (with every part's rows, size and SHA-256 as they are now), then drops the copy.
    """
    manifest_key = f"{partition}/{MANIFEST}"
    saved_key = f"{partition}/{ERASING_MANIFEST}"
    # The erasure holds the exports lock alone (erasure.erase_destination): no delivery is
    # writing a part now, so a temporary one is a dead write's leftover. Removed, not filtered.
    leftovers = [k for k in keys if _PART_TMP.search(k)]
    if leftovers:
        sink.delete(leftovers)
        keys = [k for k in keys if k not in leftovers]
    manifest = None
    if manifest_key not in keys and saved_key in keys:
        # An earlier erasure withdrew the manifest and failed before writing it again.
        sink.get(saved_key, tmp / MANIFEST)
        manifest = json.loads((tmp / MANIFEST).read_text())
    current: dict[str, dict] = {}  # every part as it is now: rows, bytes, sha256
    rewritten = 0
    removed_rows = 0
    for key in sorted(k for k in keys if _PART.search(k)):
        name = key.rsplit("/", 1)[-1]
        local, out = tmp / name, tmp / f"erased-{name}"
        sink.get(key, local)
        match = _PART.search(name)
        kept, removed = filter_file(con, local, match.group(1), bool(match.group(2)), out)
        if not removed:
            current[key] = {"rows": kept, "bytes": local.stat().st_size, "sha256": _sha256(local)}
            local.unlink()
            continue
        local.unlink()
        if manifest is None and manifest_key in keys:
            # Withdraw the manifest before the first part changes, as drop.write_partition does,
            # keeping a copy in the partition (readers ignore it) for a retry to finish from.
            sink.get(manifest_key, tmp / MANIFEST)
            manifest = json.loads((tmp / MANIFEST).read_text())
            sink.put(tmp / MANIFEST, saved_key)
            sink.delete([manifest_key])
        sink.put(out, key)
        current[key] = {"rows": kept, "bytes": out.stat().st_size, "sha256": _sha256(out)}
        out.unlink()
        rewritten += 1
        removed_rows += removed
    if manifest is not None:
        for entry in manifest["files"]:
            now = current.get(entry["key"])
            # A part whose bytes the manifest (or its saved copy) still vouches for keeps its row
            # count; a part rewritten here or by a failed attempt gets the count just read.
            if now and now["sha256"] != entry["sha256"]:
                entry.update(now)
        first_format = manifest["files"][0]["format"] if manifest["files"] else None
        manifest["rows"] = sum(f["rows"] for f in manifest["files"] if f["format"] == first_format)
        manifest["erased_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        manifest["erasure_requests"] = sorted(
            set(manifest.get("erasure_requests", [])) | set(request_ids)
        )
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        sink.put(tmp / MANIFEST, manifest_key)
    if manifest is not None or saved_key in keys:
        sink.delete([saved_key])
    return removed_rows, rewritten


def erase_drops(
    destination: Destination, sink: Sink, prefix: str, requests: Sequence[ErasureRequest]
) -> dict[str, dict[str, str]]:
    """Remove the requests' people from every partition of every table the destination holds:
    every output table, not only those it is configured to drop now (one taken out of ``tables``
    keeps the partitions it dropped before)."""
    request_ids = sorted(r.request_id for r in requests)
    removed = files = partitions = 0
    with destination.pipeline.scratch("drop-erase-") as tmp, scratch_duckdb(tmp) as con:
        load_subjects(con, requests)
        for table in OUTPUT_TABLES:
            root = "/".join(p for p in (prefix.strip("/"), table) if p) + "/"
            by_partition: dict[str, list[str]] = defaultdict(list)
            for key in sink.list(root):
                by_partition[key.rsplit("/", 1)[0]].append(key)
            for partition, keys in sorted(by_partition.items()):
                rows, rewritten = _rewrite_partition(
                    con, sink, partition, keys, request_ids, Path(tmp)
                )
                removed += rows
                files += rewritten
                partitions += bool(rewritten)
    detail = f"{removed} row(s) removed from {files} file(s) in {partitions} partition(s)"
    return {r.request_id: erasure_status(ERASED, detail) for r in requests}
