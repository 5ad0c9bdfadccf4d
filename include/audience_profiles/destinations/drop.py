"""Timed file drops: one partition per table and run date, written so a re-run replaces it exactly.

Layout (shared by the local, S3 and Azure destinations)::

    <prefix>/<table>/dt=YYYY-MM-DD/part-NNNNN.<ext>[.gz]
    <prefix>/<table>/dt=YYYY-MM-DD/_quicksight_manifest.json   (only with quicksight_manifest)
    <prefix>/<table>/dt=YYYY-MM-DD/_manifest.json

Write order, so a reader never trusts an incomplete drop:
1. delete the old ``_manifest.json`` (and QuickSight manifest): the partition is now "in progress";
2. write every part of the new drop (same names overwrite, so a crash leaves old or new parts);
3. delete parts of an earlier, larger run that the new drop does not name;
4. write ``_manifest.json`` last, listing each file with its rows, bytes and SHA-256.

Formatting happens in an in-memory DuckDB over the run's Parquet export: the PII policy (plain,
hashed, omit), OWASP CSV-injection escaping, gzip and the split at ``max_file_mb`` all run there, so a
10-million-row drop never passes through Python rows. The one exception is hashing: hashed
identifiers go through :func:`audience_profiles.privacy.hash_identifier`, registered as a DuckDB
function, so a drop's hashes are exactly the ones every other part of the project computes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import duckdb
from duckdb.sqltypes import VARCHAR

from audience_profiles.config import ConfigError, DestinationConfig
from audience_profiles.destinations.base import (
    DeliveryReport,
    Destination,
    ErasureRequest,
    RunInfo,
)
from audience_profiles.files import inside, replace_file, safe_name
from audience_profiles.privacy import HASHED_EMAIL, PII_COLUMNS, hash_identifier

MANIFEST = "_manifest.json"
QUICKSIGHT_MANIFEST = "_quicksight_manifest.json"
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
log = logging.getLogger(__name__)
MANIFEST_VERSION = 1
EXTENSIONS = {"csv": "csv", "json": "json", "parquet": "parquet"}
# OWASP CSV injection: cells starting with these are treated as formulas by spreadsheets.
CSV_FORMULA_PREFIX = r"^[=+\-@\t\r]"
HASH_FUNCTION = "hash_identifier"
# (type, value) column pairs naming an identifier: profile_identifiers, profile_merges, the audit.
IDENTIFIER_PAIRS = (
    ("identifier_type", "identifier_value"),
    ("left_type", "left_value"),
    ("right_type", "right_value"),
)
RAW_COLUMN = "raw"  # a quarantined input line, as it was landed
# Parts are cut a little under max_file_mb: file size is not exactly linear in rows.
_SPLIT_HEADROOM = 0.9
_MIB = 1024 * 1024


class Sink(Protocol):
    """Where drop files go. Keys are ``/``-separated paths below the sink's root."""

    def put(self, local_path: Path, key: str) -> None: ...
    def get(self, key: str, local_path: Path) -> None: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, keys: list[str]) -> None: ...
    def url(self, key: str) -> str: ...


@dataclass
class DropResult:
    rows: int
    files: list[str]
    manifest: dict


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _register_hash_function(con: duckdb.DuckDBPyConnection) -> None:
    registered = con.execute(
        "SELECT count(*) FROM duckdb_functions() WHERE function_name = ?", [HASH_FUNCTION]
    ).fetchall()[0][0]
    if not registered:
        con.create_function(
            HASH_FUNCTION, hash_identifier, [VARCHAR], VARCHAR, null_handling="special"
        )


def _escaped(expr: str) -> str:
    return f"CASE WHEN regexp_matches({expr}, '{CSV_FORMULA_PREFIX}') THEN '''' || {expr} ELSE {expr} END"


