"""The landing contract: which sources exist, where their files land, and how they are read.

Layout below the landing root (a local folder, or ``s3://bucket/prefix`` read through the amazon
provider's S3Hook)::

    interactions/date=YYYY-MM-DD/*.csv|*.json
    form_entries/date=YYYY-MM-DD/*.csv|*.json
    identities/date=YYYY-MM-DD/*.csv|*.json
    elements/*.csv|*.json                      (not partitioned: the current element catalogue)
    erasure_requests/*.csv|*.json              (not partitioned: every request ever filed; read by
                                                the erasure DAG, never by the daily build)

``*.json`` stands for ``*.ndjson`` and ``*.jsonl`` too. CSV files have a header row; JSON files
are newline-delimited objects with the same field names.
Either may be compressed with gzip, bzip2, zstd or xz, or be the one file of a zip archive
(``*.csv.gz``, ``*.json.bz2``, ``*.jsonl.zst``, ``*.csv.xz``, ``*.csv.zip``, ...:
:data:`CODECS`): it is decompressed into a scratch folder first and read as the plain file is,
its ``_file`` still the landed name.

Extraction reads every value as text (typing is validation's job, so a bad value becomes a
quarantine row instead of a crashed load) and keeps, per row, the file, the physical line number
and the raw text. A CSV record whose quoted value spans lines is numbered by the line it starts
on. A CSV file whose line endings are mixed (LF, CRLF, lone CR) is read line by line in Python,
each of them ending a physical line, and record by record. Rows the CSV parser cannot split (too
many or too few fields, a quote left open: then each physical line of the record on its own),
lines that are not JSON objects and JSON fields holding an object or array are kept too, flagged
in ``_error``: every input row reaches either an output table or quarantine. A file DuckDB cannot
read (a byte that is not UTF-8, a line over its maximum line size) is read by the Python path
too, which names the line that is not UTF-8 and has no line length limit, and so is a file
holding the four ASCII separators DuckDB's line reader splits on. A file that cannot be
read at all, or lacks a required column, fails the task with the file and column named, never
with a value (DuckDB's messages quote the row: they are never passed on). A file in a partition
that is not a data file (``*.csv``, ``*.json``, ``*.ndjson``, ``*.jsonl``, each also with ``.gz``,
``.bz2``, ``.zst``, ``.zip`` or ``.xz`` after it) fails the task too, unless its name starts
with ``_`` or ``.`` (a writer's marker or temporary file): its rows would be in no count.
"""

from __future__ import annotations

import bz2
import csv
import datetime as dt
import errno
import gzip
import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import duckdb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    partitioned: bool = True

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required + self.optional


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("interactions", ("date", "event_id", "poll_id", "session_id", "option", "votes")),
        Source(
            "elements",
            ("poll_id", "title", "option", "option_label"),
            ("element_type", "event_id"),
            partitioned=False,
        ),
        Source(
            "form_entries",
            ("entry_datetime", "email", "session_id"),
            # absent: no name and no consent statement (never an implied one)
            (
                "first_name",
                "last_name",
                "optin_1",
                "optin_2",
                "accept_terms",
                "form_name",
                "form_id",
            ),
        ),
        Source(
            "identities",
            ("observed_at", "session_id", "external_id"),
            ("email", "first_name", "last_name"),
        ),
        # Not partitioned: a request is acted on once (by request_id), so re-reading the folder
        # each run costs little, and a run that was missed or failed never strands a request.
        Source(
            "erasure_requests",
            ("request_id", "identifier_type", "identifier_value", "requested_at", "type"),
            partitioned=False,
        ),
    )
}
TEXT_SUFFIXES = (".csv", ".json", ".ndjson", ".jsonl")
DECOMPRESS_CHUNK = 1024 * 1024  # bytes decompressed at a time: files can be larger than memory
# bytes of a zstd file fed to its decompressor at a time: zstandard's decompressobj returns all
# it decompresses at once, and a block of 4 bytes may hold 128 KiB (at most 128 MiB from 4 KiB)
ZSTD_INPUT_CHUNK = 4096
MAGIC_LENGTH = 10  # bytes read from a file's start to tell the codec it is compressed with
# what an xz file's decompressor may hold: xz -9's 64 MiB dictionary and more, not a hostile 1.5 GiB
XZ_MEMORY_LIMIT = 128 * 1024 * 1024
XZ_MAGIC = b"\xfd7zXZ\x00"  # how each stream of an xz file starts


class _Undecodable(Exception):
    """Bytes a codec cannot decompress, raised by its reader in place of its library's error
    (whose message may quote them). Its argument, when given, says why better than "corrupt"."""


def _gzip_chunks(raw: BinaryIO) -> Iterator[bytes]:
    """The decompressed bytes of a gzip file, every member of a multi-member one (an exporter
    appending, ``cat a.gz b.gz``): one text."""
    try:
        with gzip.GzipFile(fileobj=raw, mode="rb") as source:
            while chunk := source.read(DECOMPRESS_CHUNK):
                yield chunk
    except (gzip.BadGzipFile, zlib.error):  # (EOFError, when cut short, goes through)
        raise _Undecodable from None


def _bzip2_chunks(raw: BinaryIO) -> Iterator[bytes]:
    """The decompressed bytes of a bzip2 file, every stream of a multi-stream one (pbzip2 and
    lbzip2 write them, ``cat a.bz2 b.bz2``): one text. Bytes after the last stream that are not a
    stream fail, as gzip's do (``bz2.BZ2File`` drops them unread)."""
    decompressor, fed = bz2.BZ2Decompressor(), False
    while data := raw.read(DECOMPRESS_CHUNK):
        fed = True
        while True:
            try:
                chunk = decompressor.decompress(data, DECOMPRESS_CHUNK)
            except OSError:  # "Invalid data stream"
                raise _Undecodable from None
            if chunk:
                yield chunk
            if decompressor.eof:  # a next stream starts with what followed this one
                data = decompressor.unused_data
                decompressor, fed = bz2.BZ2Decompressor(), bool(data)
                if not data:
                    break
            elif decompressor.needs_input:
                break
            else:  # more of what it holds, DECOMPRESS_CHUNK at a time
                data = b""
    if fed:  # a stream started and did not end
        raise EOFError


def _zstd_chunks(raw: BinaryIO) -> Iterator[bytes]:
    """The decompressed bytes of a zstd file, every frame of a multi-frame one (a streaming
    writer's flushes, ``cat a.zst b.zst``; a skippable frame holds no text): one text. Frame by
    frame, each in a decompressobj, which says where its frame ended: zstandard's stream_reader
    reads a file cut short as far as it goes, saying nothing."""
    import zstandard  # only a zstd file needs it

    context = zstandard.ZstdDecompressor()
    frame = None  # the decompressor of the frame being read
    while data := raw.read(ZSTD_INPUT_CHUNK):
        while data:
            if frame is None:
                frame = context.decompressobj()
            try:
                chunk = frame.decompress(data)
            except zstandard.ZstdError as exc:
                if "too much memory" in str(exc):  # a window over the decompressor's limit
                    raise _Undecodable(
                        "a zstd window over 128 MiB, as zstd --long=28 or more writes: compress "
                        "it with a smaller window"
                    ) from None
                raise _Undecodable from None
            if chunk:
                yield chunk
            data = b""
            if frame.eof:  # a next frame starts with what followed this one
                data, frame = frame.unused_data, None
    if frame is not None:  # a frame started and did not end
        raise EOFError


def _xz_chunks(raw: BinaryIO) -> Iterator[bytes]:
    """The decompressed bytes of an xz file, every stream of a multi-stream one (``cat a.xz
    b.xz``): one text. The null bytes the xz format allows between and after streams (stream
    padding, in fours) are skipped: ``lzma.decompress`` stops at them and drops every stream
    after, without a word. Other bytes after the last stream fail, as bzip2's do, however few
    (a decompressor would wait for the 12 bytes of a stream's header, and call them truncated)."""
    decompressor, started, padding = None, False, 0  # decompressor: None between streams
    while data := raw.read(DECOMPRESS_CHUNK):
        while True:
            if decompressor is None:  # the first stream, or padding and then the next one
                if started:
                    rest = data.lstrip(b"\0")
                    padding += len(data) - len(rest)
                    if not rest:
                        break
                    if padding % 4:
                        raise _Undecodable
                    data, padding = rest, 0
                head = data[: len(XZ_MAGIC)]
                if XZ_MAGIC[: len(head)] != head:  # no stream starts here
                    raise _Undecodable
                decompressor, started = _xz_decompressor(), True
            try:
                chunk = decompressor.decompress(data, DECOMPRESS_CHUNK)
            except lzma.LZMAError as exc:
                if "Memory usage limit" in str(exc):  # a dictionary over XZ_MEMORY_LIMIT
                    raise _Undecodable(
                        "an xz file that needs over 128 MiB of memory to decompress: compress "
                        "it with xz -9 or a lower preset"
                    ) from None
                raise _Undecodable from None
            if chunk:
                yield chunk
            if decompressor.eof:  # padding or a next stream may follow
                data, decompressor = decompressor.unused_data, None
            elif decompressor.needs_input:
                break
            else:  # more of what it holds, DECOMPRESS_CHUNK at a time
                data = b""
    if decompressor is not None:  # a stream started and did not end
        raise EOFError
    if padding % 4:
        raise _Undecodable


def _xz_decompressor() -> lzma.LZMADecompressor:
    return lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=XZ_MEMORY_LIMIT)


def _zip_chunks(raw: BinaryIO) -> Iterator[bytes]:
    """The decompressed bytes of the one file in a zip archive (Firehose's ZIP compression,
    pandas' ``to_csv("x.csv.zip")``). An archive of several files, or none, is refused: which of
    them is the landing file, and under which name, is not for the pipeline to guess. Read
    through its central directory at the end, so an archive cut short is corrupt, not
    truncated. An empty file is an empty text, as it is for the other codecs."""
    if not raw.read(1):
        return
    try:
        archive = zipfile.ZipFile(raw)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError):
        raise _Undecodable from None
    # bytes after the archive's end record (and its comment): rows appended to it, say, which
    # zipfile would leave unread without a word
    raw.seek(-(22 + len(archive.comment)), os.SEEK_END)
    if raw.read(4) != b"PK\x05\x06":
        raise _Undecodable("bytes after the end of the zip archive")
    # Members named as the landing's hidden files are not counted (is_hidden, on any part of
    # the path): macOS's Compress adds __MACOSX/._part-0.csv (the file's metadata) beside the
    # file, and such an archive failed as "a zip archive of 2 files".
    files = [
        member
        for member in archive.infolist()
        if not member.is_dir() and not any(is_hidden(part) for part in member.filename.split("/"))
    ]
    if len(files) != 1:
        raise _Undecodable(
            f"a zip archive of {len(files)} files: it must hold exactly one (names starting with "
            "_ or . not counted)"
        )
    member = files[0]
    if member.flag_bits & 0x1:
        raise _Undecodable("an encrypted zip archive")
    try:
        with archive.open(member) as source:
            while chunk := source.read(DECOMPRESS_CHUNK):
                yield chunk
    except NotImplementedError:  # a compression method zipfile cannot read
        raise _Undecodable(
            f"a zip archive compressed with method {member.compress_type}: use deflate"
        ) from None
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError):  # a bad CRC-32, corrupt data
        raise _Undecodable from None  # (EOFError, when the member is cut short, goes through)


