"""Compacting the DuckDB warehouse file (warehouse/compact.py and `audience-profiles compact`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from audience_profiles import cli
from audience_profiles.config import CONFIG_ENV, WarehouseConfig
from audience_profiles.warehouse import compact as compaction
from audience_profiles.warehouse import duckdb as duckdb_engine
from audience_profiles.warehouse.compact import CompactionError, compact
from tests.support import write_config

MARKER = "gone.person.q7@example.org"
EVERYTHING = [
    "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = current_database()",
    "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal "
    "AND database_name = current_database()",
    "SELECT function_name FROM duckdb_functions() WHERE function_type = 'macro' "
    "AND database_name = current_database()",
    "SELECT * FROM people ORDER BY ALL",
    "SELECT * FROM side.counts ORDER BY ALL",
    "SELECT * FROM grown",
    "SELECT double_it(21)",
    "SELECT nextval('ids')",
]


def _warehouse(path: Path) -> WarehouseConfig:
    """A file with what a warehouse holds (schemas, tables, a view, a macro, a sequence used,
    constraints, an index), after a delete and a table rewritten whole, and a row of MARKER
    deleted: in the bytes still."""
    with duckdb.connect(str(path)) as con:
        con.execute(
            "CREATE TABLE people AS SELECT range AS id, 'person' || range || '@example.org' "
            "AS email FROM range(200000)"
        )
        con.execute(f"INSERT INTO people VALUES (-1, '{MARKER}')")
        con.execute("CHECKPOINT")
        con.execute("DELETE FROM people WHERE id = -1 OR id >= 1000")
        con.execute("CREATE OR REPLACE TABLE people AS SELECT * FROM people")
        con.execute("CREATE SCHEMA side")
        con.execute(
            "CREATE TABLE side.counts (k VARCHAR PRIMARY KEY, n BIGINT DEFAULT 0 CHECK (n >= 0))"
        )
        con.execute("CREATE INDEX people_email ON people (email)")
        con.execute("INSERT INTO side.counts VALUES ('a', 1), ('b', 2)")
        con.execute("CREATE VIEW grown AS SELECT count(*) AS people FROM people")
        con.execute("CREATE MACRO double_it(x) AS x * 2")
        con.execute("CREATE SEQUENCE ids START 5")
        con.execute("SELECT nextval('ids'), nextval('ids')")
    return WarehouseConfig(path=str(path), memory_limit="256MB", threads=1)


def _everything(path: Path) -> list:
    with duckdb.connect(str(path)) as con:  # read-write: the sequence moves on in both alike
        return [con.execute(query).fetchall() for query in EVERYTHING]


def test_the_copy_holds_what_sql_sees_and_not_the_freed_bytes(tmp_path):
    config = _warehouse(tmp_path / "warehouse.duckdb")
    assert MARKER.encode() in Path(config.path).read_bytes()  # why the command exists
    reference = tmp_path / "reference.duckdb"
    reference.write_bytes(Path(config.path).read_bytes())
    before = _everything(reference)

    done = compact(config)

    assert MARKER.encode() not in Path(config.path).read_bytes()
    assert _everything(Path(config.path)) == before
    assert (done.tables, done.rows) == (2, 1002)
    assert done.bytes_after < done.bytes_before == reference.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference.duckdb", "warehouse.duckdb"]


def test_a_copy_that_differs_leaves_the_warehouse_as_it_was(tmp_path, monkeypatch):
    config = _warehouse(tmp_path / "warehouse.duckdb")
    original = Path(config.path).read_bytes()
    monkeypatch.setattr(compaction, "COPY", "COPY FROM DATABASE old TO compacted (SCHEMA)")

    with pytest.raises(CompactionError, match=r"the copy of main\.people holds 0 row\(s\)"):
        compact(config)

    assert Path(config.path).read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["warehouse.duckdb"]  # no scratch left


def test_a_second_compaction_waits_for_the_first_and_leaves_its_copy_alone(tmp_path, monkeypatch):
    # `audience-profiles compact` while the erasure DAG's compact_warehouse ran: the second removed
    # the first's scratch and copied under its name, the first renamed the second's half-written
    # copy over the warehouse, and the second killed then left it empty.
    import fcntl

    config = _warehouse(tmp_path / "warehouse.duckdb")
    original = Path(config.path).read_bytes()
    scratch = tmp_path / ("warehouse.duckdb" + compaction.SCRATCH_SUFFIX)
    scratch.write_bytes(b"the first compaction's copy, under way")
    monkeypatch.setattr(duckdb_engine, "LOCK_WAIT_SECONDS", 1)
    with (tmp_path / ("warehouse.duckdb" + compaction.LOCK_SUFFIX)).open("a+") as first:
        fcntl.flock(first, fcntl.LOCK_EX)
        first.write("4242")
        first.flush()
        with pytest.raises(CompactionError, match=r"another compaction of .* \(pid 4242, "):
            compact(config)
    assert scratch.read_bytes() == b"the first compaction's copy, under way"
    assert Path(config.path).read_bytes() == original

    scratch.unlink()
    (tmp_path / ("warehouse.duckdb" + compaction.LOCK_SUFFIX)).unlink()
    compact(config)  # once the first is done
    assert MARKER.encode() not in Path(config.path).read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["warehouse.duckdb"]  # its lock file too


HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("CREATE TABLE IF NOT EXISTS late AS SELECT 1 AS x")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("INSERT INTO late VALUES (2)")
con.close()
"""


