"""include/sql/validate/landed_files.sql: the ledger of the files a date's build holds."""

from __future__ import annotations

from audience_profiles.warehouse import open_warehouse
from tests.support import write_config


def checked(wh, rows: list[tuple[str, str | None]]) -> None:
    """The validate SQL's table of the rows it read: (file, reason) each."""
    wh.execute_script(
        "CREATE OR REPLACE TEMP TABLE checked_interactions (_file VARCHAR, reason VARCHAR)"
    )
    if rows:
        wh.execute_script(
            "INSERT INTO checked_interactions VALUES "
            + ", ".join(
                f"({wh.literal(f)}, {'NULL' if r is None else wh.literal(r)})" for f, r in rows
            )
        )


def record(
    wh, ds: str, versions: list[tuple[str, str]], streamed: int = 0, aged_out: tuple = ()
) -> None:
    wh.execute_script(
        wh.render(
            "validate/landed_files",
            source="interactions",
            ds=ds,
            versions=versions,
            streamed=streamed,
            keep_days=31,
            aged_out=list(aged_out),
        )
    )


def test_many_files_go_in_statements_of_a_thousand_and_old_dates_leave(tmp_path):
    config = write_config(tmp_path)
    versions = [(f"/landing/part-{i:05d}.csv", str(i)) for i in range(2500)]
    with open_warehouse(config) as wh:
        wh.run_sql("setup/tables")
        checked(wh, [])
        record(wh, "2022-03-01", [("/landing/old.csv", "1")])
        sql = wh.render(
            "validate/landed_files",
            source="interactions",
            ds="2022-04-29",
            versions=versions,
            streamed=0,
            keep_days=31,
            aged_out=[],
        )
        assert sql.count("INSERT INTO landed_files") == 3  # Snowflake's 1 MB statement advice
        record(wh, "2022-04-29", versions)
        assert wh.query("SELECT count(*), count(DISTINCT file) FROM landed_files") == [
            (2500, 2500)
        ]  # 2022-03-01 is more than 31 days before: no report looks that far
        record(wh, "2022-04-29", [])  # a re-run whose extract found no file
        assert wh.query("SELECT file, version FROM landed_files") == [(None, None)]


def test_each_file_keeps_what_validation_made_of_its_rows(tmp_path):
    """rows_read = rows_valid + rows_quarantined + rows_aged_out, per file; a file with no row (a
    header only) has 0 of each, and so has the row of a date whose extract found no file."""
    config = write_config(tmp_path)
    with open_warehouse(config) as wh:
        wh.run_sql("setup/tables")
        checked(
            wh,
            [("/l/a.csv", None), ("/l/a.csv", "votes: not an integer"), ("/l/a.csv", None)]
            + [("/l/b.csv", "session_id: missing")],
        )
        counts = (
            "SELECT file, rows_read, rows_valid, rows_quarantined, rows_aged_out FROM landed_files "
            "ORDER BY file"
        )
        files = [("/l/a.csv", "1"), ("/l/b.csv", "2"), ("/l/empty.csv", "3")]
        record(wh, "2022-04-29", files)
        assert wh.query(counts) == [
            ("/l/a.csv", 3, 2, 1, 0),
            ("/l/b.csv", 1, 0, 1, 0),
            ("/l/empty.csv", 0, 0, 0, 0),
        ]
        # a date past retention keeps none of what it covers: counted as aged out instead
        record(wh, "2022-04-29", files, aged_out=["interactions"])
        assert wh.query(counts)[:2] == [("/l/a.csv", 3, 0, 1, 2), ("/l/b.csv", 1, 0, 1, 0)]
        record(wh, "2022-04-29", files, aged_out=["interactions", "quarantine"])
        assert wh.query(counts)[:2] == [("/l/a.csv", 3, 0, 0, 3), ("/l/b.csv", 1, 0, 0, 1)]
        record(wh, "2022-04-29", [])
        assert wh.query(counts) == [(None, 0, 0, 0, 0)]