@dataclass(frozen=True)
class Codec:
    """A compression a landing file may come in: named with ``suffix`` after its text format's
    own (``part-0.csv.gz``), and decompressed into a scratch file before it is read
    (:func:`stage_files`)."""

    name: str  # as messages say it: "truncated gzip", "gzip-compressed"
    suffix: str
    magic: re.Pattern[bytes]  # how a file of it starts (matched on its first MAGIC_LENGTH bytes)
    # the decompressed bytes of a file of it, a chunk at a time: EOFError when the file is cut
    # short, _Undecodable when its bytes are not the codec's
    chunks: Callable[[BinaryIO], Iterator[bytes]]
    article: str = "a"  # as "not a gzip file" says it


# what exporters compress landing files with (S3 exports, Firehose, Spark, Kafka Connect,
# warehouse unloads)
CODECS = (
    Codec("gzip", ".gz", re.compile(rb"\x1f\x8b"), _gzip_chunks),
    # "BZh", the block size, then a block's magic or the end of an empty stream's: a text may
    # start with "BZh9"
    Codec("bzip2", ".bz2", re.compile(rb"BZh[1-9](?:1AY&SY|\x17rE8P\x90)"), _bzip2_chunks),
    # a frame's magic, or a skippable frame's (it may come first)
    Codec("zstd", ".zst", re.compile(rb"\x28\xb5\x2f\xfd|[\x50-\x5f]\x2a\x4d\x18"), _zstd_chunks),
    # a local file header, or the end of an archive holding none
    Codec("zip", ".zip", re.compile(rb"PK\x03\x04|PK\x05\x06"), _zip_chunks),
    Codec("xz", ".xz", re.compile(re.escape(XZ_MAGIC)), _xz_chunks, article="an"),
)
# what the pipeline reads: each text format as landed, or compressed with one of CODECS
FILE_SUFFIXES = TEXT_SUFFIXES + tuple(s + c.suffix for c in CODECS for s in TEXT_SUFFIXES)
# FILE_SUFFIXES as messages say them
FILE_SUFFIXES_IN_WORDS = (
    f"{', '.join('*' + s for s in TEXT_SUFFIXES)}, each also compressed: "
    f"{', '.join('*' + TEXT_SUFFIXES[0] + c.suffix for c in CODECS)}, ..."
)
STAGING_MEMORY_LIMIT = "768MB"
LINE_ENDING_CHUNK = 8 * 1024 * 1024  # bytes read at a time to check a file's line endings
# _read_lines' column delimiter (DuckDB reads every physical line as one value when no line
# holds it): chr(28) to chr(31), the ASCII separators, which text has no use for.
LINE_DELIMITER = b"\x1c\x1d\x1e\x1f"
BYTE_ORDER_MARK = b"\xef\xbb\xbf"  # UTF-8's, which a file may start with
RECORD_BATCH = 100_000  # lines or records the Python paths hold at a time


class LandingError(ValueError):
    """A landing file that cannot be used at all (unreadable, or a required column is missing)."""


def partition_prefix(source: Source, ds: str) -> str:
    return f"{source.name}/date={ds}" if source.partitioned else source.name


_PARTITION = re.compile(r"date=(\d{4}-\d{2}-\d{2})")
# a folder named as a partition otherwise: key=value, or a bare date (not archive-2022-04-28)
_PARTITION_LIKE = re.compile(r"[^=/]+=.*|\d{4}-\d{1,2}-\d{1,2}")


def partition_date(name: str) -> str | None:
    """The date of a partition folder's name ``date=YYYY-MM-DD`` (a real date); else None."""
    found = _PARTITION.fullmatch(name)
    if not found:
        return None
    try:
        return dt.date.fromisoformat(found.group(1)).isoformat()
    except ValueError:
        return None


NAMES_SHOWN = 5  # names a message, report entry or log line lists, with the number of them all