def select_list(
    con: duckdb.DuckDBPyConnection, source: str, pii: str, escape_csv: bool
) -> tuple[str, list[tuple[str, str]]]:
    """SQL select list applying the PII policy and CSV escaping; returns it with the out schema.

    PII is the ``email`` / name columns, the email values of (type, value) identifier pairs
    (:data:`IDENTIFIER_PAIRS`: identifiers, merges, the link audit) and a quarantined ``raw``
    line: ``hashed`` turns emails into ``hash_identifier`` hex (type ``email_sha256``), ``omit``
    nulls them; under both, ``raw`` is NULL, as a line that failed validation can hold anything.
    """
    columns = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    names = {name for name, *_ in columns}
    pair_type = {value: kind for kind, value in IDENTIFIER_PAIRS if {kind, value} <= names}
    if pii == "hashed":
        _register_hash_function(con)
    exprs: list[str] = []
    schema: list[tuple[str, str]] = []
    for name, col_type, *_ in columns:
        ident = _quote_ident(name)
        if name in PII_COLUMNS and pii != "plain":
            if pii == "hashed" and name == "email":
                # Hex digests never start with a formula character: no escaping needed.
                exprs.append(f"{HASH_FUNCTION}({ident}) AS {HASHED_EMAIL}")
                schema.append((HASHED_EMAIL, "VARCHAR"))
            # Names are not matchable once hashed: drop them rather than pretend.
            continue
        escape = escape_csv and col_type == "VARCHAR"
        value = _escaped(ident) if escape else ident
        if pii != "plain" and name in pair_type:
            protected = f"{HASH_FUNCTION}({ident})" if pii == "hashed" else "NULL"
            kind = _quote_ident(pair_type[name])
            value = f"CASE WHEN {kind} = 'email' THEN {protected} ELSE {value} END"
        elif pii == "hashed" and name in pair_type.values():
            value = f"CASE WHEN {ident} = 'email' THEN '{HASHED_EMAIL}' ELSE {value} END"
        elif pii != "plain" and name == RAW_COLUMN:
            value = "CAST(NULL AS VARCHAR)"
        exprs.append(value if value == ident else f"{value} AS {ident}")
        schema.append((name, col_type))
    if not exprs:
        raise ValueError(f"pii={pii!r} leaves no column of {source} to deliver")
    return ", ".join(exprs), schema


def _copy_options(fmt: str, gzip: bool) -> str:
    if fmt == "csv":
        opts = "FORMAT csv, HEADER true"
    elif fmt == "json":
        opts = "FORMAT json"  # newline-delimited: one object per line
    else:
        return "FORMAT parquet, COMPRESSION zstd"
    return opts + (", COMPRESSION gzip" if gzip else "")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# A delivery's own DuckDB work (cutting parts, finding repeats, rewriting for an erasure) is
# bounded: unbounded, DuckDB takes up to 80% of RAM and spills into the working directory, and
# deliveries run side by side on one worker. One 10M-interaction drop peaked at 3.4 GiB
# (bench/bench_deliver.py); bounded, it spills and stays under 0.6 GiB.
DELIVERY_MEMORY_LIMIT = "512MB"


