"""include/sql/validate/landed_files.sql: the ledger of the files a date's build holds."""

from __future__ import annotations

from audience_profiles.warehouse import open_warehouse
from tests.support import write_config


def record(wh, ds: str, versions: list[tuple[str, str]], streamed: int = 0) -> None:
    wh.execute_script(
        wh.render(
            "validate/landed_files",
            source="interactions",
            ds=ds,
            versions=versions,
            streamed=streamed,
            keep_days=31,
        )
    )


def test_many_files_go_in_statements_of_a_thousand_and_old_dates_leave(tmp_path):
    config = write_config(tmp_path)
    versions = [(f"/landing/part-{i:05d}.csv", str(i)) for i in range(2500)]
    with open_warehouse(config) as wh:
        wh.run_sql("setup/tables")
        record(wh, "2022-03-01", [("/landing/old.csv", "1")])
        sql = wh.render(
            "validate/landed_files",
            source="interactions",
            ds="2022-04-29",
            versions=versions,
            streamed=0,
            keep_days=31,
        )
        assert sql.count("INSERT INTO landed_files") == 3  # Snowflake's 1 MB statement advice
        record(wh, "2022-04-29", versions)
        assert wh.query("SELECT count(*), count(DISTINCT file) FROM landed_files") == [
            (2500, 2500)
        ]  # 2022-03-01 is more than 31 days before: no report looks that far
        record(wh, "2022-04-29", [])  # a re-run whose extract found no file
        assert wh.query("SELECT file, version FROM landed_files") == [(None, None)]