def some_names(names: list[str], sep: str = ", ") -> str:
    """The first :data:`NAMES_SHOWN` names, and how many more."""
    more = len(names) - NAMES_SHOWN
    return sep.join(names[:NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")


def _check_source_folder(entries: Iterable[tuple[str, bool]], where: str) -> None:
    """Fail on what a partitioned source's folder holds that no run would ever read: a folder
    named as a partition but not ``date=YYYY-MM-DD`` (``date=2022-4-30``, ``dt=2022-04-30``,
    ``2022-04-30``), or a data file outside any partition. Both were skipped by every run, their
    rows in no count. ``entries``: (name, is a folder). Other folders (an ``archive/``) are left
    alone."""
    stray = sorted(
        shown(name) + ("/" if is_folder else "")
        for name, is_folder in entries
        if is_stray(name, is_folder)
    )
    if stray:
        raise LandingError(
            f"{where}: {len(stray)} entr{'y' if len(stray) == 1 else 'ies'} no run reads: "
            f"{some_names(stray)} (a source's files belong in folders named date=YYYY-MM-DD; names starting "
            "with _ or . are ignored): rename or move them"
        )


def is_stray(name: str, is_folder: bool) -> bool:
    """An entry of a partitioned source's folder that no run reads: a folder named as a
    partition (a ``key=value`` folder, or one named just a date) but not ``date=YYYY-MM-DD``,
    or a data file outside any partition."""
    if is_hidden(name):
        return False
    if is_folder:
        # dt=, Date= and a bare date were skipped by every run as much as date=2022-4-30
        return partition_date(name) is None and bool(_PARTITION_LIKE.fullmatch(name))
    return is_data_file(name)


def is_unread_sub_folder(name: str, source: Source) -> bool:
    """Whether the files of a sub-folder ``name`` of the folder a run reads are rows no run
    reads: any folder in a partition (not hidden), and in the folder of a source without
    partitions one named as a partition (``date=2022-04-30``, ``dt=...``, a bare date; not an
    ``archive/``)."""
    if is_hidden(name):
        return False
    return source.partitioned or bool(
        partition_date(name) is not None or _PARTITION_LIKE.fullmatch(name)
    )


def _check_sub_folders(nested: list[str], where: str, source: Source, beside_data: bool) -> None:
    """Fail on ``nested`` (:func:`is_unread_sub_folder`, holding files): in a partition
    (``hour=10/``; not a writer's ``_temporary/``), or named as partitions in the folder of a
    source that has none (``elements/date=2022-04-30/``, the catalogue landed a level too deep:
    every interaction lost its title). A run reads the folder's own files only, and theirs were
    in no count, output or quarantine. But in the folder of a source without partitions that
    holds data files itself (``beside_data``) they are likely old catalogues kept, and the one
    read is the folder's own, so a warning names them (a newer catalogue landed there would
    otherwise be passed over unremarked)."""
    if not nested:
        return
    names = some_names(sorted(f"{shown(n)}/" for n in nested))
    if not source.partitioned and beside_data:
        log.warning(
            "%s: folder(s) named as partitions, not read (%s/ has no date partitions: the "
            "catalogue read is the folder's own files): %s",
            where,
            source.name,
            names,
        )
        return
    what = (
        "a partition's files belong directly in it"
        if source.partitioned
        else f"{source.name}/ has no date partitions: its files belong directly in it"
    )
    raise LandingError(
        f"{where}: {len(nested)} folder(s) in the "
        f"{'partition' if source.partitioned else 'folder'} that no run reads: "
        f"{names} ({what}; names starting with _ or . are ignored): move their files up"
    )


def shown(name: str) -> str:
    """``name`` as messages and the run report show it: a file name that is not UTF-8 (a Latin-1
    ``é``, from a Windows share) with its bytes escaped (``caf\\xe9.csv``). Held as it came,
    it could not be written to a UTF-8 log, and the run report's page failed on it."""
    if not _UNDECODABLE.search(name):
        return name
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def is_hidden(name: str) -> bool:
    """A writer's marker or temporary file (``_SUCCESS``, ``.part-0.csv.crc``): not landed data."""
    return Path(name).name.startswith(("_", "."))


def is_data_file(name: str) -> bool:
    return name.lower().endswith(FILE_SUFFIXES) and not is_hidden(name)


def codec_of(name: str) -> Codec | None:
    """The codec a landing file's name says it is compressed with (its last suffix, in any
    case), or None for a plain file."""
    lower = name.lower()
    return next((c for c in CODECS if lower.endswith(c.suffix)), None)


def _codec_by_magic(head: bytes) -> Codec | None:
    """The codec whose magic bytes ``head`` (a file's first bytes) starts with, if any."""
    return next((c for c in CODECS if c.magic.match(head)), None)


def _check_no_unread_files(names: Iterable[str], prefix: str) -> None:
    """Fail on files of the partition that are neither read nor hidden (``part-0.csv.7z``,
    ``part-1.txt``): skipped, their rows would be in no count, output or quarantine."""
    unread = sorted(Path(n).name for n in names if not is_hidden(n) and not is_data_file(n))
    # A name ending in white space (`part-0.csv `, a carriage return) looks like one that is
    # read: quoted, so the message shows why it is not.
    unread = [repr(n) if n != n.strip() else n for n in unread]
    if unread:
        raise LandingError(
            f"{prefix}: {len(unread)} file(s) the pipeline does not read: {some_names(unread)} (it reads "
            f"{FILE_SUFFIXES_IN_WORDS}; names starting with _ or . are ignored): convert, rename "
            "or move them"
        )


def refused_local_file(path: Path, root: Path) -> str | None:
    """Why a local landing data file is not read, or None. A file read through a link (itself,
    or a linked folder on its way) must be a regular file inside the landing root: otherwise
    whoever can write to the landing folder could have a run read any file the worker can (a
    credentials file's lines land in quarantine, which drops deliver), or hang on a pipe. A
    dangling link passes here: reading it fails, naming it. ``root``: the landing root,
    resolved once by the caller (``Path.resolve``).

    The check comes before the read: a writer who swaps a checked file for a link in between
    is not stopped (docs/operations.md, "Who can read the files")."""
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # a loop of links
        return f"{path}: a loop of links; remove them and land the file itself"
    if not target.exists():
        return None
    if not target.is_relative_to(root):
        return (
            f"{path}: leads outside the landing folder (a link, or a linked folder); "
            "copy the file in instead"
        )
    if not target.is_file():
        return f"{path}: not a regular file (a pipe, a device, a folder); land a file instead"
    return None


def _check_local_files_are_their_own(paths: Iterable[Path], landing_root: str) -> None:
    root = Path(landing_root).resolve()
    refused = [r for p in paths if is_data_file(p.name) and (r := refused_local_file(p, root))]
    if refused:  # each reason holds commas: "; " between them
        raise LandingError(f"{len(refused)} landing file(s) refused: {some_names(refused, '; ')}")


def local_version(stat: os.stat_result) -> str:
    """A local landing file's version, as the stream's ledger records it: changes with its
    content (mtime_ns and size)."""
    return f"{stat.st_mtime_ns}-{stat.st_size}"


def s3_version(etag: str) -> str:
    """An S3 object's version: its ETag without the quotes S3 wraps it in."""
    return str(etag).strip('"')


def landed_versions(names: Iterable[str], conn_id: str | None) -> dict[str, str]:
    """The version of each of ``names`` (local paths or ``s3://bucket/key``, as ``_file`` holds
    them) on landing now, as the stream's ledger records it (mtime_ns-size, or the S3 ETag);
    files gone are left out."""
    versions = {}
    for name in names:
        if name.startswith("s3://"):
            continue
        try:
            stat = Path(name).stat()
        except OSError:
            continue
        versions[name] = local_version(stat)
    remote = [n for n in names if n.startswith("s3://")]
    if remote:
        hook = _s3_hook(conn_id)
        for name in remote:
            bucket, _, key = name.removeprefix("s3://").partition("/")
            head = hook.head_object(key, bucket)
            if head:
                versions[name] = s3_version(head["ETag"])
    return versions


def partition_gap(
    landing_root: str, source: Source, ds: str, conn_id: str | None, marker: str | None = None
) -> str | None:
    """Why the source's partition for ``ds`` does not count as landed yet, naming its folder;
    None once it does: it holds ``marker`` when one is given, else at least one data file (a
    file with only its header says the day had no rows). A partition the extract would fail on
    (a file it does not read, a misnamed partition folder) raises ``LandingError`` as the extract
    does, rather than wait for a data file that is there under a name no run reads."""
    if landing_root.startswith("s3://"):
        where, keys = _checked_s3_keys(landing_root, source, ds, _s3_hook(conn_id))
        names = [k.rsplit("/", 1)[-1] for k in keys]
    else:
        folder = Path(landing_root) / partition_prefix(source, ds)
        where, names = (
            str(folder),
            [p.name for p in _checked_local_files(folder, source, landing_root)],
        )
    if marker is not None:
        return None if marker in names else f"{where}: no {marker} in it yet"
    if any(is_data_file(name) for name in names):
        return None
    return f"{where}: no data file in it yet"


def partitions_before(
    landing_root: str, source: Source, earliest: str, conn_id: str | None
) -> tuple[str, list[str]]:
    """``(source folder, partition folder names)`` of the source's partitions dated before
    ``earliest`` (the pipeline's ``start_date``): no daily run reads them, since a run reads only
    the partition of its own date and none runs before ``start_date``."""
    where, names = partition_folders(landing_root, source, conn_id)
    return where, sorted(n for n in names if (d := partition_date(n)) is not None and d < earliest)


def partition_folders(
    landing_root: str, source: Source, conn_id: str | None
) -> tuple[str, list[str]]:
    """``(source folder, names of the folders in it)``: one listing."""
    if landing_root.startswith("s3://"):
        bucket, prefix = _s3_prefix(landing_root, source.name)
        folders = _s3_hook(conn_id).list_prefixes(bucket, prefix=prefix, delimiter="/") or []
        where, names = (
            f"s3://{bucket}/{prefix.rstrip('/')}",
            [f.rstrip("/").rsplit("/", 1)[-1] for f in folders],
        )
    else:
        folder = Path(landing_root) / source.name
        where = str(folder)
        names = [p.name for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    return where, names


def unread_root_entries(landing_root: str, conn_id: str | None) -> tuple[str, list[str]]:
    """``(landing root, what at its top no run reads)``: data files lying at the root, and
    folders named like a source but not as one (``form-entries/``, ``Interactions/``,
    ``identity/``), each with the source it resembles. A misspelt source folder was read by no
    run and named by no check: its rows were in no count, output or quarantine. Other folders
    (an ``archive/``, another team's exports) and hidden names (``_``, ``.``) are left alone."""
    if landing_root.startswith("s3://"):
        bucket, _, prefix = landing_root.removeprefix("s3://").partition("/")
        prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        folders, keys = _s3_folder(_s3_hook(conn_id), bucket, prefix)
        where = f"s3://{bucket}/{prefix}".rstrip("/")
        entries = [(f.rstrip("/").rsplit("/", 1)[-1], True) for f in folders]
        entries += [(k.rsplit("/", 1)[-1], False) for k in keys]
    else:
        root = Path(landing_root)
        where = str(root)
        entries = [(p.name, p.is_dir()) for p in root.iterdir()] if root.is_dir() else []
    unread = []
    for name, is_folder in sorted(entries):
        if is_hidden(name) or not name:
            continue
        if not is_folder:
            if is_data_file(name):
                unread.append(
                    f"{shown(name)} (a source's files belong in <source>/date=YYYY-MM-DD/)"
                )
        elif name not in SOURCES and (like := _source_like(name)):
            unread.append(f"{shown(name)}/ (not {like}/)")
    return where, unread


def _source_like(name: str) -> str | None:
    """The source a folder's name is a misspelling of, if any: the same but for case and
    separators (``Form-Entries``, ``formentries``), its singular (``identity``, ``interaction``),
    or one letter off (``interacions``, ``elemnets``). Names that hold a source's name among other
    words (``interactions_archive``, ``new_interactions``) or are other words (``reactions``,
    ``identifiers``) are someone's own folders, not typos."""
    plain = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    for source in SOURCES:
        singular = re.sub(r"ies$", "y", source) if source.endswith("ies") else source[:-1]
        for form in (source, singular):
            if plain.replace("_", "") == form.replace("_", ""):
                return source
        if len(plain) >= 6 and _one_edit_apart(plain, source):
            return source
    return None


def _one_edit_apart(a: str, b: str) -> bool:
    """Whether ``a`` becomes ``b`` by one inserted, removed or changed letter, or two swapped."""
    if a == b or abs(len(a) - len(b)) > 1:
        return a == b
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        return len(diff) == 1 or (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def _checked_local_files(folder: Path, source: Source, landing_root: str) -> list[Path]:
    """The partition folder's files (markers included), once nothing in it or in the source's
    folder would be left unread and none leads outside the landing root (``LandingError`` naming
    them otherwise)."""
    if source.partitioned and folder.parent.is_dir():
        _check_source_folder(
            ((p.name, p.is_dir()) for p in folder.parent.iterdir()), str(folder.parent)
        )
    found = _partition_files(folder)
    _check_names_are_utf8((p.name for p in found), str(folder))
    _check_no_unread_files((str(p) for p in found), str(folder))
    _check_local_files_are_their_own(found, landing_root)
    if folder.is_dir():
        nested = [
            p.name
            for p in folder.iterdir()
            if p.is_dir() and is_unread_sub_folder(p.name, source) and _holds_files(p)
        ]
        _check_sub_folders(nested, str(folder), source, any(is_data_file(f.name) for f in found))
    return found


def _check_names_are_utf8(names: Iterable[str], where: str) -> None:
    """Fail on files of the partition (not hidden) whose names are not UTF-8 (a Latin-1 ``é``
    from a Windows share or a zip), named with their bytes escaped (``caf\\xe9.csv``). Such a
    name is no text: the rows' ``_file`` could not be stored, so the file failed as ``cannot be
    read (InvalidInputException)``, and a message holding it cannot be written to a UTF-8 log."""
    bad = sorted(shown(n) for n in names if not is_hidden(n) and _UNDECODABLE.search(n))
    if bad:
        raise LandingError(
            f"{where}: {len(bad)} file name(s) not UTF-8 text: {some_names(bad)} (a landing "
            "file's name is stored with its rows, as text): rename them"
        )


def _holds_files(folder: Path) -> bool:
    """Whether ``folder`` (not hidden) holds a file not hidden, at any depth, none of the
    folders on the way hidden: an empty ``logs/`` is no one's rows."""
    if is_hidden(folder.name):
        return False
    return any(
        (path.is_file() or path.is_symlink())
        and not any(is_hidden(part) for part in path.relative_to(folder).parts)
        for path in folder.rglob("*")
    )


def _partition_files(folder: Path) -> list[Path]:
    """The local partition folder's files. A dangling link counts: reading it fails, naming it."""
    return [p for p in folder.glob("*") if p.is_file() or p.is_symlink()]


def _s3_prefix(landing_root: str, folder: str) -> tuple[str, str]:
    """``(bucket, key prefix ending in /)`` of ``folder`` under an ``s3://`` landing root."""
    bucket, _, root_prefix = landing_root.removeprefix("s3://").partition("/")
    return bucket, "/".join(p for p in (root_prefix.strip("/"), folder) if p) + "/"


def _s3_hook(conn_id: str | None, hooks: dict | None = None):
    """An S3Hook for ``conn_id``, kept in ``hooks`` when given (one client for many listings)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook  # heavy import: only when used

    hooks = {} if hooks is None else hooks
    if conn_id not in hooks:
        hooks[conn_id] = S3Hook(aws_conn_id=conn_id)
    return hooks[conn_id]


def _s3_folder(hook, bucket: str, prefix: str) -> tuple[list[str], list[str]]:
    """``(sub-folder prefixes, keys)`` directly under ``prefix``: one listing, where
    ``list_prefixes`` and ``list_keys`` each make the same ListObjectsV2 request."""
    folders: list[str] = []
    keys: list[str] = []
    pages = hook.get_conn().get_paginator("list_objects_v2")
    for page in pages.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        folders += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        keys += [o["Key"] for o in page.get("Contents", [])]
    return folders, keys


def _checked_s3_keys(landing_root: str, source: Source, ds: str, hook) -> tuple[str, list[str]]:
    """``(s3://`` folder, keys)`` of the partition's own objects (markers included; not a
    writer's ``_temporary/`` sub-folder), checked as :func:`_checked_local_files` does."""
    bucket, full_prefix = _s3_prefix(landing_root, partition_prefix(source, ds))
    if source.partitioned:
        source_prefix = _s3_prefix(landing_root, source.name)[1]
        folders, files = _s3_folder(hook, bucket, source_prefix)
        _check_source_folder(
            [(f.rstrip("/").rsplit("/", 1)[-1], True) for f in folders]
            + [(k.rsplit("/", 1)[-1], False) for k in files if not k.endswith("/")],
            f"s3://{bucket}/{source_prefix.rstrip('/')}",
        )
    # delimiter "/": the partition's own files, as locally; not a writer's _temporary/ sub-folder
    sub_folders, listed = _s3_folder(hook, bucket, full_prefix)
    keys = [k for k in listed if not k.endswith("/")]
    where = f"s3://{bucket}/{full_prefix.rstrip('/')}"
    _check_no_unread_files((f"s3://{bucket}/{k}" for k in keys), where)
    nested = [
        folder.rstrip("/").rsplit("/", 1)[-1]
        for folder in sub_folders
        if is_unread_sub_folder(folder.rstrip("/").rsplit("/", 1)[-1], source)
        # a sub-folder's keys, but folder keys ("logs/") and hidden ones: an empty logs/ is
        # no one's rows (one listing each, for sub-folders only)
        and any(
            not key.endswith("/")
            and not any(is_hidden(part) for part in key[len(folder) :].split("/"))
            for key in hook.list_keys(bucket, prefix=folder) or []
        )
    ]
    _check_sub_folders(nested, where, source, any(is_data_file(k) for k in keys))
    return where, keys


def partition_versions(
    landing_root: str, source: Source, ds: str, conn_id: str | None, hooks: dict | None = None
) -> dict[str, str]:
    """The data files of the source's partition for ``ds`` on landing now (as ``_file`` names
    them) and their versions: what a run of the date would read. ``hooks`` keeps the S3 hook
    between calls (one client for many partitions)."""
    prefix = partition_prefix(source, ds)
    if not landing_root.startswith("s3://"):
        files = _partition_files(Path(landing_root) / prefix)
        # (shown: a name that is not UTF-8, which the extract refuses, is late, and the run
        # report's page must be able to name it)
        return {shown(str(p)): _local_version_of(p) for p in files if is_data_file(p.name)}
    bucket, full_prefix = _s3_prefix(landing_root, prefix)
    return {
        f"s3://{bucket}/{item['Key']}": s3_version(item["ETag"])
        for item in _s3_hook(conn_id, hooks).iter_file_metadata(full_prefix, bucket)
        # the partition's own files, as the extract reads them (not a writer's sub-folder)
        if "/" not in item["Key"][len(full_prefix) :] and is_data_file(item["Key"])
    }


def _local_version_of(path: Path) -> str:
    try:
        return local_version(path.stat())
    except OSError:  # a dangling link: reading it fails, naming it
        return ""


@contextmanager
def local_files(
    landing_root: str, source: Source, ds: str, conn_id: str | None, scratch: Path | None = None
) -> Iterator[list[tuple[str, Path, str]]]:
    """Yield ``(display name, local path, version)`` for the source's files of ``ds``, sorted by
    name. The version (as :func:`landed_versions` gives it) is taken before the file is read: one
    replaced meanwhile then shows as changed since (``late_landings``), never the other way.

    Local roots are read in place; ``s3://`` roots are downloaded to a temporary folder through
    S3Hook first (DuckDB then reads them exactly as it reads local files), into ``scratch``
    (the run's extract folder, which cleanup removes even after a killed task).
    """
    if not landing_root.startswith("s3://"):
        found = _checked_local_files(
            Path(landing_root) / partition_prefix(source, ds), source, landing_root
        )
        files = sorted(p for p in found if is_data_file(p.name))
        yield [(str(p), p, _local_version_of(p)) for p in files]
        return

    from botocore.exceptions import ClientError  # with the S3 hook's import: only when used

    hook = _s3_hook(conn_id)
    bucket = _s3_prefix(landing_root, "")[0]
    keys = sorted(k for k in _checked_s3_keys(landing_root, source, ds, hook)[1] if is_data_file(k))
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"landing-{source.name}-", dir=scratch))
    try:
        out = []
        for i, key in enumerate(keys):
            # the name's end only, which holds its suffixes (all stage_files reads of it): a
            # key's last part may be up to 1,024 bytes, a file name only 255, of which the
            # download's temporary name takes 9 more ("File name too long" at 241)
            target = tmp / f"{i:05d}-{Path(key).name[-40:]}"
            name = f"s3://{bucket}/{key}"
            try:
                # loaded (a HEAD): its ETag is the one before reading
                obj = hook.get_key(key, bucket)
                obj.download_file(str(target))
            except ClientError as exc:
                raise LandingError(f"{name}: cannot be read ({_s3_failure(exc)})") from exc
            out.append((name, target, s3_version(obj.e_tag)))
        yield out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _s3_failure(exc) -> str:
    """Why S3 would not give a landing file (a botocore ``ClientError``), as its message says it:
    the key it names nowhere (``An error occurred (404) when calling the HeadObject operation:
    Not Found``), so a failed extract left the operator to guess which file of the partition."""
    error = exc.response.get("Error", {})
    code, message = error.get("Code", "?"), error.get("Message", "")
    if code in ("404", "NoSuchKey"):  # listed, then deleted (a writer replacing its files)
        return f"{code}{' Not Found' if code == '404' else ''}: gone since the partition was listed"
    if code == "InvalidObjectState":  # archived by a lifecycle rule
        return f"{code}: archived (Glacier, Deep Archive): restore it first"
    return f"{code} {message}".strip()


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _read_lines(con: duckdb.DuckDBPyConnection, path: Path) -> bool:
    """Load the file's physical lines into temp table ``lines(line, text)`` (1-based, blanks
    kept). False when DuckDB cannot read them (a byte that is not UTF-8, a line over its maximum
    line size): the caller reads the file with ``_read_lines_python``, which names the line that
    is not UTF-8 and has no line size limit. DuckDB's message is dropped: it quotes the row."""
    # No quoting and a four-character delimiter that text does not contain: every physical line
    # becomes one value (a one-character delimiter cut a line holding that character short). A
    # file that does hold it never comes here (_line_ending): DuckDB dropped the rest of its line.
    con.execute("DROP TABLE IF EXISTS lines_raw")
    try:
        con.execute(
            f"CREATE TEMP TABLE lines_raw AS SELECT text FROM read_csv({_sql_str(str(path))}, "
            "columns={'text': 'VARCHAR'}, header=false, delim=chr(28) || chr(29) || chr(30) || chr(31), "
            "quote='', escape='', auto_detect=false, strict_mode=false, hive_partitioning=false)"
        )
    except duckdb.Error:
        return False
    con.execute("DROP TABLE IF EXISTS lines")
    con.execute("CREATE TEMP TABLE lines AS SELECT rowid + 1 AS line, text FROM lines_raw")
    con.execute("DROP TABLE lines_raw")  # memory: files can be large
    return True


def _line_ending(path: Path) -> str | None:
    """The file's line ending when all its lines end alike: no CR at all ('\\n'), or every CR
    followed by an LF and every LF preceded by a CR ('\\r\\n'); None when they are mixed
    (DuckDB fails such a file whole, naming no line, or splits a lone CR or a CRLF in a quoted
    value wrongly: a character lost, a line break added and every later line number shifted),
    and None too when a line holds ``_read_lines``' delimiter (:data:`LINE_DELIMITER`): DuckDB
    dropped what followed it on the line, or when the whole file is the start of a byte order
    mark, which DuckDB read as an empty file. Either way the file is read in Python."""
    buf = bytearray(LINE_ENDING_CHUNK)  # in chunks: files can be larger than memory
    n_cr = n_lf = n_crlf = 0
    lone_lf = False  # an LF in a chunk without a CR (so not part of a CRLF)
    tail = 0  # the previous chunk's last byte: a CRLF may straddle two chunks
    last = b""  # the file's last bytes read, up to 3: the delimiter may straddle chunks too
    reach = len(LINE_DELIMITER) - 1
    head = b""  # the file's first bytes, up to the byte order mark's length
    with path.open("rb", buffering=0) as f:
        while size := f.readinto(buf):
            head += bytes(buf[: min(size, len(BYTE_ORDER_MARK) - len(head))])
            # its first byte alone first: a one-byte search is ten times faster (memchr)
            if (
                buf.find(LINE_DELIMITER[:1], 0, size) != -1
                and buf.find(LINE_DELIMITER, 0, size) != -1
            ) or LINE_DELIMITER in last + buf[: min(reach, size)]:
                return None
            # (from the chunks before too: a chunk may be shorter than the delimiter)
            last = (last + bytes(buf[max(0, size - reach) : size]))[-reach:]
            straddling = tail == 0x0D and buf[0] == 0x0A
            n_crlf += straddling
            cr = buf.count(b"\r", 0, size)
            if cr:
                n_cr += cr
                n_lf += buf.count(b"\n", 0, size)
                n_crlf += buf.count(b"\r\n", 0, size)
            else:  # LFs are counted only in chunks with a CR: an LF file costs one count
                n_lf += straddling
                lone_lf = lone_lf or buf.find(b"\n", straddling, size) != -1
            tail = buf[size - 1]
    if head and len(head) < len(BYTE_ORDER_MARK) and BYTE_ORDER_MARK.startswith(head):
        return None  # the whole file: Python says it is not UTF-8
    if n_cr == 0:
        return "\n"
    return "\r\n" if not lone_lf and n_cr == n_lf == n_crlf else None


# What the surrogateescape error handler makes of a byte that is not UTF-8 (valid UTF-8 never
# decodes to a lone surrogate).
_UNDECODABLE = re.compile("[\udc80-\udcff]")


def _insert_arrow(con: duckdb.DuckDBPyConnection, table, insert: str) -> None:
    """Run ``insert``, SQL reading the Arrow ``table`` as ``arrow_rows`` (a batch of the Python
    paths' lines or records)."""
    con.register("arrow_rows", table)
    try:
        con.execute(insert)
    finally:
        con.unregister("arrow_rows")


def _read_lines_python(con: duckdb.DuckDBPyConnection, name: str, path: Path) -> list[str]:
    """Load the file's physical lines into temp table ``lines(line, text)`` as ``_read_lines``
    does, reading them in Python: a CRLF, a lone CR and an LF each end a line (as in an editor,
    and in Python's csv module), whichever the file mixes. Returns each line's ending ('' for a
    last line without one): the record-by-record path keeps them in values and ``_raw``."""
    import pyarrow as pa  # only files off the fast path need it

    texts: list[str] = []
    endings: list[str] = []  # a pointer per line: one string object per kind, not per line
    kinds = {e: e for e in ("\r\n", "\n", "\r", "")}
    con.execute("DROP TABLE IF EXISTS lines")
    con.execute("CREATE TEMP TABLE lines (line BIGINT, text VARCHAR)")

    def insert(first: int) -> None:  # in batches: files can be larger than memory
        batch = pa.table(
            {
                "line": pa.array(range(first, first + len(texts)), pa.int64()),
                "text": pa.array(texts, pa.string()),
            }
        )
        _insert_arrow(con, batch, "INSERT INTO lines SELECT line, text FROM arrow_rows")
        texts.clear()

    with path.open("rb") as f:
        head = f.read(MAGIC_LENGTH)
        if len(head) < len(BYTE_ORDER_MARK) and head and BYTE_ORDER_MARK.startswith(head):
            # the whole file: Python's utf-8-sig decoder reads it as an empty text
            raise LandingError(f"{name}: line 1 is not UTF-8 text")
        found = _codec_by_magic(head)
        if found is not None:  # else "line 1 is not UTF-8 text", pointing nowhere useful
            landed = codec_of(name)
            if landed is not None:  # what it decompressed to is compressed again
                twice = (
                    f"{found.name}-compressed twice (decompressed, it starts with {found.name}'s "
                    "magic bytes again)"
                    if landed is found
                    else f"{found.name}-compressed, then {landed.name}-compressed (decompressed, "
                    f"it starts with {found.name}'s magic bytes)"
                )
                raise LandingError(f"{name}: {twice}: land it compressed once")
            raise LandingError(
                f"{name}: {found.name}-compressed (it starts with {found.name}'s magic bytes): "
                f"name it {Path(name).name}{found.suffix} to have it read, or land it decompressed"
            )
    # surrogateescape, then a check per line: a byte that is not UTF-8 is named by its line (a
    # strict decoder fails a whole buffer ahead of the line being read)
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        for number, line in enumerate(f, start=1):
            if not line.isascii() and _UNDECODABLE.search(line):
                # the line number only: values must not reach logs
                raise LandingError(f"{name}: line {number} is not UTF-8 text")
            text = line.rstrip("\r\n")
            texts.append(text)
            endings.append(kinds[line[len(text) :]])
            if len(texts) == RECORD_BATCH:
                insert(number - RECORD_BATCH + 1)
    if texts:
        insert(len(endings) - len(texts) + 1)
    return endings


# Characters that show as nothing: a byte order mark, zero-width spaces and joiners.
INVISIBLE = frozenset("\ufeff\u200b\u200c\u200d\u2060")


def _visible(text: str) -> str:
    """``text`` without the characters that show as nothing."""
    return "".join(ch for ch in text if ch not in INVISIBLE)


def _is_json_object(text: str) -> bool:
    text = text.strip()
    if not text.startswith("{"):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def _csv_header(con, source: Source, name: str) -> list[str]:
    """The header's column names, checked: every required column present, once."""
    header_rows = con.execute("SELECT text FROM lines WHERE line = 1").fetchall()
    if not header_rows:
        raise LandingError(
            f"{name}: the file is empty, without its header (a day without rows lands a file "
            "holding only the header line)"
        )
    first = header_rows[0][0] or ""
    # Not skipped: line numbers count from the header as line 1, and DuckDB's reader takes
    # the first line for the header (a blank one was "the file is empty").
    if not first.strip():
        raise LandingError(
            f"{name}: line 1 is blank: the header must be on line 1 (blank lines before it "
            "are not skipped)"
        )
    # JSON Lines named .csv: its header "failed" as malformed CSV, naming a quote, not the name.
    if _is_json_object(_visible(first)):
        raise LandingError(
            f"{name}: line 1 is a JSON object, not a CSV header: the file is JSON Lines; land "
            "it named .json"
        )
    # Parsed here, not sniffed: DuckDB's sniffer can mistake a bad row for a dialect. Split as
    # the rows are (`"date", "event_id"` kept its quotes under the csv module's default rule).
    fields = _RecordSplitter().add(first, "")
    if not isinstance(fields, list):  # a quote left open (a header over lines), or text after one
        raise csv.Error(fields or _OPEN_QUOTE)
    present = [c.strip() for c in fields]
    # A byte order mark twice (two files concatenated) or a zero-width space: the name looks
    # right in any viewer, and the column was not read (an optional one silently: a consent
    # answer lost). Named by code point, as the character shows as nothing.
    hidden = []
    for column in present:
        bare = _visible(column)
        if bare != column and bare.lower() in source.columns:
            marks = ", ".join(f"U+{ord(ch):04X}" for ch in sorted(set(column) & INVISIBLE))
            hidden.append(f"{bare} ({marks})")
    if hidden:
        raise LandingError(
            f"{name}: invisible characters in column names: {', '.join(hidden)}; remove them "
            "from the header"
        )
    missing = [c for c in source.required if c not in present]
    if missing:
        # Only names of the contract's columns: a file landed without its header has a data
        # row (an email, a name) on its first line, and this message reaches the task log.
        known = [c for c in present if c in source.columns]
        cased = [c for c in present if c not in source.columns and c.lower() in source.columns]
        raise LandingError(
            f"{name}: missing required column(s) {', '.join(missing)} (its first line has "
            f"{len(present)} field(s){'; of the columns read: ' + ', '.join(known) if known else ', none of them a column read'})"
            + (f"; column names are lower case, not {', '.join(cased)}" if cased else "")
        )
    _check_case(name, present, source, "column")
    repeated = sorted({c for c in present if c in source.columns and present.count(c) > 1})
    if repeated:
        raise LandingError(f"{name}: column(s) {', '.join(repeated)} appear more than once")
    return present


def _check_case(name: str, present: Iterable[str], source: Source, what: str) -> None:
    """Fail on an optional column or field named in another case (``Optin_1``): not read, its
    values (a consent answer) would be lost with nothing said. A required one fails as missing.
    Beside the name in lower case, it is an extra column, ignored (a JSON record's: see
    :func:`_check_case_by_record`)."""
    names = set(present)
    cased = sorted(c for c in names if c not in source.columns and c.lower() in source.columns)
    cased = [c for c in cased if c.lower() not in names]
    if cased:
        raise LandingError(
            f"{name}: {what} names are lower case, not {', '.join(cased)}: such a {what} is not read"
        )


def _check_case_by_record(con, name: str, keys: set[str], source: Source) -> None:
    """Fail on a JSON record naming a field read in another case (``Optin_1``) without the
    field itself. ``keys`` are all records' together, so :func:`_check_case` passed such a
    field when another record had ``optin_1``: its value (an opt-out) was lost unremarked. A
    record naming both is as a CSV header naming both: the other case is an extra field."""
    cased = sorted(k for k in keys if k not in source.columns and k.lower() in source.columns)
    alone = [
        k
        for k in cased
        if con.execute(
            "SELECT count(*) FROM json_lines WHERE is_object "
            "AND list_contains(json_keys(text), ?) AND NOT list_contains(json_keys(text), ?)",
            [k, k.lower()],
        ).fetchall()[0][0]
    ]
    if alone:
        raise LandingError(
            f"{name}: field names are lower case, not {', '.join(alone)}: such a field is not "
            "read (in a record without the field in lower case)"
        )


def _named_width(present: list[str]) -> int:
    """The header's width without its trailing empty names (`...,votes,`, as Excel writes it):
    a row may end there, as a row's empty fields past the header's width are dropped."""
    width = len(present)
    while width and not present[width - 1]:
        width -= 1
    return width


def _stage_csv(con, source: Source, name: str, path: Path) -> None:
    ending = _line_ending(path)
    # Mixed line endings (an LF file with a CRLF row, a CR or CRLF inside a quoted value of the
    # other kind): DuckDB fails such a file whole or splits its lines wrongly. Lines DuckDB
    # cannot read (a byte that is not UTF-8, a line over its maximum size): its error quotes
    # the row. Either way the file is read line by line and record by record in Python, each
    # line keeping its own ending.
    if ending is None or not _read_lines(con, path):
        endings = _read_lines_python(con, name, path)
        present = _csv_header(con, source, name)
        _stage_csv_records(con, source, name, present, endings=endings)
        return
    present = _csv_header(con, source, name)
    # Columns are read by position (c0, c1, ...), never by the header's names: an extra column
    # may be called anything ("line", "", a repeated name) and must not clash with ours.
    position = {c: i for i, c in enumerate(present)}
    # Up to the last named column: DuckDB's reader drops a row's empty fields past them, and
    # rejects a value in an unnamed column (read again below, as an extra column).
    columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(_named_width(present))) + "}"
    con.execute(
        "DROP TABLE IF EXISTS parsed; DROP TABLE IF EXISTS rej; DROP TABLE IF EXISTS rej_scan"
    )
    try:
        con.execute(
            f"CREATE TEMP TABLE parsed AS SELECT * FROM read_csv({_sql_str(str(path))}, "
            f"columns={columns}, header=true, auto_detect=false, delim=',', quote='\"', escape='\"', "
            "store_rejects=true, rejects_table='rej', rejects_scan='rej_scan', strict_mode=true, "
            # Landing folders are named date=YYYY-MM-DD: without this DuckDB would read them as
            # Hive partitions and overwrite each row's own `date` value with the folder's.
            "hive_partitioning=false)"
        )
    except duckdb.Error:  # its message quotes the row: dropped
        parsed = False
    else:
        parsed = True
    if not parsed:  # read record by record (out of the except clause: no DuckDB error context)
        con.execute("DROP TABLE IF EXISTS rej; DROP TABLE IF EXISTS rej_scan")
        _stage_csv_records(con, source, name, present, endings=ending)
        return
    n_parsed = con.execute("SELECT count(*) FROM parsed").fetchall()[0][0]
    n_rejected, n_lines, n_blank, n_kept, n_open, n_unplain = con.execute(
        "SELECT (SELECT count(*) FROM rej), count(*), "
        "count(*) FILTER (WHERE coalesce(trim(text), '') = ''), "
        "count(*) FILTER (WHERE coalesce(trim(text), '') <> '' "
        "                 AND line NOT IN (SELECT line FROM rej)), "
        # an odd number of quotes on a line: a quoted value may run on to the next line
        "count(*) FILTER (WHERE (length(text) - length(replace(text, '\"', ''))) % 2 = 1), "
        f"count(*) FILTER (WHERE {_UNPLAIN}) "
        "FROM lines WHERE line > 1"
    ).fetchall()[0]
    # The usual file: every line after the header is one parsed row, in order (DuckDB keeps
    # the reader's order in `parsed` with preserve_insertion_order), so row i is line i + 2.
    # Otherwise (blank lines or rejected rows), when every record is on a line of its own and
    # DuckDB parsed each line it did not reject (a rejected record over two lines names only
    # its first), parsed row k is the k-th non-blank line it did not reject.
    usual = n_rejected == 0 and n_blank == 0 and n_parsed == n_lines
    if not usual and (n_open or n_parsed != n_kept):
        _stage_csv_records(con, source, name, present, endings=ending)
        con.execute("DROP TABLE rej; DROP TABLE rej_scan; DROP TABLE parsed")
        return
    # Lines DuckDB's reader rejected, and lines with a quote that DuckDB reads in ways of its
    # own (`"a" "b"` as `a b`), are read as the record-by-record path reads them, so a line
    # reads alike whatever else its file holds.
    again = ["line IN (SELECT line FROM rej)"] * bool(n_rejected) + [_UNPLAIN] * bool(n_unplain)
    skip = f"AND NOT ({' OR '.join(again)})" if again else ""
    values = ", ".join(f"p.c{position[c]}" if c in position else "NULL" for c in source.columns)
    numbered = (
        "(SELECT line, text, line - 1 AS row_no FROM lines WHERE line > 1)"
        if usual
        else "(SELECT line, text, row_number() OVER (ORDER BY line) AS row_no FROM lines "
        "WHERE line > 1 AND coalesce(trim(text), '') <> '' AND line NOT IN (SELECT line FROM rej))"
    )
    con.execute(
        f"""
        INSERT INTO staged
        SELECT {_sql_str(name)}, d.line, NULL, d.text, {values}
        FROM (SELECT *, rowid + 1 AS row_no FROM parsed) p JOIN {numbered} d ON d.row_no = p.row_no
        WHERE true {skip}
        """
    )
    if again:
        try:
            _stage_csv_records(con, source, name, present, " OR ".join(again), endings=ending)
        except _SpansLines:  # a quote one of them opens goes on to a later line
            complete = False
        else:  # or a line the reader neither took nor rejected
            complete = con.execute(
                f"SELECT (SELECT count(*) FROM staged WHERE _file = {_sql_str(name)}) = "
                "count(*) FILTER (WHERE line > 1 AND coalesce(text, '') <> '') FROM lines"
            ).fetchall()[0][0]
        if not complete:  # read them all
            con.execute(f"DELETE FROM staged WHERE _file = {_sql_str(name)}")
            _stage_csv_records(con, source, name, present, endings=ending)
    con.execute("DROP TABLE rej; DROP TABLE rej_scan; DROP TABLE parsed")


# A line every reader splits alike. Each field is either quoted, with at most one space before
# its opening quote (DuckDB's reader takes a value after two whole, quotes included) and spaces
# after its closing one, or unquoted, its first character after any spaces not a quote (a quote
# later in it is text). The fast path reads any other line that holds a quote again, record by
# record (in SQL, over each physical line).
_PLAIN_FIELD = r'(?: ?"(?:[^"]|"")*" *| *(?:[^ ",][^,]*)?)'
_UNPLAIN = (  # CASE, not AND: DuckDB evaluates both sides of an AND, the regex on every line
    f"(CASE WHEN contains(text, '\"') "
    f"THEN NOT regexp_full_match(text, '{_PLAIN_FIELD}(?:,{_PLAIN_FIELD})*') ELSE false END)"
)
_OPEN_QUOTE = "unterminated quoted value"
_AFTER_QUOTE = "',' expected after '\"'"  # Python's csv module's words, kept in quarantine


class _SpansLines(Exception):
    """A record read from lines that are not consecutive went on to a next line."""


class _RecordSplitter:
    """One record's fields, read line by line as DuckDB's reader splits a plain line (and so as
    the fast path reads every line): spaces before an opening quote and after a closing one are
    dropped, an unquoted value keeps its spaces (an email as entered), and a quote later in an
    unquoted value is text. Anything but spaces after a closing quote is an error. Each line is
    scanned once, whatever the record's length."""

    def __init__(self) -> None:
        self.fields: list[str] = []
        self.quoted: list[str] | None = None  # the parts so far of a quoted value left open

    def add(self, text: str, ending: str) -> list[str] | str | None:
        """Read the record's next line (its text and its line ending): returns the fields when
        the record ends on it, ``_AFTER_QUOTE``, or None while a quote is left open."""
        pos, end = 0, len(text)
        while True:
            if self.quoted is None:  # at a field's start
                start = pos
                while pos < end and text[pos] == " ":
                    pos += 1
                if pos == end or text[pos] != '"':
                    pos = text.find(",", start)
                    self.fields.append(text[start:] if pos < 0 else text[start:pos])
                    if pos < 0:
                        return self.fields
                    pos += 1
                    continue
                self.quoted = []
                pos += 1
            close = pos  # the closing quote: the first one that is not a doubled quote
            while (close := text.find('"', close)) >= 0 and text.startswith('""', close):
                close += 2
            if close < 0:
                self.quoted.append(text[pos:] + ending)
                return None
            self.quoted.append(text[pos:close])
            self.fields.append("".join(self.quoted).replace('""', '"'))
            self.quoted = None
            pos = close + 1
            while pos < end and text[pos] == " ":
                pos += 1
            if pos == end:
                return self.fields
            if text[pos] != ",":
                return _AFTER_QUOTE
            pos += 1


def _csv_records(
    rows: Iterable[tuple[int, str, str]], width: int, named_width: int, *, spanning: bool = True
) -> Iterator[tuple[int, str, list[str] | None, str | None]]:
    """Split consecutive data lines of a CSV file (``rows``: their physical line number, text
    and line ending) into records: ``(line, raw, fields, error)``, ``line`` being where the
    record starts. A record has ``width`` fields (the header's), or may end after the first
    ``named_width`` (the header's without its trailing empty names: ``...,votes,``).

    A record may span lines (a quoted value holding a newline): its value and raw text keep the
    lines' own endings. A record that cannot be read (wrong number of fields, a quote left open)
    is returned once per physical line it covers, each with the error: a stray quote must not
    fold the lines after it into one row. Lines are read as the records need them, so only one
    record's lines are held at a time. Fields are as :class:`_RecordSplitter` has them, as on
    the fast path. Not ``spanning`` (lines that are not consecutive): a record that goes on to
    a next line raises ``_SpansLines``.
    """
    # DuckDB's reader has no field size limit: under csv's default (131,072 characters) a long
    # value failed on this path only, and the reader restarted inside it, staging its text as
    # rows. Set here, not at import: the limit is the process's, and anyone may lower it.
    csv.field_size_limit(sys.maxsize)
    lines = iter(rows)
    taken: list[tuple[int, str, str]] = []  # the lines the reader took for the current record

    def feed() -> Iterator[str]:
        for row in lines:
            taken.append(row)
            yield row[1] + row[2]

    # skipinitialspace: a space before an opening quote (`a, "b"`) does not hide the quote, so a
    # quoted value after it may span lines. The csv module finds where records end (in C); the
    # splitter reads again the few records the module reads otherwise than DuckDB.
    reader = csv.reader(feed(), strict=True, skipinitialspace=True)
    while True:
        try:
            fields, error = next(reader), None
        except StopIteration:
            return
        except csv.Error as exc:
            fields = None
            error = _OPEN_QUOTE if "end of data" in str(exc) else str(exc)
        record = taken[:]
        taken.clear()
        if not fields and error is None:
            continue  # an empty line is no record (whitespace-only lines are, and fail below)
        # Read again as DuckDB reads them: a record the module failed at spaces after a closing
        # quote (`"e1" ,`, which DuckDB allows; the module dropped the rest of the line), taking
        # the next lines while a quote is open, and a record with spaces before a value (the
        # module's skipinitialspace dropped them before unquoted values too; DuckDB keeps them).
        if error == _AFTER_QUOTE or (
            error is None and any(t[:1] == " " or ", " in t for _, t, _ in record)
        ):
            splitter = _RecordSplitter()
            for _, text, ending in record:
                split = splitter.add(text, ending)
            while split is None and spanning and error is not None:
                if (more := next(lines, None)) is None:
                    split = _OPEN_QUOTE
                    break
                record.append(more)
                split = splitter.add(more[1], more[2])
            if isinstance(split, list):
                fields, error = split, None
            elif error is not None:
                error = split or _OPEN_QUOTE
        if not spanning and (len(record) > 1 or error == _OPEN_QUOTE):
            raise _SpansLines
        # empty fields past the header's width are dropped, as DuckDB's reader drops them (a
        # row ending `1,,,` was kept there and quarantined here, depending on unrelated lines)
        while fields is not None and len(fields) > width and fields[-1] == "":
            fields.pop()
        # and the header's trailing unnamed columns may be left out, as Excel writes rows
        # under `...,votes,` (every such row was "too few columns")
        if fields is not None and named_width <= len(fields) < width:
            fields += [""] * (width - len(fields))
        if fields is not None and len(fields) != width:
            many = "many" if len(fields) > width else "few"
            expected = width if len(fields) > width else named_width
            error = f"too {many} columns (expected {expected}, found {len(fields)})"
        text = "".join(t + e for _, t, e in record)
        if error is None:  # the record's lines with their own endings, bar the last one
            yield record[0][0], text[: len(text) - len(record[-1][2])], fields, None
            continue
        span = f" (a record over lines {record[0][0]}-{record[-1][0]})" if len(record) > 1 else ""
        for number, line_text, _ in record:
            yield number, line_text, None, f"malformed CSV row: {error}{span}"


def _stage_csv_records(
    con,
    source: Source,
    name: str,
    present: list[str],
    which: str | None = None,
    *,
    endings: str | Sequence[str],
) -> None:
    """Stage the CSV file's data lines record by record, each with the physical line it starts
    on and its own text; only the lines ``which`` (SQL, over ``lines``) when given, each then a
    record of its own (``_SpansLines`` otherwise). ``endings``: the file's line ending, or each
    line's (by line number - 1)."""
    import pyarrow as pa  # only files off the fast path need it

    last = con.execute("SELECT coalesce(max(line), 0) FROM lines").fetchall()[0][0]

    def rows() -> Iterator[tuple[int, str, str]]:
        # a range of lines at a time, each fetched whole before records are inserted (one
        # connection: a result still being fetched would not survive the next statement)
        for first in range(1, last + 1, RECORD_BATCH):
            for number, text in con.execute(
                f"SELECT line, coalesce(text, '') FROM lines WHERE ({which or 'line > 1'}) "
                f"AND line BETWEEN {first} AND {first + RECORD_BATCH - 1} ORDER BY line"
            ).fetchall():
                yield number, text, endings if isinstance(endings, str) else endings[number - 1]

    width = len(present)
    position = {c: i for i, c in enumerate(present)}
    # an empty value is NULL, as DuckDB's reader has it on the fast path
    values = ", ".join(
        f"NULLIF(c{position[c]}, '')" if c in position else "NULL" for c in source.columns
    )
    unread = (None,) * width  # the fields of a row the reader could not split

    def insert(records: list) -> None:
        line_no, raw, fields, error = zip(*records, strict=True)
        by_position = zip(*(f or unread for f in fields), strict=True)
        columns = {
            "_line": pa.array(line_no, pa.int64()),
            "_error": pa.array(error, pa.string()),
            "_raw": pa.array(raw, pa.string()),
            **{f"c{i}": pa.array(v, pa.string()) for i, v in enumerate(by_position)},
        }
        _insert_arrow(
            con,
            pa.table(columns),
            f"INSERT INTO staged SELECT {_sql_str(name)}, _line, _error, _raw, {values} "
            "FROM arrow_rows",
        )

    batch: list = []
    for record in _csv_records(rows(), width, _named_width(present), spanning=which is None):
        batch.append(record)
        if len(batch) == RECORD_BATCH:
            insert(batch)
            batch = []
    if batch:
        insert(batch)


# A JSON number as DuckDB writes back a double it read (1.1, 100.0, 1e-7, 1.2345678901234568e22):
# not an integer, whose digits it keeps however many, nor NaN or Infinity, taken as text.
ROUNDED_NUMBER = r"-?[0-9]+(\.[0-9]+|(\.[0-9]+)?[eE][-+]?[0-9]+)"


# How far into a file its first record is looked for when it does not end on its line: a
# pretty-printed record is a few dozen lines (a JSON Lines file whose first line is cut stops
# at its next line that is an object).
DOCUMENT_LINES = 1_000
DOCUMENT_CHARS = 100_000


def _check_json_lines(con, name: str) -> None:
    """Fail a file that is one JSON document, not JSON Lines: a top-level array of records (on
    one line or many: ``jq``'s, ``JSON.stringify``'s, PostgreSQL's ``json_agg``) or records
    pretty-printed over several lines. Read line by line, each of its lines was quarantined as
    `not a JSON object`: hundreds of rows for one file, under a reason that said nothing of the
    cause. Found by parsing the file's first record only, as JSON (strict: a raw line break
    inside a string, a JSON Lines record cut in two, is no document and stays quarantined)."""
    # the first lines only (a top-N, not a sort of the file)
    rows = con.execute(
        "SELECT line, text, is_object FROM json_lines ORDER BY line LIMIT ?", [DOCUMENT_LINES]
    ).fetchall()
    first, is_array, text = None, False, ""
    decoder = json.JSONDecoder()
    for line, line_text, is_object in rows:
        if first is None:
            stripped = line_text.lstrip("\ufeff").strip()
            if not stripped:
                continue  # a line of white space: quarantined, no record
            # an object on its line is JSON Lines; an array on its line is a document only
            # if it holds records (`[1, 2]` is a line that is not an object)
            if is_object or stripped[:1] not in ("[", "{"):
                return
            first, is_array = line, stripped.startswith("[")
            text = stripped[1:] if is_array else stripped
        elif len(text) > DOCUMENT_CHARS:
            return
        else:
            text += "\n" + line_text
        try:
            record, end = decoder.raw_decode(text := text.lstrip())
        except (ValueError, RecursionError):
            if is_object and line != first:
                return  # a cut first record, then JSON Lines: the cut line is quarantined
            continue
        if not isinstance(record, dict):
            return
        if is_array and text[end:].lstrip()[:1] in ("", ",", "]"):
            raise LandingError(
                f"{name}: line {first} opens a JSON array of records, not JSON Lines (one "
                "object per line, docs/data-contract.md): land it with one record per line, "
                "e.g. converted with jq -c '.[]'"
            )
        if not is_array and line != first:
            raise LandingError(
                f"{name}: lines {first}-{line} are one JSON object (a pretty-printed record), "
                "not JSON Lines (one object per line, docs/data-contract.md): land it with one "
                "record per line, e.g. converted with jq -c ."
            )
        return


def _check_not_csv(con, source: Source, name: str) -> None:
    """Fail a JSON-named file that is CSV: no line of it is an object, and its first line names
    the source's required columns. Read as JSON, each of its rows was quarantined as `not a JSON
    object`, its header too, under a reason that did not say the file's name was the mistake."""
    first = con.execute("SELECT line, text FROM json_lines ORDER BY line LIMIT 1").fetchall()
    if not first:
        return
    line, text = first[0]
    header = _visible(text)
    names = {cell.strip().strip('"').strip().lower() for cell in re.split(r"[,;\t|]", header)}
    if all(c in names for c in source.required):
        raise LandingError(
            f"{name}: line {line} is a CSV header ({', '.join(source.required)}) and no line is "
            "a JSON object: the file is CSV; land it named .csv"
        )


def _stage_json(con, source: Source, name: str, path: Path) -> None:
    # As for CSV: DuckDB counted a CRLF in an LF file as two lines, and its error for a line it
    # cannot read (not UTF-8, over its maximum size) quotes the line.
    if _line_ending(path) is None or not _read_lines(con, path):
        _read_lines_python(con, name, path)
    # Every non-empty line is a record, as in a CSV file: a line of only white space is one that
    # is not a JSON object (trim() skipped a line of spaces, and not one of tabs).
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE json_lines AS
        SELECT line, text,
               coalesce(CASE WHEN json_valid(text) THEN json_type(text) = 'OBJECT' END, false) AS is_object
        FROM lines WHERE coalesce(text, '') <> ''
        """
    )
    _check_json_lines(con, name)
    keys = {
        r[0]
        for r in con.execute(
            "SELECT DISTINCT unnest(json_keys(CASE WHEN is_object THEN text END)) FROM json_lines"
        ).fetchall()
    }
    has_objects = con.execute("SELECT bool_or(is_object) FROM json_lines").fetchall()[0][0]
    if not has_objects:
        _check_not_csv(con, source, name)
    # A field read but for white space or an invisible character around or in its name ("optin_1 "
    # from a spreadsheet's header cell, through pandas): never read, its values (a consent answer)
    # were lost unremarked, where a CSV header's names are trimmed. Shown JSON-escaped, as the
    # characters show as nothing.
    padded = sorted(
        json.dumps(k)
        for k in keys
        if (bare := _visible(k).strip()) != k and bare.lower() in source.columns
    )
    if padded:
        raise LandingError(
            f"{name}: field names with white space or invisible characters in them: "
            f"{', '.join(padded)}; name the fields without them"
        )
    missing = [c for c in source.required if c not in keys]
    if has_objects and missing:
        raise LandingError(
            f"{name}: missing required field(s) {', '.join(missing)} in every record"
        )
    _check_case(name, keys, source, "field")
    _check_case_by_record(con, name, keys, source)
    # One parse per record for all fields (a path list), not one per field.
    paths = "[" + ", ".join(_sql_str("$." + c) for c in source.columns) + "]"
    values = ", ".join(f"v[{i}]" for i in range(1, len(source.columns) + 1))
    # A value is a string, a number, true/false or null; an object or array is not a value
    # (its JSON text would pass for an id), so the record is flagged, naming the fields. So is
    # a number with a fraction or exponent: it is read as a double and written back in other
    # digits (1E2 as 100.0, 60118.0 never equal to poll_id 60118, 23 digits cut to 17). Types
    # are read (a second parse) only for records with a value that could be either: one that
    # starts as an object or array does, or a line with a key's value starting as a number
    # followed by "." or "e" (a time's "12:00:00.5" inside a string is not after a key).
    maybe_flagged = " OR ".join(
        f"left(v[{i}], 1) IN ('{{', '[')" for i in range(1, len(source.columns) + 1)
    )
    maybe_flagged += r""" OR (is_object AND regexp_matches(text, '"\s*:\s*-?[0-9]+[.eE]'))"""
    flagged = " || ".join(
        f"CASE WHEN t[{i}] IN ('OBJECT', 'ARRAY') THEN '; {c}: not a string or number' "
        f"WHEN t[{i}] = 'DOUBLE' AND regexp_full_match(v[{i}], '{ROUNDED_NUMBER}') "
        f"THEN '; {c}: a number with a fraction or exponent (write it as a string)' ELSE '' END"
        for i, c in enumerate(source.columns, start=1)
    )
    # A field named twice: the reader would take the first value, most JSON readers the last.
    # Which one the writer meant is unknown, so the record is flagged, naming the fields. Found
    # as more of the keys read than distinct ones present (two list passes, about 0.25 s per
    # million records); the fields are named only for such a record.
    read = ", ".join(_sql_str(c) for c in source.columns)
    repeated = (
        f"len(list_filter(json_keys(text), lambda k: k IN ({read}))) "
        f"<> len(list_filter(json_exists(text, {paths}), lambda e: e))"
    )
    twice = " || ".join(
        f"CASE WHEN len(list_filter(json_keys(text), lambda k: k = {_sql_str(c)})) > 1 "
        f"THEN '; {c}: named more than once' ELSE '' END"
        for c in source.columns
    )
    twice = f"CASE WHEN {repeated} THEN {twice} ELSE '' END"
    con.execute(
        f"""
        INSERT INTO staged
        SELECT {_sql_str(name)}, line,
               CASE WHEN NOT is_object THEN 'not a JSON object'
                    ELSE NULLIF(substr({flagged} || {twice}, 3), '') END,
               text, {values}
        FROM (SELECT *, CASE WHEN {maybe_flagged} THEN json_type(text, {paths}) END AS t
              FROM (SELECT line, text, is_object,
                           json_extract_string(CASE WHEN is_object THEN text END, {paths}) AS v
                    FROM json_lines))
        """
    )


# DuckDB's descriptions of what it could not read, as worded here: its message is never passed
# on whole, as it quotes the row ("Original Line: ...") or a value.
_DUCKDB_FAILURES = (
    ("invalid unicode", "not UTF-8 text"),
    ("maximum line size", "a line over DuckDB's maximum line size"),
    ("malformed json", "malformed JSON"),
    ("out of memory", "out of memory"),
)


def _raise_if_spill_full(exc: duckdb.Error, spill: Path) -> None:
    """DuckDB reports a spill that found its disk full as memory ("Out of Memory Error: failed
    to offload data block ... max_temp_directory_size"): an operator would raise memory, not free
    the disk. Said as what it is, naming the folder (no row value: the message has none)."""
    text = str(exc)
    if isinstance(exc, duckdb.OutOfMemoryException) and (
        "offload" in text or "max_temp_directory_size" in text
    ):
        raise OSError(
            errno.ENOSPC,
            "the disk under the extract's spill folder is full (DuckDB: out of memory, could not "
            "offload to disk); free space there and clear the task",
            str(spill),
        ) from None


def _read_failure(exc: duckdb.Error) -> str:
    """What DuckDB failed on, without the row or any value: the kind of error, and the line when
    its message names one."""
    text = str(exc)
    lower = text.lower()
    kind = next((k for pattern, k in _DUCKDB_FAILURES if pattern in lower), type(exc).__name__)
    line = re.search(r"\bon line: ?([0-9]+)", text, re.IGNORECASE)
    return f"line {line.group(1)}: {kind}" if line else kind


# DuckDB's readers take a path as a glob pattern: `a[b].csv` read `ab.csv` instead.
_PATTERN_CHARACTERS = frozenset("*?[]{}")


def _without_pattern_characters(path: Path, folder: Path, number: int) -> Path:
    """``path``, or a link to it whose path DuckDB cannot read as a pattern."""
    if not _PATTERN_CHARACTERS & set(str(path)):
        return path
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / f"{number:05d}{''.join(path.suffixes[-1:]).lower()}"
    link.unlink(missing_ok=True)
    link.symlink_to(path.resolve())
    return link


def _decompressed(path: Path, name: str, codec: Codec) -> Iterator[bytes]:
    """The decompressed bytes of the file ``path`` (landed as ``name``), compressed with
    ``codec``, a chunk at a time (files can be larger than memory). One that is not of the
    codec, is cut short or is corrupt fails as ``LandingError`` naming it and the kind of error,
    never a value (gzip's own message quotes the file's first bytes)."""
    failure, head = None, b""
    try:
        with path.open("rb") as raw:
            head = raw.read(MAGIC_LENGTH)
            raw.seek(0)
            yield from codec.chunks(raw)
    except EOFError:  # the end-of-stream marker never came
        failure = f"truncated {codec.name}"
    except _Undecodable as exc:
        if exc.args:
            failure = exc.args[0]
        elif codec.magic.match(head):
            failure = f"corrupt {codec.name}"
        else:
            failure = f"not {codec.article} {codec.name} file"
            if other := _codec_by_magic(head):  # compressed, under another codec's suffix
                failure += (
                    f": it starts with {other.name}'s magic bytes, name it "
                    f"{Path(name).name[: -len(codec.suffix)]}{other.suffix}"
                )
    except OSError as exc:  # a dangling link: named, as for a plain file
        failure = exc.strerror or type(exc).__name__
    if failure is not None:  # outside the except clause: no context from the codec's message
        raise LandingError(f"{name}: cannot be read ({failure})")


def _decompress(path: Path, name: str, codec: Codec, target: Path) -> None:
    """Decompress the file ``path`` (landed as ``name``), compressed with ``codec``, into
    ``target``. A full disk under the scratch folder says so, naming the folder: the file is not
    at fault (an ``OSError``, not ``LandingError``: the stream would leave the file out as
    unreadable)."""
    try:
        with target.open("wb", buffering=0) as out:
            for chunk in _decompressed(path, name, codec):
                view = memoryview(chunk)
                while view:  # unbuffered: every byte written here, none left for the close
                    view = view[out.write(view) :]
    except LandingError:
        target.unlink(missing_ok=True)
        raise
    except OSError as exc:  # writing: _decompressed turns what reading raises into LandingError
        target.unlink(missing_ok=True)
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise OSError(
            errno.ENOSPC,
            f"the disk under the extract's scratch folder is full (decompressing {name}); free "
            "space there and clear the task",
            str(target.parent),
        ) from None


def stage_files(source_name: str, files: list[tuple[str, Path]], out_path: str | Path) -> dict:
    """Stage the given ``(display name, local path)`` files of one source as Parquet (all text +
    _file/_line/_error/_raw); the display name becomes ``_file``."""
    source = SOURCES[source_name]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Bounded, spilling next to the output: an in-memory DuckDB would otherwise take up to 80% of
    # RAM, on top of the warehouse's own limit when both run in one process (bench/README.md).
    spill = out.parent / f".{out.stem}.spill"
    con = duckdb.connect(
        config={"memory_limit": STAGING_MEMORY_LIMIT, "temp_directory": str(spill)}
    )
    try:
        con.execute("SET preserve_insertion_order = true")
        cols = ", ".join(f'"{c}" VARCHAR' for c in source.columns)
        con.execute(
            f"CREATE TEMP TABLE staged (_file VARCHAR, _line BIGINT, _error VARCHAR, _raw VARCHAR, {cols})"
        )
        links = out.parent / f".{out.stem}.links"
        decompressed = out.parent / f".{out.stem}.decompressed"
        for number, (name, path) in enumerate(files):
            inner = path.name.lower()
            codec = codec_of(inner)
            if codec is not None:
                # Decompressed first, then read as a file of its inner suffix is: the readers
                # (DuckDB's and Python's) go back over a file, which a stream cannot be. Its
                # _file stays the landed name, and its lines are the decompressed text's.
                inner = inner.removesuffix(codec.suffix)
                decompressed.mkdir(parents=True, exist_ok=True)
                readable = decompressed / f"{number:05d}{Path(inner).suffix}"
                _decompress(path, name, codec, readable)
            else:
                readable = _without_pattern_characters(path, links, number)
            try:
                if inner.endswith(".csv"):
                    _stage_csv(con, source, name, readable)
                else:
                    _stage_json(con, source, name, readable)
            except LandingError:
                raise
            except duckdb.Error as exc:
                _raise_if_spill_full(exc, spill)
                failure = _read_failure(exc)
            except csv.Error as exc:  # the header: the records' errors are rows in quarantine
                failure = f"malformed CSV header ({exc})"
            except OSError as exc:
                failure = exc.strerror or type(exc).__name__
            else:
                continue
            finally:
                if readable.parent == decompressed:  # the decompressed copy, once read
                    readable.unlink(missing_ok=True)
            # Raised outside the except clause and without a cause: DuckDB's message (which
            # quotes the row) must not reach the task log as the exception's context either.
            raise LandingError(f"{name}: cannot be read ({failure})")
        # Rows carry their file and line, and nothing reads the staged file in its row order:
        # written unordered, both threads write (for one 1.4M-row day of interactions at 10M,
        # 3.8 s before, 2.0 s after).
        con.execute("SET preserve_insertion_order = false")
        try:
            con.execute(f"COPY staged TO {_sql_str(str(out))} (FORMAT parquet)")
        except duckdb.OutOfMemoryException as exc:
            _raise_if_spill_full(exc, spill)
            raise
        rows, malformed = con.execute("SELECT count(*), count(_error) FROM staged").fetchall()[0]
        return {
            "source": source_name,
            "files": len(files),
            "rows": rows,
            "malformed": malformed,
            "path": str(out),
        }
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)
        shutil.rmtree(out.parent / f".{out.stem}.links", ignore_errors=True)
        shutil.rmtree(out.parent / f".{out.stem}.decompressed", ignore_errors=True)


def extract(
    source_name: str, ds: str, landing_root: str, out_path: str | Path, conn_id: str | None = None
) -> dict:
    """Stage one source's files for ``ds`` as Parquet (all text + _file/_line/_error/_raw); the
    result's ``versions`` holds the version of each file read (``landed_files``), and
    ``identical_files`` any files of the same bytes (:func:`identical_files`)."""
    with local_files(
        landing_root, SOURCES[source_name], ds, conn_id, Path(out_path).parent
    ) as files:
        named = [(name, path) for name, path, _ in files]
        result = stage_files(source_name, named, out_path)
        result["versions"] = {name: version for name, _, version in files}
        if twins := identical_files(named):
            # Files of a header alone (a day of no rows, several parts of it) read nothing twice.
            import pyarrow.compute as pc  # only a partition with such files needs it
            import pyarrow.parquet as pq

            staged = pq.read_table(out_path, columns=["_file"]).column("_file")
            with_rows = set(pc.unique(staged).to_pylist())
            if twins := [names for names in twins if names[0] in with_rows]:
                result["identical_files"] = twins
        return result


def identical_files(files: Sequence[tuple[str, Path]]) -> list[list[str]]:
    """Groups of files with the same bytes (``part-0.csv`` and its copy ``part-0 (1).csv``): each
    is read, so every row of the group is read as many times, and nothing else tells. Only files
    of the same size are hashed, which in a real partition is seldom any."""
    by_size: dict[int, list[tuple[str, Path]]] = {}
    for name, path in files:
        if size := path.stat().st_size:  # empty files hold no row to read twice
            by_size.setdefault(size, []).append((name, path))
    groups: dict[str, list[str]] = {}
    for same_size in by_size.values():
        if len(same_size) > 1:
            for name, path in same_size:
                with path.open("rb") as f:
                    groups.setdefault(hashlib.file_digest(f, "sha256").hexdigest(), []).append(name)
    return sorted(sorted(names) for names in groups.values() if len(names) > 1)