@contextlib.contextmanager
def scratch_duckdb(spill_parent: Path | str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB for a delivery's own work, at most :data:`DELIVERY_MEMORY_LIMIT`,
    spilling to a folder of its own under ``spill_parent`` (default: the system's temporary
    folder), removed at the end: two connections must not share one spill folder."""
    with tempfile.TemporaryDirectory(prefix="duckdb-spill-", dir=spill_parent) as spill:
        con = duckdb.connect(
            config={"memory_limit": DELIVERY_MEMORY_LIMIT, "temp_directory": spill}
        )
        try:
            # Rows come out in the order they are read, without an ORDER BY: parts are cut by
            # row number in file order, and the same export gives the same parts.
            con.execute("SET preserve_insertion_order = true")
            yield con
        finally:
            con.close()


def _iter_parts(
    con: duckdb.DuckDBPyConnection,
    parquet_path: str,
    cols: str,
    fmt: str,
    out_dir: Path,
    *,
    gzip: bool,
    max_file_mb: float | None,
) -> Iterator[tuple[Path, int]]:
    """Render ``part-NNNNN`` files one at a time (the caller uploads and frees each one).

    Parts are cut by row number in file order, and each is re-cut smaller until it fits
    ``max_file_mb`` (a single row larger than that gets a part of its own). Sizes depend only on
    the data, so the same export always gives the same parts, which a re-run relies on.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ext = EXTENSIONS[fmt] + (".gz" if gzip and fmt != "parquet" else "")
    source = f"read_parquet({_literal(parquet_path)}, file_row_number = true)"
    total = con.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0]
    limit = int(max_file_mb * _MIB) if max_file_mb else None
    rows_per_part = max(total, 1)
    if limit:
        text_bytes = Path(parquet_path).stat().st_size * 4  # parquet compresses ~4x vs text
        rows_per_part = max(int(limit * _SPLIT_HEADROOM / max(text_bytes / max(total, 1), 1)), 1)

    def render(path: Path, offset: int, rows: int) -> int:
        # In file order without an ORDER BY (preserve_insertion_order, scratch_duckdb): sorting
        # held the whole table in memory and took twice as long (5.6 s against 2.6 s, 2.9 GiB
        # against 0.9 GiB for the 5.8M-row audience_profile_interactions at 10M), same bytes.
        con.execute(
            f"COPY (SELECT {cols} FROM {source} "
            f"WHERE file_row_number >= {offset} AND file_row_number < {offset + rows}) "
            f"TO {_literal(str(path))} ({_copy_options(fmt, gzip)})"
        )
        return path.stat().st_size

    offset, index = 0, 0
    while True:
        path = out_dir / f"part-{index:05d}.{ext}"
        rows = min(rows_per_part, total - offset)
        size = render(path, offset, rows)
        if limit:
            while size > limit and rows > 1:
                rows = max(int(rows * limit * _SPLIT_HEADROOM / size), 1)
                size = render(path, offset, rows)
            # Size the next part from this one's bytes per row (grows back after a dense part).
            rows_per_part = max(int(rows * limit * _SPLIT_HEADROOM / max(size, 1)), 1)
        yield path, rows
        offset += rows
        index += 1
        if offset >= total:
            return


def render_parts(
    parquet_path: str,
    fmt: str,
    out_dir: Path,
    *,
    pii: str = "plain",
    escape_csv: bool = True,
    gzip: bool = False,
    max_file_mb: float | None = None,
) -> tuple[list[tuple[Path, int]], list[tuple[str, str]]]:
    """Render one table export into ``part-NNNNN`` files in ``out_dir``; return (path, rows) each.
    DuckDB spills next to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with scratch_duckdb(out_dir.parent) as con:
        cols, schema = select_list(
            con, f"read_parquet({_literal(parquet_path)})", pii, escape_csv and fmt == "csv"
        )
        parts = list(
            _iter_parts(con, parquet_path, cols, fmt, out_dir, gzip=gzip, max_file_mb=max_file_mb)
        )
        return parts, schema


def partition_prefix(prefix: str, table: str, ds: str) -> str:
    """``<prefix>/<table>/dt=<ds>`` without empty segments."""
    return "/".join(p for p in (prefix.strip("/"), table, f"dt={ds}") if p)


def write_partition(
    sink: Sink,
    prefix: str,
    table: str,
    parquet_path: str,
    config: DestinationConfig,
    run: RunInfo,
    scratch: Path | None = None,
) -> DropResult:
    """Replace ``<prefix>/<table>/dt=<ds>/`` in ``sink`` with the run's drop of ``table``;
    parts are rendered in ``scratch`` first (``PipelineConfig.scratch_root``; default: the
    system's temporary folder)."""
    partition = partition_prefix(prefix, table, run.ds)
    manifest_key = f"{partition}/{MANIFEST}"
    quicksight_key = f"{partition}/{QUICKSIGHT_MANIFEST}"
    existing = set(sink.list(partition + "/"))
    # Both manifests name parts that are about to change: withdraw them before touching any part.
    withdrawn = [k for k in (manifest_key, quicksight_key) if k in existing]
    if withdrawn:
        sink.delete(withdrawn)

    max_file_mb = config.options.get("max_file_mb")
    gzip = config.compression == "gzip"
    files: list[dict] = []
    schema: list[tuple[str, str]] = []
    total_rows = 0
    with tempfile.TemporaryDirectory(prefix="drop-", dir=scratch) as tmp:
        with scratch_duckdb(tmp) as con:
            source = f"read_parquet({_literal(parquet_path)})"
            for fmt in config.formats:
                cols, schema = select_list(
                    con, source, config.pii, config.csv_injection_escape and fmt == "csv"
                )
                parts = _iter_parts(
                    con,
                    parquet_path,
                    cols,
                    fmt,
                    Path(tmp),
                    gzip=gzip,
                    max_file_mb=float(max_file_mb) if max_file_mb else None,
                )
                total_rows = 0
                for path, rows in parts:
                    key = f"{partition}/{path.name}"
                    sink.put(path, key)
                    files.append(
                        {
                            "key": key,
                            "url": sink.url(key),
                            "format": fmt,
                            "compression": "gzip" if path.suffix == ".gz" else "none",
                            "rows": rows,
                            "bytes": path.stat().st_size,
                            "sha256": _sha256(path),
                        }
                    )
                    path.unlink()  # keep at most one part on local disk
                    total_rows += rows

        written = {f["key"] for f in files}
        stale = sorted(existing - written - {manifest_key, quicksight_key})
        if stale:
            sink.delete(stale)

        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "table": table,
            "dt": run.ds,
            "run_id": run.run_id,
            "destination": config.name,
            "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "rows": total_rows,
            "pii": config.pii,
            "csv_injection_escape": config.csv_injection_escape,
            "schema": [{"name": n, "type": t} for n, t in schema],
            "files": files,
        }
        quicksight = (
            quicksight_manifest(files) if config.options.get("quicksight_manifest") else None
        )
        if quicksight:
            quicksight_path = Path(tmp) / QUICKSIGHT_MANIFEST
            quicksight_path.write_text(json.dumps(quicksight, indent=2))
            sink.put(quicksight_path, quicksight_key)
        manifest_path = Path(tmp) / MANIFEST
        manifest_path.write_text(json.dumps(manifest, indent=2))
        sink.put(manifest_path, manifest_key)
    return DropResult(rows=total_rows, files=[f["key"] for f in files], manifest=manifest)