def test_it_waits_for_a_writer_and_keeps_what_it_wrote(tmp_path):
    # An Airflow task with the warehouse open: the copy starts once it has closed the file.
    config = _warehouse(tmp_path / "warehouse.duckdb")
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, config.path, "2"], stdout=subprocess.PIPE, text=True
    ) as writer:
        assert writer.stdout.readline().strip() == "holding"
        compact(config)
    with duckdb.connect(config.path, read_only=True) as con:
        assert con.execute("SELECT x FROM late ORDER BY x").fetchall() == [(1,), (2,)]


def test_a_writer_that_keeps_the_file_fails_it_untouched(tmp_path, monkeypatch):
    config = _warehouse(tmp_path / "warehouse.duckdb")
    monkeypatch.setattr(duckdb_engine, "LOCK_WAIT_SECONDS", 1)
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, config.path, "30"], stdout=subprocess.PIPE, text=True
    ) as writer:
        assert writer.stdout.readline().strip() == "holding"
        original = Path(config.path).read_bytes()
        try:
            with pytest.raises(duckdb_engine.WarehouseLockedError, match="then compact again$"):
                compact(config)
            assert Path(config.path).read_bytes() == original
        finally:
            writer.kill()


def test_the_command_says_what_it_did(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path)
    monkeypatch.setenv(CONFIG_ENV, config.source_file)
    assert cli.main(["compact"]) == 1
    assert capsys.readouterr().out == (
        f"not compacted: no warehouse at {config.warehouse.path}: nothing to compact\n"
    )
    _warehouse(Path(config.warehouse.path))
    assert cli.main(["compact"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"compacted {config.warehouse.path}: ") and out.endswith(
        "MiB (2 tables, 1,002 rows, each checked against the old file)\n"
    )


def test_the_command_leaves_snowflake_alone(tmp_path, monkeypatch, capsys):
    config = write_config(
        tmp_path, warehouse={"engine": "snowflake", "conn_id": "sf", "database": "ap"}
    )
    monkeypatch.setenv(CONFIG_ENV, config.source_file)
    assert cli.main(["compact"]) == 2
    assert "compact is for the DuckDB warehouse; snowflake AP.MAIN is on Snowflake" in (
        capsys.readouterr().out
    )


def test_a_linked_warehouse_is_compacted_where_it_is_and_keeps_its_mode(tmp_path):
    # A rename over the link would have left the old file, erased values and all, on the disk
    # the link pointed to, and the warehouse moved beside the link.
    (tmp_path / "disk").mkdir()
    config = _warehouse(tmp_path / "disk" / "warehouse.duckdb")
    Path(config.path).chmod(0o640)
    link = tmp_path / "warehouse.duckdb"
    link.symlink_to(config.path)

    compact(WarehouseConfig(path=str(link), memory_limit="256MB", threads=1))

    assert link.is_symlink() and link.resolve() == Path(config.path)
    assert MARKER.encode() not in Path(config.path).read_bytes()
    assert Path(config.path).stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["warehouse.duckdb"]


def test_a_task_that_opened_the_old_file_as_it_was_replaced_writes_the_new_one(
    tmp_path, monkeypatch
):
    # A task's connect opened the file just before compaction renamed the copy over it, and got
    # its lock once compaction let go of the old one: its rows went into the old file, unlinked.
    config = _warehouse(tmp_path / "warehouse.duckdb")
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(Path(config.path).read_bytes())
    connect = duckdb.connect
    opened = []

    def connect_as_compaction_renames(path, *args, **kwargs):
        con = connect(path, *args, **kwargs)
        if path == config.path and not opened:
            copy.replace(path)  # the rename, between the open and the task's first write
        opened.append(path)
        return con

    monkeypatch.setattr(duckdb_engine.duckdb, "connect", connect_as_compaction_renames)
    warehouse = duckdb_engine.DuckDBWarehouse(config)
    warehouse.execute_statements("INSERT INTO side.counts VALUES ('written', 3)")
    warehouse.close()
    monkeypatch.undo()

    with duckdb.connect(config.path, read_only=True) as con:
        assert con.execute("SELECT n FROM side.counts WHERE k = 'written'").fetchall() == [(3,)]


def test_the_old_file_stays_locked_a_while_after_the_rename(tmp_path, monkeypatch):
    # A writer that opened the old file as the copy took its name must fail its lock, not get it.
    config = _warehouse(tmp_path / "warehouse.duckdb")
    old = tmp_path / "old.duckdb"
    old.hardlink_to(config.path)  # the old file, under a name the rename leaves alone
    tried = []

    def wait(seconds):
        assert seconds == compaction.RELEASE_AFTER_SECONDS
        opened = subprocess.run(
            [sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1])", str(old)],
            capture_output=True,
            text=True,
        )
        tried.append(opened.stderr)

    monkeypatch.setattr(compaction.time, "sleep", wait)
    compact(config)
    assert len(tried) == 1 and "Could not set lock" in tried[0]
    assert Path(config.path).stat().st_ino != old.stat().st_ino


