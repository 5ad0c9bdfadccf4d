"""Timed file drops: one partition per table and run date, written so a re-run replaces it exactly.

Layout (shared by the local, S3 and Azure destinations)::

    <prefix>/<table>/dt=YYYY-MM-DD/part-NNNNN.<ext>[.gz]
    <prefix>/<table>/dt=YYYY-MM-DD/_manifest.json

Write order, so a reader never trusts an incomplete drop:
1. delete the old ``_manifest.json`` (the partition is now "in progress" for readers);
2. write every part of the new drop (same names overwrite, so a crash leaves old or new parts);
3. delete parts of an earlier, larger run that the new drop does not name;
4. write ``_manifest.json`` last, listing each file with its rows, bytes and SHA-256.

Formatting happens in an in-memory DuckDB over the run's Parquet export: the PII policy (plain,
hashed, omit), OWASP CSV-injection escaping, gzip and the split at ``max_file_mb`` all run there, so a
10-million-row drop never passes through Python rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import duckdb

from audience_profiles.config import DestinationConfig
from audience_profiles.destinations.base import RunInfo
from audience_profiles.privacy import PII_COLUMNS

MANIFEST = "_manifest.json"
EXTENSIONS = {"csv": "csv", "json": "json", "parquet": "parquet"}
# OWASP CSV injection: cells starting with these are treated as formulas by spreadsheets.
CSV_FORMULA_PREFIX = r"^[=+\-@\t\r]"


class Sink(Protocol):
    """Where drop files go. Keys are ``/``-separated paths below the sink's root."""

    def put(self, local_path: Path, key: str) -> None: ...
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


def select_list(
    con: duckdb.DuckDBPyConnection, source: str, pii: str, escape_csv: bool
) -> tuple[str, list[tuple[str, str]]]:
    """SQL select list applying the PII policy and CSV escaping; returns it with the out schema."""
    columns = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    exprs: list[str] = []
    schema: list[tuple[str, str]] = []
    for name, col_type, *_ in columns:
        ident = _quote_ident(name)
        if name in PII_COLUMNS and pii == "omit":
            continue
        if name in PII_COLUMNS and pii == "hashed":
            if name != "email":
                continue  # names are not matchable once hashed: drop them rather than pretend
            exprs.append(
                f"CASE WHEN {ident} IS NULL THEN NULL ELSE sha256(lower(trim({ident}))) END AS email_sha256"
            )
            schema.append(("email_sha256", "VARCHAR"))
            continue
        if escape_csv and col_type == "VARCHAR":
            exprs.append(
                f"CASE WHEN regexp_matches({ident}, '{CSV_FORMULA_PREFIX}') "
                f"THEN '''' || {ident} ELSE {ident} END AS {ident}"
            )
        else:
            exprs.append(ident)
        schema.append((name, col_type))
    return ", ".join(exprs) or "*", schema


def _copy_options(fmt: str, gzip: bool) -> str:
    if fmt == "csv":
        opts = "FORMAT csv, HEADER true"
    elif fmt == "json":
        opts = "FORMAT json"
    else:
        return "FORMAT parquet, COMPRESSION zstd"
    return opts + (", COMPRESSION gzip" if gzip else "")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    """Render one table export into ``part-NNNNN`` files in ``out_dir``; return (path, rows) each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ext = EXTENSIONS[fmt] + (".gz" if gzip and fmt != "parquet" else "")
    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = true")
        source = f"read_parquet('{parquet_path}')"
        cols, schema = select_list(con, source, pii, escape_csv and fmt == "csv")
        total = con.execute(f"SELECT count(*) FROM {source}").fetchone()[0]
        # Split by rows, sized from the export's average row width: deterministic part boundaries
        # (the same input always gives the same parts), which a re-run relies on.
        rows_per_part = total or 1
        if max_file_mb:
            size = Path(parquet_path).stat().st_size * 4  # parquet compresses ~4x vs text
            per_row = max(size / max(total, 1), 1)
            rows_per_part = max(int(max_file_mb * 1024 * 1024 / per_row), 1)
        parts: list[tuple[Path, int]] = []
        offset, index = 0, 0
        while offset < total or (total == 0 and index == 0):
            path = out_dir / f"part-{index:05d}.{ext}"
            con.execute(
                f"COPY (SELECT {cols} FROM {source} LIMIT {rows_per_part} OFFSET {offset}) "
                f"TO '{path}' ({_copy_options(fmt, gzip)})"
            )
            rows = min(rows_per_part, total - offset) if total else 0
            parts.append((path, rows))
            offset += rows_per_part
            index += 1
        return parts, schema
    finally:
        con.close()


def write_partition(
    sink: Sink,
    prefix: str,
    table: str,
    parquet_path: str,
    config: DestinationConfig,
    run: RunInfo,
) -> DropResult:
    """Replace ``<prefix>/<table>/dt=<ds>/`` in ``sink`` with the run's drop of ``table``."""
    partition = "/".join(p for p in (prefix.strip("/"), table, f"dt={run.ds}") if p)
    manifest_key = f"{partition}/{MANIFEST}"
    existing = set(sink.list(partition + "/"))
    if manifest_key in existing:
        sink.delete([manifest_key])

    max_file_mb = config.options.get("max_file_mb")
    files: list[dict] = []
    schema: list[tuple[str, str]] = []
    total_rows = 0
    with tempfile.TemporaryDirectory(prefix="drop-") as tmp:
        for fmt in config.formats:
            parts, schema = render_parts(
                parquet_path,
                fmt,
                Path(tmp) / fmt,
                pii=config.pii,
                escape_csv=config.csv_injection_escape,
                gzip=config.compression == "gzip",
                max_file_mb=float(max_file_mb) if max_file_mb else None,
            )
            total_rows = sum(rows for _, rows in parts)
            for path, rows in parts:
                key = f"{partition}/{path.name}"
                sink.put(path, key)
                files.append(
                    {
                        "key": key,
                        "url": sink.url(key),
                        "format": fmt,
                        "compression": config.compression or "none",
                        "rows": rows,
                        "bytes": path.stat().st_size,
                        "sha256": _sha256(path),
                    }
                )
        written = {f["key"] for f in files}
        stale = sorted(k for k in existing if k not in written and k != manifest_key)
        if stale:
            sink.delete(stale)

        manifest = {
            "table": table,
            "dt": run.ds,
            "run_id": run.run_id,
            "destination": config.name,
            "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "rows": total_rows,
            "pii": config.pii,
            "schema": [{"name": n, "type": t} for n, t in schema],
            "files": files,
        }
        manifest_path = Path(tmp) / MANIFEST
        manifest_path.write_text(json.dumps(manifest, indent=2))
        extra = quicksight_manifest(files) if config.options.get("quicksight_manifest") else None
        if extra:
            qs_path = Path(tmp) / "_quicksight_manifest.json"
            qs_path.write_text(json.dumps(extra, indent=2))
            sink.put(qs_path, f"{partition}/_quicksight_manifest.json")
        sink.put(manifest_path, manifest_key)
    return DropResult(rows=total_rows, files=[f["key"] for f in files], manifest=manifest)


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
    """A folder on this machine (or any mounted file system)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def put(self, local_path: Path, key: str) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(local_path, tmp)
        tmp.replace(target)  # atomic on one file system: readers see old or new, never half

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.exists():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            (self.root / key).unlink(missing_ok=True)

    def url(self, key: str) -> str:
        return str(self.root / key)