def keep_days(config: DestinationConfig) -> int | None:
    """The drop's ``keep_days``: how many days of partitions, up to the delivered date, it keeps
    (None: every partition, for ever)."""
    value = config.options.get("keep_days")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(
            f"destination {config.name!r}: keep_days must be a whole number of days, 1 or more "
            f"(got {value!r}); leave it out to keep every partition"
        )
    return value


def prune_partitions(sink: Sink, prefix: str, table: str, ds: str, days: int) -> list[str]:
    """Remove the table's complete partitions dated ``days`` or more days before ``ds``, each
    manifest first (a reader never takes a partition on its way out for a whole one), and return
    their folder names. Partitions after ``ds`` (a backfill's later dates) are left alone, and so
    is one without a manifest: another delivery may be writing it (a backfill beside the daily
    run), and its manifest would then name parts removed under it."""
    oldest_kept = (dt.date.fromisoformat(ds) - dt.timedelta(days=days - 1)).isoformat()
    base = "/".join(p for p in (prefix.strip("/"), table) if p) + "/"
    old: dict[str, list[str]] = {}
    for key in sink.list(base):
        folder = key[len(base) :].split("/", 1)[0]
        date = folder.removeprefix("dt=")
        if folder.startswith("dt=") and _ISO_DATE.match(date) and date < oldest_kept:
            old.setdefault(folder, []).append(key)
    complete = {f: keys for f, keys in old.items() if any(k.endswith("/" + MANIFEST) for k in keys)}
    for keys in complete.values():
        manifests = [k for k in keys if k.rsplit("/", 1)[-1] in (MANIFEST, QUICKSIGHT_MANIFEST)]
        sink.delete(manifests)
        sink.delete([k for k in keys if k not in manifests])
    return sorted(complete)