def test_a_reader_left_open_does_not_hold_it_up_and_reads_on(tmp_path, monkeypatch):
    # An analyst's read-only shell: the checkpoint's read-write open waited for it to close (5
    # minutes, then failed); without a log to checkpoint, none is needed.
    config = _warehouse(tmp_path / "warehouse.duckdb")
    monkeypatch.setattr(duckdb_engine, "LOCK_WAIT_SECONDS", 1)
    with duckdb.connect(config.path, read_only=True) as reader:
        compact(config)
        assert reader.execute("SELECT count(*) FROM people").fetchone() == (1000,)
    assert MARKER.encode() not in Path(config.path).read_bytes()


def test_a_run_and_a_compaction_name_each_other(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path)
    monkeypatch.setenv(CONFIG_ENV, config.source_file)
    _warehouse(Path(config.warehouse.path))
    Path(config.work_dir).mkdir()
    with cli._only_run(Path(config.work_dir) / "cli-run.lock", "compact") as other:
        assert other is None
        assert cli.main(["run", "--date", "2022-04-25"]) == 2
        assert cli.main(["compact"]) == 2
    out = capsys.readouterr().out.splitlines()
    assert (
        out
        == [
            f"another `audience-profiles compact` (pid {os.getpid()}) is running on this project: "
            "wait for it to finish",
        ]
        * 2
    )
