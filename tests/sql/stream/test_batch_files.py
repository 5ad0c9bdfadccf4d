"""include/sql/stream/batch_files.sql: a micro-batch's files, as its ledger rows will record them."""

from __future__ import annotations

import datetime as dt

from audience_profiles.stream import LandedFile
from audience_profiles.warehouse import open_warehouse
from tests.support import write_config


def test_a_batch_of_many_files_goes_in_statements_of_a_thousand(tmp_path):
    """A batch after a pause or a bulk upload can make a statement larger than Snowflake
    advises (1 MB) or takes (200,000 rows in a VALUES); each file keeps its counts, and a file
    with no row has 0 of each."""
    modified = dt.datetime(2022, 4, 30, 10, 0, 0, 123456)
    files = [
        LandedFile("interactions", f"/l/part-{i:05d}.csv", "2022-04-30", str(i), modified)
        for i in range(2500)
    ] + [LandedFile("elements", "/l/elements.csv", None, "e", modified)]
    counts = {"/l/part-00001.csv": (5, 3, 1, 1)}
    config = write_config(tmp_path)
    with open_warehouse(config) as wh:
        wh.execute_script("CREATE SCHEMA batch")
        sql = wh.render("stream/batch_files", bs="batch", files=files, file_counts=counts)
        assert sql.count("INSERT INTO batch.batch_files") == 3
        wh.execute_script(sql)
        assert wh.query("SELECT count(*), count(ds), sum(rows_read) FROM batch.batch_files") == [
            (2501, 2500, 5)
        ]
        assert wh.query(
            "SELECT source, ds, version, modified, rows_read, rows_valid, rows_quarantined, "
            "rows_aged_out FROM batch.batch_files "
            "WHERE file IN ('/l/part-00001.csv', '/l/elements.csv') ORDER BY file"
        ) == [
            ("elements", None, "e", modified, 0, 0, 0, 0),
            ("interactions", dt.date(2022, 4, 30), "1", modified, 5, 3, 1, 1),
        ]