@contextlib.contextmanager
def table_lock(
    work_dir: str | Path, destination: str, table: str, *, prune: bool
) -> Iterator[bool]:
    """The lock between the deliveries of several dates to one drop table and its pruning.

    A delivery writing a partition holds it shared (deliveries of other dates write theirs side
    by side); ``keep_days`` pruning takes it alone, without waiting: yields False when a delivery
    is writing (the next delivery prunes). Unguarded, a prune that had listed an old partition
    with its manifest deleted the parts a re-delivery of that date wrote next, and the
    re-delivery's manifest then named files that were gone; and two prunes of one table at once
    (a catch-up) failed the delivery whose listing walked into a folder the other removed.
    ``flock`` on a file in the work folder, which every worker shares (as ``exports_lock``)."""
    folder = Path(work_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    name = safe_name(f"{destination}.{table}")
    with open(folder / f"drop-{name}.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB if prune else fcntl.LOCK_SH)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def deliver_drops(
    destination: Destination, sink: Sink, prefix: str, run: RunInfo, tables: dict[str, str]
) -> DeliveryReport:
    """Write one partition per configured table; the report names every part and manifest.
    With ``keep_days``, each table's partitions older than that are then removed."""
    report = destination.report()
    missing = [t for t in destination.config.tables if t not in tables]
    if missing:
        raise ValueError(
            f"run {run.run_id} exported no {', '.join(missing)} for {destination.name}"
        )
    days = keep_days(destination.config)
    work_dir = destination.pipeline.work_dir
    for table in destination.config.tables:
        with table_lock(work_dir, destination.name, table, prune=False):
            result = write_partition(
                sink,
                prefix,
                table,
                tables[table],
                destination.config,
                run,
                destination.pipeline.scratch_root,
            )
        report.rows[table] = result.rows
        report.files.extend(sink.url(k) for k in result.files)
        manifest_key = f"{partition_prefix(prefix, table, run.ds)}/{MANIFEST}"
        report.details.setdefault("manifests", {})[table] = sink.url(manifest_key)
        if days:
            with table_lock(work_dir, destination.name, table, prune=True) as alone:
                pruned = prune_partitions(sink, prefix, table, run.ds, days) if alone else []
            if not alone:
                log.info(
                    "%s: %s not pruned now, another delivery is writing it: the next one prunes",
                    destination.name,
                    table,
                )
            if pruned:
                report.details.setdefault("pruned", {})[table] = pruned
                log.info(
                    "%s: removed %d partition(s) of %s dated %d or more days before %s: %s",
                    destination.name,
                    len(pruned),
                    table,
                    days,
                    run.ds,
                    ", ".join(pruned[:5]),
                )
    return report


class DropDestination(Destination):
    """A kind that drops files (local, s3, azure): it says where (:meth:`sink`, and
    :meth:`prefix` when it takes a ``prefix`` option); delivery and erasure are the same for
    all of them."""

    WRITES_FILES = True

    def sink(self) -> Sink:
        raise NotImplementedError

    def prefix(self) -> str:
        """Where below the sink's root the tables go."""
        return ""

    def deliver(self, run: RunInfo, tables: dict[str, str]) -> DeliveryReport:
        return deliver_drops(self, self.sink(), self.prefix(), run, tables)

    def erase(self, requests: Sequence[ErasureRequest]) -> dict[str, dict[str, str]]:
        from audience_profiles.destinations.drop_erasure import erase_drops  # it imports this

        return erase_drops(self, self.sink(), self.prefix(), requests)


def quicksight_manifest(files: list[dict]) -> dict | None:
    """An AWS QuickSight manifest over the CSV parts (QuickSight reads CSV/JSON, not Parquet)."""
    csv_urls = [f["url"] for f in files if f["format"] == "csv"]
    if not csv_urls:
        return None
    return {
        "fileLocations": [{"URIs": csv_urls}],
        "globalUploadSettings": {"format": "CSV", "delimiter": ",", "containsHeader": "true"},
    }


class LocalSink:
    """A folder on this machine (or any mounted file system). Every key must stay inside it: a
    partition folder linked elsewhere is refused (``files.inside``), and parts are written as new
    files (``files.replace_file``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = self.root / key
        inside(path.parent, self.root)
        return path

    def put(self, local_path: Path, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        inside(target.parent, self.root)  # a link may have been made the folder meanwhile
        replace_file(target, local_path)

    def get(self, key: str, local_path: Path) -> None:
        shutil.copyfile(inside(self._path(key), self.root), local_path)

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.exists():
            return []
        inside(base, self.root)  # rglob does not follow links below it
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            if path.parent != self.root:
                with contextlib.suppress(OSError):  # a partition folder left empty goes too
                    path.parent.rmdir()

    def url(self, key: str) -> str:
        return str(self.root / key)
