"""Compact the DuckDB warehouse file: copy every schema, table, view, macro and sequence into a
new file and put it in the old one's place.

DuckDB reuses the blocks deleted rows freed, but does not overwrite them until then: after an
erasure, the erased person's values stay readable in the file's bytes (not through SQL), and a
table rewritten whole leaves its old copy there too. The copy holds only what SQL sees.

Safe while Airflow runs: the old file is held with a read lock from before the copy until
``RELEASE_AFTER_SECONDS`` after the rename, which no writer can take (a task waits for it, as it
waits for any lock: ``wait_for_lock``, and checks it then opened the file that has the name), and
readers that opened it keep reading it. The copy is checked table by table before it takes the
name; until then the old file is untouched, and a compaction cut short leaves it as it was. One
compaction of a file at a time (``LOCK_SUFFIX``): a second waits for the first.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from audience_profiles.config import WarehouseConfig
from audience_profiles.warehouse import duckdb as duckdb_engine
from audience_profiles.warehouse.base import sql_literal
from audience_profiles.warehouse.duckdb import wait_for_lock

log = logging.getLogger(__name__)

SCRATCH_SUFFIX = ".compacting"
# Held (flock) by the compaction under way, beside the scratch, removed when it ends. Two at once
# (`audience-profiles compact` while the erasure DAG's compact_warehouse ran) shared the scratch:
# the second removed the first's and began its own under that name, the first renamed the
# second's half-written copy over the warehouse, and a second killed then left the warehouse
# empty (the first reported it checked).
LOCK_SUFFIX = ".compacting.lock"
COPY = "COPY FROM DATABASE old TO compacted"
CHECKPOINT_TRIES = 3
# How long the old file stays locked after the rename. A writer that opened it just before the
# rename takes its lock a moment later: given it once compaction let go, it wrote the old file,
# and its log, which has the warehouse's name, was replayed onto the new one ("WAL does not
# match database file" on every open after). Held on, the lock fails it, and it opens the new.
RELEASE_AFTER_SECONDS = 2.0
# What the copy must hold as the old file does: each query lists one kind of object, by database.
CATALOGUE = {
    "tables": "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = '{db}'",
    "views": "SELECT schema_name, view_name, sql FROM duckdb_views() "
    "WHERE database_name = '{db}' AND NOT internal",
    "macros": "SELECT DISTINCT schema_name, function_name FROM duckdb_functions() "
    "WHERE database_name = '{db}' AND function_type IN ('macro', 'table_macro') AND NOT internal",
    "sequences": "SELECT schema_name, sequence_name, last_value FROM duckdb_sequences() "
    "WHERE database_name = '{db}'",
    "columns": "SELECT schema_name, table_name, column_name, data_type, column_default, "
    "is_nullable FROM duckdb_columns() WHERE database_name = '{db}'",
    "constraints": "SELECT schema_name, table_name, constraint_type, constraint_text "
    "FROM duckdb_constraints() WHERE database_name = '{db}'",
    "indexes": "SELECT schema_name, table_name, index_name, sql FROM duckdb_indexes() "
    "WHERE database_name = '{db}'",
}


class CompactionError(RuntimeError):
    """The copy did not hold what the warehouse holds: the warehouse was left as it was."""


@dataclass(frozen=True)
class Compacted:
    path: str
    bytes_before: int
    bytes_after: int
    tables: int
    rows: int


def compact(config: WarehouseConfig, then: str = "compact again") -> Compacted:
    """Replace the DuckDB file ``config.path`` by a copy of what it holds (see the module).
    ``then``: what to do after a wait for a lock ran out (the erasure DAG's task: clear it)."""
    if not Path(config.path).is_file():
        raise FileNotFoundError(f"no warehouse at {config.path}: nothing to compact")
    # The file a link points to, copied beside it: a rename over the link would leave the old
    # file, erased values and all, where the link pointed.
    target = Path(config.path).resolve()
    with _one_at_a_time(target, then):
        return _compact(config, target, then)


def _compact(config: WarehouseConfig, target: Path, then: str) -> Compacted:
    scratch = target.with_name(target.name + SCRATCH_SUFFIX)
    _remove(scratch)  # left by a compaction cut short
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = {sql_literal(config.memory_limit)}")
        con.execute(f"SET threads = {int(config.threads)}")
        # beside the warehouse, which has room for a copy (an in-memory connection's: the cwd)
        con.execute(f"SET temp_directory = {sql_literal(str(scratch) + '.tmp')}")
        _hold(con, target, then)
        bytes_before = target.stat().st_size
        con.execute(f"ATTACH {sql_literal(str(scratch))} AS compacted")
        log.info("copying %s into %s", target, scratch)
        con.execute(COPY)
        tables, rows = _check_copy(con)
        con.execute("DETACH compacted")  # checkpointed: no log of its own left beside it
        _keep_access(target, scratch)
        _fsync(scratch)
        os.replace(scratch, target)  # while the old one is still held: no writer between
        _fsync(target.parent)
    except BaseException:
        con.close()
        _remove(scratch)
        raise
    try:  # done: a Ctrl-C now only lets go of the old file sooner
        time.sleep(RELEASE_AFTER_SECONDS)
    finally:
        con.close()
        _remove(scratch)  # its spill folder
    return Compacted(str(target), bytes_before, target.stat().st_size, tables, rows)


@contextlib.contextmanager
def _one_at_a_time(target: Path, then: str) -> Iterator[None]:
    """Hold ``target``'s compaction lock file while the block runs: another compaction of it
    under way is waited for (up to ``LOCK_WAIT_SECONDS``, as a task waits for the warehouse)."""
    path = target.with_name(target.name + LOCK_SUFFIX)
    started = time.monotonic()
    warned = False
    while True:
        lock = path.open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            waited = time.monotonic() - started
            if waited > duckdb_engine.LOCK_WAIT_SECONDS:
                raise CompactionError(
                    f"another compaction of {target} (pid {holder}, holding {path}) went on for "
                    f"{waited:.0f} seconds: the warehouse was left as it was; let it finish (it "
                    f"compacts what this one would have), then {then} if needed"
                ) from None
            if not warned:
                log.warning("waiting for another compaction of %s (pid %s)", target, holder)
                warned = True
            time.sleep(0.5)
            continue
        # the one that held it removes the file as it ends: locked after, this one is stale
        try:
            same = os.fstat(lock.fileno()).st_ino == path.stat().st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        lock.close()
    try:
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # before the lock goes: whoever waits opens a new file
        lock.close()


def _hold(con: duckdb.DuckDBPyConnection, target: Path, then: str) -> None:
    """Attach ``target`` read-only as ``old``, checkpointed: a write-ahead log beside it would be
    replayed onto the copy once the copy has the name. A log is checkpointed by a read-write
    open's close, which waits for readers to close (an analyst's shell): only when there is one,
    which a task that ended cleanly does not leave. A writer may get in between the checkpoint and
    the read lock: then again, a few times."""
    wal = Path(f"{target}.wal")
    attach = f"ATTACH {sql_literal(str(target))} AS old (READ_ONLY)"
    for _ in range(CHECKPOINT_TRIES):
        if wal.exists():  # a read-write open waits for every reader: only when needed
            wait_for_lock(str(target), lambda: duckdb.connect(str(target)), then).close()
        wait_for_lock(str(target), lambda: con.execute(attach), then)
        if not wal.exists():
            return
        con.execute("DETACH old")
    raise CompactionError(
        f"{wal} was left beside {target} by a writer each of {CHECKPOINT_TRIES} times: pause the "
        f"DAGs, let their tasks finish, then {then}"
    )


def _check_copy(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """Fail unless ``compacted`` holds the objects and rows of ``old``; its tables and rows."""
    listed = {}
    for kind, query in CATALOGUE.items():
        before = sorted(con.execute(query.format(db="old")).fetchall())
        after = sorted(con.execute(query.format(db="compacted")).fetchall())
        if before != after:
            missing = [row[:2] for row in before if row not in after]
            raise CompactionError(
                f"the copy's {kind} differ from the warehouse's (first differing: "
                f"{(missing or after)[:3]}): the warehouse was left as it was"
            )
        listed[kind] = before
    tables = listed["tables"]
    rows = 0
    for schema, table in tables:
        name = '"{}"."{}"'.format(schema.replace('"', '""'), table.replace('"', '""'))
        counted = [
            con.execute(f"SELECT count(*) FROM {db}.{name}").fetchone()[0]
            for db in ("old", "compacted")
        ]
        if counted[0] != counted[1]:
            raise CompactionError(
                f"the copy of {schema}.{table} holds {counted[1]} row(s), the warehouse "
                f"{counted[0]}: the warehouse was left as it was"
            )
        rows += counted[0]
    return len(tables), rows


def _keep_access(target: Path, scratch: Path) -> None:
    """Give the copy the old file's mode, and its owner where this user may (the workers must
    still write it when someone else compacts it; the mode keeps a group's access either way)."""
    held = target.stat()
    os.chmod(scratch, held.st_mode & 0o7777)
    if (held.st_uid, held.st_gid) != (os.getuid(), os.getgid()):
        try:
            os.chown(scratch, held.st_uid, held.st_gid)
        except PermissionError:
            log.warning(
                "the compacted %s belongs to this user, not to uid %s gid %s as the old one did "
                "(its mode is kept)",
                target,
                held.st_uid,
                held.st_gid,
            )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(scratch: Path) -> None:
    for leftover in (scratch, Path(f"{scratch}.wal")):
        leftover.unlink(missing_ok=True)
    shutil.rmtree(f"{scratch}.tmp", ignore_errors=True)
