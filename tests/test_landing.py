"""The landing contract: every row is staged with its file and physical line, or the file fails."""

from __future__ import annotations

import gzip
import json
import logging
import os
import traceback
from pathlib import Path

import duckdb
import pytest

from audience_profiles import landing, report
from audience_profiles.generate import data_dates
from audience_profiles.landing import (
    SOURCES,
    LandingError,
    extract,
    partition_gap,
    partition_versions,
)
from audience_profiles.pipeline import RunWindow, extract_source
from tests.support import (
    ELEMENT_HEADER,
    FORM_HEADER,
    INTERACTION_HEADER,
    write_config,
    write_csv,
    write_ndjson,
)


def staged(path):
    return duckdb.sql(f"SELECT * FROM read_parquet('{path}') ORDER BY _file, _line").fetchall()


def extract_csv(tmp_path, body: str):
    """Land ``body`` under the interaction header as one CSV file; extract it; (result, rows)."""
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text("date,event_id,poll_id,session_id,option,votes\n" + body)
    out = tmp_path / "out.parquet"
    result = extract("interactions", "2022-04-29", str(tmp_path / "landing"), out)
    return result, staged(out)


def test_csv_rows_keep_file_and_physical_line(tmp_path):
    result, rows = extract_csv(
        tmp_path, '2022-04-29,e1,54663,s1,0,1\nbad,row\n\n2022-04-29,"e,2",54663,s2,1,1\n'
    )
    assert result == {**result, "files": 1, "rows": 3, "malformed": 1}
    assert [(r[1], r[2] is not None) for r in rows] == [(2, False), (3, True), (5, False)]
    assert rows[1][2] == "malformed CSV row: too few columns (expected 6, found 2)"
    assert rows[1][3] == "bad,row"
    assert rows[2][5] == "e,2"  # quoted comma survives


def test_clean_csv_rows_are_numbered_by_their_physical_line(tmp_path):
    # No blank, malformed or multi-line rows: the fast path (row i is line i + 2).
    lines = [f"2022-04-29,e{i},54663,s{i},{i % 4},1" for i in range(5000)]
    result, rows = extract_csv(tmp_path, "\n".join(lines))
    assert result == {**result, "rows": 5000, "malformed": 0}
    assert [(r[1], r[3]) for r in rows] == [(i + 2, line) for i, line in enumerate(lines)]
    assert all(r[5] == f"e{r[1] - 2}" for r in rows)  # each row's values come from its own line


def test_csv_value_spanning_lines_keeps_its_first_line_and_text(tmp_path):
    # A quoted value over two physical lines: the record is numbered by the line it starts on,
    # its raw text spans both, and the rows after it keep their own line numbers.
    result, rows = extract_csv(
        tmp_path, '2022-04-29,"e\n1",54663,s1,0,1\n2022-04-29,e2,54663,s2,1,1\n'
    )
    assert result == {**result, "rows": 2, "malformed": 0}
    assert [(r[1], r[3], r[5]) for r in rows] == [
        (2, '2022-04-29,"e\n1",54663,s1,0,1', "e\n1"),
        (4, "2022-04-29,e2,54663,s2,1,1", "e2"),
    ]


def test_spaces_after_a_closing_quote_do_not_cut_a_value_spanning_lines(tmp_path):
    # The csv module fails at `"e1" ,` and drops the rest of the line; the record is read again
    # as DuckDB reads it, taking line 3, where the quoted option opened on line 2 closes.
    result, rows = extract_csv(
        tmp_path, '2022-04-29,"e1" ,54663,s1,"a\nb" ,1\n2022-04-29,e2,54663,s2,1,1\n'
    )
    assert result == {**result, "rows": 2, "malformed": 0}
    assert [(r[1], r[3], r[5], r[8]) for r in rows] == [
        (2, '2022-04-29,"e1" ,54663,s1,"a\nb" ,1', "e1", "a\nb"),
        (4, "2022-04-29,e2,54663,s2,1,1", "e2", "1"),
    ]
    # ... and a quote it opens that never closes quarantines each line it covers
    result, rows = extract_csv(tmp_path / "open", '2022-04-29,"e1" ,54663,s1,"a\nb,1\n')
    assert [(r[1], r[2]) for r in rows] == [
        (n, "malformed CSV row: unterminated quoted value (a record over lines 2-3)")
        for n in (2, 3)
    ]


def test_a_record_duckdb_rejects_over_two_lines_does_not_shift_the_rows_after_it(tmp_path):
    # DuckDB's reader takes `  "` after two spaces as text, rejects a record over lines 2-3 and
    # names line 2 only: matched by position, line 3 was given line 4's values.
    body = '2022,e2,p,s,o,1,  ",",\n2022,e3,p,s,o,"1"\n2022,e4,p,s,o,"1" \n'
    _, rows = extract_csv(tmp_path, body)
    assert [(r[1], r[2], r[5]) for r in rows] == [
        (2, "malformed CSV row: too many columns (expected 6, found 7)", None),
        (3, None, "e3"),
        (4, None, "e4"),
    ]


def test_a_line_read_again_that_opens_a_quote_is_read_with_the_lines_after_it(tmp_path):
    # `  "` opens a quoted value (an even number of quotes on the line): the lines read again
    # must not be joined to the next one read again, skipping line 3, but read in file order.
    body = '2022,e2,p,s,o,b"a,  "\n2022,e3,p,s,o,1\n2022,e4,p,s,o,"1" \n'
    fast = extract_csv(tmp_path / "fast", body)[1]
    spanning = extract_csv(tmp_path / "spanning", body + '"open\n')[1]
    assert [(r[1], r[2]) for r in fast] == [(r[1], r[2]) for r in spanning[:3]]
    assert {r[2] for r in fast} == {
        "malformed CSV row: ',' expected after '\"' (a record over lines 2-4)"
    }


def test_a_quote_left_open_after_spaces_after_a_quote_reads_each_line_once(tmp_path, monkeypatch):
    # The record is read again as DuckDB reads it, line by line, to the end of the file: it
    # was split again whole for every line it took (38 s at 16,000 lines).
    added = []
    add = landing._RecordSplitter.add
    monkeypatch.setattr(
        landing._RecordSplitter,
        "add",
        lambda self, text, end: added.append(1) or add(self, text, end),
    )
    n = 20_000
    body = '2022,"e1" ,"x,s,o,1\n' + "".join(f"2022-01-01,e{i},p,s,o,1\n" for i in range(n))
    _, rows = extract_csv(tmp_path, body)
    assert len(rows) == n + 1 and {r[2] for r in rows} == {
        f"malformed CSV row: unterminated quoted value (a record over lines 2-{n + 2})"
    }
    assert len(added) == n + 2  # each line once, the header included


def test_a_stray_quote_does_not_fold_the_lines_after_it_into_one_row(tmp_path):
    # The quote opened on line 3 closes on line 5: the reader sees one record over lines 3-5
    # with 4 fields. Each of its lines is quarantined on its own; the rows around it are
    # untouched, and the quote opened on line 7 that never closes takes only its own line.
    result, rows = extract_csv(
        tmp_path,
        "2022-04-29,e1,p,s1,0,1\n"
        '2022-04-29,"e2,p,s2,0,1\n'
        "2022-04-29,e3,p,s3,0,1\n"
        'e4",p,s4\n'
        "2022-04-29,e5,p,s5,0,1\n"
        '2022-04-29,"e6,p,s6,0,1\n',
    )
    assert (result["rows"], result["malformed"]) == (6, 4)
    assert [(r[1], r[2] is None) for r in rows] == [
        (2, True),
        (3, False),
        (4, False),
        (5, False),
        (6, True),
        (7, False),
    ]
    assert rows[1][2] == (
        "malformed CSV row: too few columns (expected 6, found 4) (a record over lines 3-5)"
    )
    assert rows[1][3] == '2022-04-29,"e2,p,s2,0,1'
    assert rows[5][2] == "malformed CSV row: unterminated quoted value"
    assert [r[5] for r in rows if r[2] is None] == ["e1", "e5"]


@pytest.mark.parametrize("extra", ["line", "rowid", "k", "", "note,note"])
def test_an_extra_column_of_any_name_is_ignored(tmp_path, extra):
    # Columns are read by position: a landed column called "line" once replaced the line
    # numbers the rows are matched by (rows were lost), and an empty or repeated name (a
    # trailing comma in the header) failed the file.
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    width = len(extra.split(",")) if extra else 1
    cells = ",".join(["7"] * width)
    body = "".join(f"2022-04-29,e{i},p,s{i},0,1,{cells}\n" for i in range(1, 4))
    for name, text in (("a.csv", body), ("b.csv", body + "\n")):  # fast path, then the other
        (folder / name).write_text(
            "date,event_id,poll_id,session_id,option,votes," + extra + "\n" + text
        )
    out = tmp_path / "out.parquet"
    result = extract("interactions", "2022-04-29", str(tmp_path / "landing"), out)
    rows = staged(out)
    assert (result["rows"], result["malformed"]) == (6, 0)
    assert [(r[0].rsplit("/", 1)[1], r[1], r[5]) for r in rows] == [
        (f, i + 1, f"e{i}") for f in ("a.csv", "b.csv") for i in range(1, 4)
    ]


def test_a_required_column_named_twice_fails_naming_it(tmp_path):
    path = write_csv(
        tmp_path / "landing" / "interactions" / "date=2022-04-29" / "x.csv",
        [*INTERACTION_HEADER, "event_id"],
        [["2022-04-29", "e", "p", "s", 0, 1, "f"]],
    )
    with pytest.raises(LandingError, match="x.csv: column.s. event_id appear more than once"):
        extract("interactions", "2022-04-29", str(tmp_path / "landing"), tmp_path / "out.parquet")
    assert path.exists()


def test_json_lines_keep_line_numbers_and_flag_non_objects(tmp_path):
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    write_ndjson(
        folder / "b.json",
        [
            {
                "date": "2022-04-29",
                "event_id": "e",
                "poll_id": 54663,
                "session_id": "s9",
                "option": 2,
                "votes": 1,
            },
            "not json",
            "",
            "[1, 2]",
            '{"date": "2022-04-29", "event_id": {"id": 1}, "poll_id": ["p"], "session_id": true,'
            ' "option": 0, "votes": null}',
        ],
    )
    result = extract(
        "interactions", "2022-04-29", str(tmp_path / "landing"), tmp_path / "out.parquet"
    )
    assert (result["rows"], result["malformed"]) == (4, 3)
    rows = staged(tmp_path / "out.parquet")
    assert [r[1] for r in rows] == [1, 2, 4, 5]
    assert rows[0][6] == "54663" and rows[0][8] == "2"  # numbers arrive as text
    assert rows[1][2] == "not a JSON object"
    # an object or array would pass for an id as its JSON text; true/false are kept as text
    assert rows[3][2] == "event_id: not a string or number; poll_id: not a string or number"
    assert (rows[3][7], rows[3][9]) == ("true", None)


def test_a_json_number_whose_digits_would_change_is_flagged(tmp_path):
    """Read as a double, 1E2 would come back as 100.0 and 60118.0 never equal poll_id 60118 (the
    row kept with no title): such a record is flagged, naming the field. Integers of any size
    and NaN or Infinity are taken as written."""
    folder = tmp_path / "landing" / "identities" / "date=2022-04-29"
    at = '"observed_at": "2022-04-29T12:00:00", "session_id": "s"'
    written = ["1.10", "1E2", "0.1e1", "-2.5e-3", "12345678901234567890123.5"]
    kept = ["12345678901234567890123", "-7", "NaN", '"1.5"', '"a: 1.5"']
    folder.mkdir(parents=True)
    (folder / "part-0.json").write_text(
        "".join(f'{{{at}, "external_id": {v}}}\n' for v in written + kept)
    )
    extract("identities", "2022-04-29", str(tmp_path / "landing"), tmp_path / "out.parquet")
    rows = duckdb.sql(
        f"SELECT _error, external_id FROM read_parquet('{tmp_path / 'out.parquet'}') ORDER BY _line"
    ).fetchall()
    reason = "external_id: a number with a fraction or exponent (write it as a string)"
    assert [r[0] for r in rows] == [reason] * len(written) + [None] * len(kept)
    assert [r[1] for r in rows[len(written) :]] == [
        "12345678901234567890123", "-7", "NaN", "1.5", "a: 1.5"
    ]  # fmt: skip


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_every_non_empty_json_line_is_a_row_or_quarantined(tmp_path, ending):
    """As in a CSV file: an empty line is no record, a line of only white space of any kind
    (spaces, a tab, a no-break space) is one that is not a JSON object."""
    record = (
        '{"date": "2022-04-29", "event_id": "e", "poll_id": "p", "session_id": "s",'
        ' "option": 0, "votes": 1}'
    )
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    lines = [record, "", "   ", "\t", "\u00a0", "\u2003", record]
    (folder / "a.json").write_bytes(ending.join([*lines, ""]).encode())
    out = tmp_path / "out.parquet"
    result = extract("interactions", "2022-04-29", str(tmp_path / "landing"), out)
    assert (result["rows"], result["malformed"]) == (6, 4)
    assert [(r[1], r[2]) for r in staged(out)] == [
        (1, None),
        *[(line, "not a JSON object") for line in (3, 4, 5, 6)],
        (7, None),
    ]


def test_missing_column_fails_naming_file_and_column(tmp_path):
    path = write_csv(
        tmp_path / "landing" / "interactions" / "date=2022-04-29" / "x.csv",
        [c for c in INTERACTION_HEADER if c != "votes"],
        [["2022-04-29", "e", "p", "s", 0]],
    )
    with pytest.raises(LandingError) as err:
        extract("interactions", "2022-04-29", str(tmp_path / "landing"), tmp_path / "out.parquet")
    assert str(path) in str(err.value) and "votes" in str(err.value)


def test_json_field_missing_from_every_record_fails(tmp_path):
    write_ndjson(
        tmp_path / "landing" / "identities" / "date=2022-04-29" / "x.json",
        [{"observed_at": "2022-04-29T10:00:00", "session_id": "s"}],
    )
    with pytest.raises(LandingError, match="x.json: missing required field.*external_id"):
        extract("identities", "2022-04-29", str(tmp_path / "landing"), tmp_path / "out.parquet")


def test_empty_and_absent_partitions(tmp_path):
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    (folder / "empty.csv").write_text("")
    # it said "missing required column(s) ... (its first line has 0 field(s) ...)"
    with pytest.raises(LandingError, match=r"empty.csv: the file is empty, without its header \("):
        extract("interactions", "2022-04-29", str(tmp_path / "landing"), tmp_path / "out.parquet")
    result = extract(
        "interactions", "2022-04-30", str(tmp_path / "landing"), tmp_path / "none.parquet"
    )
    assert (result["files"], result["rows"]) == (0, 0)


def test_unreadable_file_is_named(tmp_path):
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    (folder / "binary.csv").write_bytes(
        b"date,event_id,poll_id,session_id,option,votes\n\xff\xfe\x00bad"
    )
    with pytest.raises(LandingError, match="binary.csv"):
        extract("interactions", "2022-04-29", str(tmp_path / "landing"), tmp_path / "out.parquet")


def test_a_rows_own_date_is_kept_in_a_date_named_folder(tmp_path):
    # Regression: DuckDB reads date=YYYY-MM-DD folders as Hive partitions unless told not to,
    # which silently replaced each row's date with the folder's.
    write_csv(
        tmp_path / "landing" / "interactions" / "date=2022-04-29" / "x.csv",
        INTERACTION_HEADER,
        [["2022-04-28", "e", "p", "s", 0, 1], ["29/04/2022", "e", "p", "s", 0, 1]],
    )
    extract("interactions", "2022-04-29", str(tmp_path / "landing"), tmp_path / "out.parquet")
    assert [r[4] for r in staged(tmp_path / "out.parquet")] == ["2022-04-28", "29/04/2022"]


STRAY = {
    "date=2022-4-30/part-0.csv": "a partition folder misnamed",
    # skipped by every run as much: only folders starting with "date=" were looked at
    "dt=2022-04-29/part-0.csv": "another key",
    "Date=2022-04-29/part-0.csv": "another case",
    "2022-04-29/part-0.csv": "a bare date",
    "part-9.csv": "a data file outside any partition",
    "archive/part-0.csv": None,  # another folder: left alone
    "archive-2022-04-28/part-0.csv": None,  # named with a date, not as one
    "_tmp/part-0.csv": None,  # hidden
}


def test_what_no_run_would_read_in_a_source_folder_fails_every_extract(tmp_path):
    """Skipped by every run, their rows were in no count, output or quarantine."""
    root = tmp_path / "landing"
    for name in (*STRAY, "date=2022-04-29/part-0.csv"):
        write_csv(root / "interactions" / name, INTERACTION_HEADER, [["2022-04-29", "e", "p", "s", 0, 1]])  # fmt: skip
    with pytest.raises(LandingError) as err:
        extract("interactions", "2022-04-29", str(root), tmp_path / "out.parquet")
    assert str(err.value).startswith(
        f"{root / 'interactions'}: 5 entries no run reads: 2022-04-29/, Date=2022-04-29/, date=2022-4-30/, "
        "dt=2022-04-29/, part-9.csv ("
    )
    assert data_dates(root) == ["2022-04-29"]  # make run: the misnamed folder is no date
    # any key=value folder is named as a partition; a name holding a date is not
    assert landing.is_stray("event-date=2022-04-29", is_folder=True)
    assert landing.is_stray("snapshot.date=2022-04-29", is_folder=True)
    assert not landing.is_stray("2022-04-28_full", is_folder=True)


def test_partitions_before_start_date_are_named_in_the_log_and_the_run_report(tmp_path, caplog):
    """No daily run reads them (a run reads its own date's partition, and none runs before
    start_date): their rows were in no count, output or quarantine, and nothing said so."""
    config = write_config(tmp_path, start_date="2022-04-27")
    root = Path(config.landing_root)
    for name in (
        "date=2022-04-20",
        "date=2022-04-26",
        "date=2022-04-27",
        "archive/date=2022-01-01",
    ):
        write_csv(root / "interactions" / name / "p.csv", INTERACTION_HEADER, [["2022-04-27", "e", "p", "s", 0, 1]])  # fmt: skip
    window = RunWindow.for_date("2022-04-27")

    with caplog.at_level(logging.WARNING):
        extracted = extract_source("interactions", window, config)

    early = ["date=2022-04-20", "date=2022-04-26"]
    assert extracted["rows"] == 1  # the run's own partition is read as ever
    assert extracted["before_start_date"] == {"partitions": 2, "names": early}
    assert (
        f"{root / 'interactions'}: 2 partition(s) dated before start_date 2022-04-27 of "
        f"{config.source_file}, which no daily run reads: {', '.join(early)}"
    ) in caplog.text
    assert "before_start_date" not in extract_source("form_entries", window, config)
    line = report.summary_line(report.build(window, {"extract": [extracted]}, {}))
    assert line.endswith(
        "; partitions before start_date, read by no daily run: "
        "interactions 2 (date=2022-04-20, date=2022-04-26)"
    )


def test_files_of_the_same_bytes_are_named_in_the_log_and_the_run_report(tmp_path, caplog):
    """A copy (``part-0 (1).csv``) is read as well: every row twice, and no count showed it."""
    config = write_config(tmp_path)
    folder = Path(config.landing_root) / "interactions" / "date=2022-04-27"
    row = ["2022-04-27", "e", "p", "s", 0, 1]
    write_csv(folder / "part-0.csv", INTERACTION_HEADER, [row])
    write_csv(folder / "part-0 (1).csv", INTERACTION_HEADER, [row])
    write_csv(folder / "part-1.csv", INTERACTION_HEADER, [row[:5] + [2]])  # same size, not bytes
    for n in (2, 3):  # a header alone: parts of a day of no rows, nothing read twice
        write_csv(folder / f"part-{n}.csv", INTERACTION_HEADER, [])
    window = RunWindow.for_date("2022-04-27")

    with caplog.at_level(logging.WARNING):
        extracted = extract_source("interactions", window, config)

    copy, original = str(folder / "part-0 (1).csv"), str(folder / "part-0.csv")
    assert extracted["rows"] == 3
    assert extracted["identical_files"] == [[copy, original]]
    assert (
        "interactions 2022-04-27: files with the same bytes, each read, so their rows are read "
        f"2 times: {copy}, {original}."
    ) in caplog.text
    line = report.summary_line(report.build(window, {"extract": [extracted]}, {}))
    assert line.endswith(
        "; files with the same bytes, each read (their rows counted as often): "
        f"interactions {copy} = {original}"
    )
    page = report.render_html(
        {**report.build(window, {"extract": [extracted]}, {}), "checks": []}, []
    )
    assert "<strong>Files with the same bytes</strong>" in page and "part-0 (1).csv" in page
    write_csv(folder / "part-0 (1).csv", INTERACTION_HEADER, [row[:5] + [3]])
    assert "identical_files" not in extract_source("interactions", window, config)


def test_a_failed_listing_of_partitions_before_start_date_does_not_fail_the_extract(
    tmp_path, monkeypatch, caplog
):
    config = write_config(tmp_path)
    root = Path(config.landing_root)
    write_csv(root / "interactions" / "date=2022-04-27" / "p.csv", INTERACTION_HEADER, [["2022-04-27", "e", "p", "s", 0, 1]])  # fmt: skip

    def unreachable(*args):
        raise PermissionError("listing denied")

    monkeypatch.setattr(landing, "partitions_before", unreachable)
    with caplog.at_level(logging.WARNING):
        extracted = extract_source("interactions", RunWindow.for_date("2022-04-27"), config)
    assert extracted["rows"] == 1 and "before_start_date" not in extracted
    assert "could not list the partitions of interactions before start_date" in caplog.text


@pytest.mark.services
def test_partitions_before_start_date_are_found_on_s3(aws_conn, moto_server):
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket="landing-early")
    for name in ("date=2022-04-20", "date=2022-04-27", "archive"):
        s3.put_object(Bucket="landing-early", Key=f"l/interactions/{name}/p.csv", Body=b"date\n")
    assert landing.partitions_before(
        "s3://landing-early/l", landing.SOURCES["interactions"], "2022-04-27", aws_conn
    ) == ("s3://landing-early/l/interactions", ["date=2022-04-20"])


@pytest.mark.services
def test_an_s3_source_folder_is_checked_as_a_local_one(aws_conn, moto_server, tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket="landing-stray")
    body = ",".join(INTERACTION_HEADER) + "\n2022-04-29,e1,p,s1,0,1\n"
    for name in (*STRAY, "date=2022-04-29/part-0.csv"):
        s3.put_object(Bucket="landing-stray", Key=f"l/interactions/{name}", Body=body.encode())
    with pytest.raises(LandingError) as err:
        extract("interactions", "2022-04-29", "s3://landing-stray/l", tmp_path / "o.parquet", conn_id=aws_conn)  # fmt: skip
    assert str(err.value).startswith(
        "s3://landing-stray/l/interactions: 5 entries no run reads: 2022-04-29/, Date=2022-04-29/, date=2022-4-30/, "
        "dt=2022-04-29/, part-9.csv ("
    )


@pytest.mark.services
def test_an_s3_partition_is_its_own_files_as_locally(aws_conn, moto_server, tmp_path):
    # S3 lists keys recursively: a writer's _temporary/ copy below the partition was read too.
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket="landing-subfolders")
    body = ",".join(INTERACTION_HEADER) + "\n2022-04-29,e1,p,s1,0,1\n"
    partition = "landing/interactions/date=2022-04-29"
    for key in ("part-0.csv", "_temporary/0/part-0.csv"):
        s3.put_object(Bucket="landing-subfolders", Key=f"{partition}/{key}", Body=body.encode())
    out = tmp_path / "out.parquet"
    result = extract(
        "interactions", "2022-04-29", "s3://landing-subfolders/landing", out, conn_id=aws_conn
    )
    assert (result["files"], result["rows"]) == (1, 1)
    assert staged(out)[0][0] == f"s3://landing-subfolders/{partition}/part-0.csv"
    # an empty folder (its folder key alone) is no one's rows
    s3.put_object(Bucket="landing-subfolders", Key=f"{partition}/logs/", Body=b"")
    extract("interactions", "2022-04-29", "s3://landing-subfolders/landing", out, conn_id=aws_conn)
    # any other sub-folder's rows were in no count, output or quarantine
    s3.put_object(Bucket="landing-subfolders", Key=f"{partition}/hour=10/p.csv", Body=body.encode())
    with pytest.raises(LandingError) as err:
        extract("interactions", "2022-04-29", "s3://landing-subfolders/landing", out, conn_id=aws_conn)  # fmt: skip
    assert str(err.value).startswith(
        f"s3://landing-subfolders/{partition}: 1 folder(s) in the partition that no run reads: "
        "hour=10/ (a partition's files belong directly in it;"
    )


@pytest.mark.services
def test_an_s3_file_s3_will_not_give_fails_naming_it(aws_conn, moto_server, tmp_path, monkeypatch):
    # botocore's message names no key ("An error occurred (404) when calling the HeadObject
    # operation: Not Found"): which file of the partition failed was anyone's guess.
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket="landing-unreadable")
    body = (",".join(INTERACTION_HEADER) + "\n2022-04-29,e1,p,s1,0,1\n").encode()
    archived = "landing/interactions/date=2022-04-29/part-0.csv"
    s3.put_object(Bucket="landing-unreadable", Key=archived, Body=body, StorageClass="GLACIER")
    out = tmp_path / "out.parquet"
    with pytest.raises(LandingError) as err:
        extract("interactions", "2022-04-29", "s3://landing-unreadable/landing", out, aws_conn)
    assert str(err.value) == (
        f"s3://landing-unreadable/{archived}: cannot be read (InvalidObjectState: archived "
        "(Glacier, Deep Archive): restore it first)"
    )
    # listed, then deleted before it was read (a writer replacing its files)
    gone = "landing/interactions/date=2022-04-30/part-0.csv"
    s3.put_object(Bucket="landing-unreadable", Key=gone, Body=body)
    listed = landing._checked_s3_keys

    def listed_then_deleted(*args):
        keys = listed(*args)
        s3.delete_object(Bucket="landing-unreadable", Key=gone)
        return keys

    monkeypatch.setattr(landing, "_checked_s3_keys", listed_then_deleted)
    with pytest.raises(LandingError) as err:
        extract("interactions", "2022-04-30", "s3://landing-unreadable/landing", out, aws_conn)
    assert str(err.value) == (
        f"s3://landing-unreadable/{gone}: cannot be read (404 Not Found: gone since the "
        "partition was listed)"
    )


@pytest.mark.services
def test_an_s3_file_of_a_long_name_is_read(aws_conn, moto_server, tmp_path):
    # Downloaded under its own name, a key's last part over 240 bytes (S3 allows 1,024) failed
    # the extract with "File name too long", where a local file of that name is read.
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket="landing-long-names")
    body = (",".join(INTERACTION_HEADER) + "\n2022-04-29,e1,p,s1,0,1\n").encode()
    key = "landing/interactions/date=2022-04-29/" + "p" * 300 + ".csv.gz"
    s3.put_object(Bucket="landing-long-names", Key=key, Body=gzip.compress(body))
    out = tmp_path / "out.parquet"
    result = extract("interactions", "2022-04-29", "s3://landing-long-names/landing", out, aws_conn)
    assert result["rows"] == 1 and staged(out)[0][0] == f"s3://landing-long-names/{key}"


def test_a_folder_in_a_local_partition_fails_its_extract(tmp_path):
    root = tmp_path / "landing"
    partition = root / "interactions" / "date=2022-04-29"
    for name in ("part-0.csv", "_temporary/0/part-0.csv", "logs/_x/part-0.csv"):
        write_csv(partition / name, INTERACTION_HEADER, [["2022-04-29", "e", "p", "s", 0, 1]])
    (partition / "empty").mkdir()
    # a writer's folder, an empty one, and one holding hidden files only: no one's rows
    out = tmp_path / "out.parquet"
    assert extract("interactions", "2022-04-29", str(root), out)["files"] == 1
    write_csv(partition / "hour=10" / "part-0.csv", INTERACTION_HEADER, [["2022-04-29", "e", "p", "s", 0, 1]])  # fmt: skip
    with pytest.raises(LandingError) as err:
        extract("interactions", "2022-04-29", str(root), tmp_path / "out.parquet")
    assert str(err.value).startswith(
        f"{partition}: 1 folder(s) in the partition that no run reads: hour=10/ ("
    )


ELEMENT_ROW = ["p1", "Which team do you support?", 1, "Manchester Blue"]


def test_the_catalogue_in_a_dated_folder_fails_its_extract(tmp_path, caplog):
    # elements/ has no partitions: the catalogue landed in elements/date=.../ was read as no
    # catalogue at all, and every interaction of the day lost its title and label, run green
    root = tmp_path / "landing"
    write_csv(root / "elements" / "archive" / "old.csv", ELEMENT_HEADER, [ELEMENT_ROW])  # not read
    write_csv(root / "elements" / "date=2022-04-30" / "elements.csv", ELEMENT_HEADER, [ELEMENT_ROW])
    out = tmp_path / "out.parquet"
    with pytest.raises(LandingError) as err:
        extract("elements", "2022-04-30", str(root), out)
    assert str(err.value).startswith(
        f"{root / 'elements'}: 1 folder(s) in the folder that no run reads: date=2022-04-30/ "
        "(elements/ has no date partitions: its files belong directly in it;"
    )
    # beside the catalogue itself, a dated folder is likely an old one kept: named, not read
    write_csv(root / "elements" / "elements.csv", ELEMENT_HEADER, [ELEMENT_ROW])
    with caplog.at_level(logging.WARNING, logger="audience_profiles.landing"):
        assert extract("elements", "2022-04-30", str(root), out)["files"] == 1
    assert (
        f"{root / 'elements'}: folder(s) named as partitions, not read (elements/ has no date "
        "partitions: the catalogue read is the folder's own files): date=2022-04-30/"
    ) in caplog.text


@pytest.mark.services
def test_the_catalogue_in_a_dated_s3_folder_fails_its_extract(aws_conn, moto_server, tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket="landing-catalogue")
    body = b"poll_id,title,option,option_label\np1,Which team?,1,Blue\n"
    s3.put_object(Bucket="landing-catalogue", Key="landing/elements/archive/old.csv", Body=body)
    s3.put_object(Bucket="landing-catalogue", Key="landing/elements/dt=2022-04-30/", Body=b"")
    out = tmp_path / "out.parquet"
    root = "s3://landing-catalogue/landing"
    assert extract("elements", "2022-04-30", root, out, conn_id=aws_conn)["files"] == 0
    s3.put_object(Bucket="landing-catalogue", Key="landing/elements/dt=2022-04-30/e.csv", Body=body)
    with pytest.raises(LandingError) as err:
        extract("elements", "2022-04-30", root, out, conn_id=aws_conn)
    assert str(err.value).startswith(
        "s3://landing-catalogue/landing/elements: 1 folder(s) in the folder that no run reads: "
        "dt=2022-04-30/ (elements/ has no date partitions"
    )
    s3.put_object(Bucket="landing-catalogue", Key="landing/elements/elements.csv", Body=body)
    assert extract("elements", "2022-04-30", root, out, conn_id=aws_conn)["files"] == 1


def test_a_partition_counts_as_landed_with_a_data_file_or_its_marker(tmp_path):
    root, interactions = tmp_path / "landing", SOURCES["interactions"]
    folder = root / "interactions" / "date=2022-04-29"

    def gap(marker=None):
        return partition_gap(str(root), interactions, "2022-04-29", None, marker)

    assert gap() == f"{folder}: no data file in it yet"  # no folder
    folder.mkdir(parents=True)
    (folder / "_SUCCESS").touch()
    (folder / ".part-0.csv.crc").touch()
    assert gap() == f"{folder}: no data file in it yet"  # markers and temporaries are no data
    assert gap("_SUCCESS") is None
    write_csv(folder / "part-0.csv", INTERACTION_HEADER, [])  # the header alone: a day of no rows
    assert gap() is None
    assert gap("_DONE") == f"{folder}: no _DONE in it yet"  # with a marker, only the marker
    # A file the extract would fail on fails the wait too, named, rather than wait for hours
    # and then say the partition has no data file.
    (folder / "part-1.csv.7z").touch()
    with pytest.raises(LandingError, match=r"1 file\(s\) the pipeline does not read: part-1"):
        gap()
    (folder / "part-1.csv.7z").unlink()
    (folder / "part-1.csv\r").touch()  # written by a script with Windows line endings
    with pytest.raises(LandingError, match=r"does not read: 'part-1.csv\\r' \(it reads"):
        gap()
    (folder / "part-1.csv\r").unlink()
    (root / "interactions" / "date=2022-4-30").mkdir()
    with pytest.raises(LandingError, match="entry no run reads: date=2022-4-30/"):
        gap()


@pytest.mark.services
def test_an_s3_partition_counts_as_landed_as_a_local_one(aws_conn, moto_server):
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket="landing-ready")
    root, interactions = "s3://landing-ready/l", SOURCES["interactions"]
    folder = "l/interactions/date=2022-04-29"

    def gap(marker=None):
        return partition_gap(root, interactions, "2022-04-29", aws_conn, marker)

    assert gap() == f"s3://landing-ready/{folder}: no data file in it yet"
    s3.put_object(Bucket="landing-ready", Key=f"{folder}/_temporary/0/part-0.csv", Body=b"x")
    assert gap() == f"s3://landing-ready/{folder}: no data file in it yet"  # not its own file
    s3.put_object(Bucket="landing-ready", Key=f"{folder}/part-0.csv", Body=b"date\n")
    assert gap() is None
    assert gap("_SUCCESS") == f"s3://landing-ready/{folder}: no _SUCCESS in it yet"
    s3.put_object(Bucket="landing-ready", Key=f"{folder}/_SUCCESS", Body=b"")
    assert gap("_SUCCESS") is None
    s3.put_object(Bucket="landing-ready", Key=f"{folder}/part-1.txt", Body=b"")
    with pytest.raises(LandingError, match="does not read: part-1.txt"):
        gap("_SUCCESS")


def test_the_extract_names_the_version_it_read_as_the_partition_lists_it(tmp_path):
    root = tmp_path / "landing"
    part = write_csv(
        root / "interactions" / "date=2022-04-29" / "part-0.csv", INTERACTION_HEADER, []
    )
    (part.parent / "_SUCCESS").touch()
    result = extract("interactions", "2022-04-29", str(root), tmp_path / "out.parquet")
    now = partition_versions(str(root), SOURCES["interactions"], "2022-04-29", None)
    assert result["versions"] == now == {str(part): now[str(part)]}  # data files only
    part.write_text(part.read_text() + "2022-04-29,e,p,s,0,1\n")  # a correction
    assert partition_versions(str(root), SOURCES["interactions"], "2022-04-29", None) != now


@pytest.mark.services
def test_an_s3_extract_names_the_version_it_read_as_the_partition_lists_it(
    aws_conn, moto_server, tmp_path
):
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket="landing-versions")
    partition = "l/interactions/date=2022-04-29"
    body = ",".join(INTERACTION_HEADER) + "\n"
    for key in ("part-0.csv", "_SUCCESS", "_temporary/0/part-0.csv"):
        s3.put_object(Bucket="landing-versions", Key=f"{partition}/{key}", Body=body.encode())
    root, interactions = "s3://landing-versions/l", SOURCES["interactions"]
    result = extract("interactions", "2022-04-29", root, tmp_path / "o.parquet", conn_id=aws_conn)
    now = partition_versions(root, interactions, "2022-04-29", aws_conn)
    name = f"s3://landing-versions/{partition}/part-0.csv"
    assert result["versions"] == now and list(now) == [name]
    s3.put_object(Bucket="landing-versions", Key=f"{partition}/part-0.csv", Body=b"date\n")
    assert partition_versions(root, interactions, "2022-04-29", aws_conn)[name] != now[name]


def test_optional_form_columns_may_be_absent(tmp_path):
    # The contract's optional fields: a form without a consent question has no statement.
    folder = tmp_path / "landing" / "form_entries" / "date=2022-04-29"
    folder.mkdir(parents=True)
    (folder / "f.csv").write_text(
        "entry_datetime,email,session_id,optin_1\n2022-04-29T10:00:00,a@b.co,s1,Yes\n"
    )
    out = tmp_path / "out.parquet"
    result = extract("form_entries", "2022-04-29", str(tmp_path / "landing"), out)
    assert (result["rows"], result["malformed"]) == (1, 0)
    row = duckdb.sql(f"SELECT optin_1, optin_2, first_name FROM read_parquet('{out}')").fetchall()
    assert row == [("Yes", None, None)]


def test_raw_keeps_every_character_of_the_line(tmp_path):
    # Lines were read with a one-character delimiter (0x1F) that cut a line holding it short.
    _, rows = extract_csv(tmp_path, "2022-04-29,e\x1f1,p,s1,0,1\n")
    assert rows[0][3] == "2022-04-29,e\x1f1,p,s1,0,1"


def test_a_csv_of_blank_lines_stages_nothing(tmp_path):
    result, rows = extract_csv(tmp_path, "\n\n")
    assert (result["rows"], rows) == (0, [])


def test_every_non_empty_line_is_a_row_or_quarantined_on_each_path(tmp_path):
    # The same lines through the record-per-line path (no quote left open) and the
    # record-by-record one (a value over two lines): the same rows and reasons.
    lines = ["2022-04-29,e1,p,s1,0,1", "bad,row", "", "   ", "\t", "2022-04-29,e2,p,s2,0,1,x"]
    _, plain = extract_csv(tmp_path / "a", "\n".join(lines) + "\n")
    _, spanning = extract_csv(tmp_path / "b", "\n".join(lines) + '\n2022-04-29,"e\n3",p,s3,0,1\n')
    expected = [
        (2, None),
        (3, "malformed CSV row: too few columns (expected 6, found 2)"),
        (5, "malformed CSV row: too few columns (expected 6, found 1)"),
        (6, "malformed CSV row: too few columns (expected 6, found 1)"),
        (7, "malformed CSV row: too many columns (expected 6, found 7)"),
    ]
    assert [(r[1], r[2]) for r in plain] == expected
    assert [(r[1], r[2]) for r in spanning] == [*expected, (8, None)]


HEADER = "date,event_id,poll_id,session_id,option,votes"
SPANNING = '2022-04-29,"e\n9",p,s9,0,1\n'  # a value over two lines: the record-by-record path


def extract_bytes(tmp_path, data: bytes):
    """Land ``data`` (header included) as one CSV file, byte for byte; extract it; (result,
    rows as (_line, _error, _raw, event_id), values as (_line, the source's columns))."""
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_bytes(data)
    out = tmp_path / "out.parquet"
    result = extract("interactions", "2022-04-29", str(tmp_path / "landing"), out)
    rows = staged(out)
    return result, [r[1:4] + (r[5],) for r in rows], [(r[1], *r[4:]) for r in rows]


@pytest.mark.parametrize(
    "data",
    [
        # an LF file with one CRLF row (a row appended by another tool)
        b"H\n2022-04-29,e1,p,s1,0,1\r\nbad,row\n\n2022-04-29,e2,p,s2,0,1\n",
        # a CRLF header written separately from LF rows
        b"H\r\n2022-04-29,e1,p,s1,0,1\nbad,row\n\n2022-04-29,e2,p,s2,0,1\n",
        # a CRLF blank line in an LF file
        b"H\n2022-04-29,e1,p,s1,0,1\nbad,row\n\r\n2022-04-29,e2,p,s2,0,1",
        # a CRLF file with one LF row, a lone CR ending a line
        b"H\r\n2022-04-29,e1,p,s1,0,1\nbad,row\r\r\n2022-04-29,e2,p,s2,0,1\r\n",
    ],
)
def test_mixed_line_endings_are_read_line_by_line(tmp_path, data):
    # DuckDB failed such a file whole ("CSV Parser state machine reached an invalid state",
    # naming no row): a CRLF, a lone CR and an LF each end a physical line, as in an editor.
    result, rows, _ = extract_bytes(tmp_path, data.replace(b"H", HEADER.encode(), 1))
    assert (result["rows"], result["malformed"]) == (3, 1)
    assert rows == [
        (2, None, "2022-04-29,e1,p,s1,0,1", "e1"),
        (3, "malformed CSV row: too few columns (expected 6, found 2)", "bad,row", None),
        (5, None, "2022-04-29,e2,p,s2,0,1", "e2"),
    ]


@pytest.mark.parametrize(
    ("data", "value"),
    [
        # an LF file: DuckDB's line splitting counted the CRLF as two line breaks, so the value
        # became "x\n\ny" and every later row's line was one too high
        (f'{HEADER}\n2022-04-29,"x\r\ny",p,s1,0,1\n2022-04-29,e2,p,s2,0,1\n', "x\r\ny"),
        # a CRLF file: DuckDB's line splitting dropped the character after a lone CR
        (f'{HEADER}\r\n2022-04-29,"abc\rXYZ",p,s1,0,1\r\n2022-04-29,e2,p,s2,0,1\r\n', "abc\rXYZ"),
        # a CRLF file's value over two lines keeps its CRLF, as in a mixed file (it was
        # joined with an LF)
        (f'{HEADER}\r\n2022-04-29,"x\r\ny",p,s1,0,1\r\n2022-04-29,e2,p,s2,0,1', "x\r\ny"),
    ],
    ids=["crlf-in-an-lf-file", "lone-cr-in-a-crlf-file", "crlf-file"],
)
def test_a_line_break_in_a_quoted_value_is_kept_as_written(tmp_path, data, value):
    result, rows, _ = extract_bytes(tmp_path, data.encode())
    assert (result["rows"], result["malformed"]) == (2, 0)
    assert rows == [
        (2, None, f'2022-04-29,"{value}",p,s1,0,1', value),
        (4, None, "2022-04-29,e2,p,s2,0,1", "e2"),
    ]


def logged(error: BaseException) -> str:
    """The error as a task log shows it: its traceback, with any chained exception."""
    return "".join(traceback.format_exception(error))


JSON_RECORD = (
    '{"date": "2022-04-29", "event_id": "%s", "poll_id": "p", "session_id": "s",'
    ' "option": 0, "votes": 1}'
)
LATIN1 = "Jos\xe9-secret"  # written as Latin-1: the byte E9, not UTF-8


@pytest.mark.parametrize(
    ("name", "data", "line"),
    [
        # LF and CRLF files (DuckDB reads them first: its error quotes the row), a mixed one
        ("a.csv", f"{HEADER}\n2022-04-29,e1,p,s1,0,1\n2022-04-29,Jos\xe9-secret,p,s2,0,1\n", 3),
        ("a.csv", f"{HEADER}\r\n2022-04-29,Jos\xe9-secret,p,s2,0,1\r\n", 2),
        ("a.csv", f"{HEADER}\r\n2022-04-29,e1,p,s1,0,1\n2022-04-29,\xff-secret,p,s2,0,1\n", 3),
        ("a.json", f"{JSON_RECORD % 'e1'}\n{JSON_RECORD % LATIN1}\n", 2),
        ("a.json", f"{JSON_RECORD % LATIN1}\r\n{JSON_RECORD % 'e2'}\n", 1),
    ],
    ids=["csv-lf", "csv-crlf", "csv-mixed", "json-lf", "json-mixed"],
)
def test_a_byte_that_is_not_utf8_fails_naming_file_and_line_never_the_row(
    tmp_path, name, data, line
):
    # DuckDB's error ("Original Line: <the row>") reached the LandingError and the Slack alert.
    from audience_profiles.alerts import error_text

    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    (folder / name).write_bytes(data.encode("latin-1"))
    with pytest.raises(LandingError) as err:
        extract("interactions", "2022-04-29", str(tmp_path / "landing"), tmp_path / "out.parquet")
    assert str(err.value) == f"{folder / name}: line {line} is not UTF-8 text"
    for text in (logged(err.value), error_text(err.value)):
        assert "secret" not in text and "Original Line" not in text


def test_a_utf16_file_fails_as_not_utf8_without_its_text(tmp_path):
    data = f"{HEADER}\n2022-04-29,secret,p,s1,0,1\n".encode("utf-16")
    with pytest.raises(LandingError) as err:
        extract_bytes(tmp_path, data)
    assert str(err.value).endswith("a.csv: line 1 is not UTF-8 text")
    assert "s\x00e\x00c" not in logged(err.value) and "Original Line" not in logged(err.value)


@pytest.mark.parametrize(
    "ending", ["\n", "\r\n", "mixed"], ids=["lf", "crlf", "mixed-line-endings"]
)
def test_a_line_over_duckdbs_maximum_line_size_is_read_on_every_path(tmp_path, ending):
    # 3 MB: DuckDB's reader (max_line_size 2 MB) failed an LF or CRLF file whole, quoting the
    # line, while the mixed-line-endings path read it.
    big = "x" * 3_000_000
    lines = [HEADER, f"2022-04-29,e1,p,s1,0,{big}", "2022-04-29,e2,p,s2,0,1", ""]
    data = (
        "\r\n".join(lines[:2]) + "\n" + "\n".join(lines[2:])
        if ending == "mixed"
        else ending.join(lines)
    )
    result, rows, _ = extract_bytes(tmp_path, data.encode())
    assert (result["rows"], result["malformed"]) == (2, 0)
    assert [(r[0], r[1], len(r[2]), r[3]) for r in rows] == [
        (2, None, len(lines[1]), "e1"),
        (3, None, len(lines[2]), "e2"),
    ]
    votes = duckdb.sql(f"SELECT votes FROM '{tmp_path}/out.parquet' ORDER BY _line").fetchall()
    assert votes == [(big,), ("1",)]


@pytest.mark.parametrize("ending", ["\n", "\r\n", "mixed"], ids=["lf", "crlf", "mixed"])
def test_a_json_line_over_duckdbs_maximum_line_size_is_read(tmp_path, ending):
    big = "x" * 3_000_000
    first, second = JSON_RECORD % big, JSON_RECORD % "e2"
    data = f"{first}\r\n{second}\n" if ending == "mixed" else f"{first}{ending}{second}{ending}"
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    (folder / "a.json").write_bytes(data.encode())
    out = tmp_path / "out.parquet"
    result = extract("interactions", "2022-04-29", str(tmp_path / "landing"), out)
    assert (result["rows"], result["malformed"]) == (2, 0)
    assert [(r[1], r[2], r[5]) for r in staged(out)] == [(1, None, big), (2, None, "e2")]


def test_duckdbs_error_text_is_never_passed_on():
    # Its messages quote the row; only the kind of error and the line are kept.
    from audience_profiles.landing import _read_failure

    message = (
        "Invalid Input Error: CSV Error on Line: 7\nOriginal Line: 2022-04-29,ann@example.com\n"
        "Invalid unicode (byte sequence mismatch) detected.\n\n  file = /x/a.csv"
    )
    assert _read_failure(duckdb.InvalidInputException(message)) == "line 7: not UTF-8 text"
    unknown = duckdb.ConversionException("Could not convert string 'ann@example.com' to INT32")
    assert _read_failure(unknown) == "ConversionException"


@pytest.mark.parametrize(
    "names",
    [["part-0.csv.7z"], ["part-1.txt", "part-0.csv.lz4"], ["part-0.CSV.7Z", "notes"]],
)
def test_a_file_the_pipeline_does_not_read_fails_the_extract_naming_it(tmp_path, names):
    # They were skipped silently: their rows were in no count, output or quarantine.
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    write_csv(folder / "part-2.csv", INTERACTION_HEADER, [["2022-04-29", "e", "p", "s", 0, 1]])
    for name in names:
        (folder / name).write_bytes(b"anything")
    with pytest.raises(LandingError) as err:
        extract("interactions", "2022-04-29", str(tmp_path / "landing"), tmp_path / "out.parquet")
    message = str(err.value)
    assert message.startswith(f"{folder}: {len(names)} file(s) the pipeline does not read: ")
    assert all(n in message for n in names) and "part-2.csv" not in message
    assert (
        "(it reads *.csv, *.json, *.ndjson, *.jsonl, each also compressed: *.csv.gz, *.csv.bz2, "
        "*.csv.zst, *.csv.zip, *.csv.xz, ...; names starting with _ or . are ignored)" in message
    )


def test_a_writers_marker_and_hidden_files_are_ignored(tmp_path):
    folder = tmp_path / "landing" / "elements"
    write_csv(
        folder / "e.csv", ["poll_id", "title", "option", "option_label"], [["p", "t", 0, "l"]]
    )
    for name in ("_SUCCESS", ".e.csv.crc", "_started_123.txt"):
        (folder / name).write_bytes(b"")
    (folder / "archive").mkdir()
    (folder / "archive" / "old.csv.gz").write_bytes(b"")
    result = extract("elements", "2022-04-29", str(tmp_path / "landing"), tmp_path / "out.parquet")
    assert (result["files"], result["rows"]) == (1, 1)


def test_a_utf8_bom_is_not_part_of_the_header_of_a_mixed_file(tmp_path):
    result, rows, _ = extract_bytes(
        tmp_path, f"\ufeff{HEADER}\r\n2022-04-29,é1,p,s1,0,1\n".encode()
    )
    assert (result["rows"], rows) == (1, [(2, None, "2022-04-29,é1,p,s1,0,1", "é1")])


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_a_long_value_over_lines_is_one_row(tmp_path, ending):
    # Past csv's default field size limit (131,072 characters) the reader failed mid-record
    # and restarted inside the value, staging its second line as a made-up valid row.
    big = "x" * 140_000
    body = [
        f'2022-04-29,e1,p,s1,0,"{big}',
        "2022-04-29,e9,p,s9,0,1",
        'end"',
        "2022-04-29,e2,p,s2,0,1",
    ]
    result, rows, _ = extract_bytes(tmp_path, ending.join([HEADER, *body, ""]).encode())
    assert (result["rows"], result["malformed"]) == (2, 0)
    assert [r[:2] for r in rows] == [(2, None), (5, None)]
    assert rows[0][2] == ending.join(body[:3])
    values = duckdb.sql(f"SELECT votes FROM '{tmp_path}/out.parquet' ORDER BY _line").fetchall()
    assert values == [(f"{big}{ending}2022-04-29,e9,p,s9,0,1{ending}end",), ("1",)]


@pytest.mark.parametrize(
    "line, expected",
    [
        # empty fields past the header's width are dropped, as DuckDB's reader drops them
        ("2022-04-29,e1,p,s1,0,1,", (None, "e1", "1")),
        ("2022-04-29,e1,p,s1,0,1,,,", (None, "e1", "1")),
        ('2022-04-29,e1,p,s1,0,1,""', (None, "e1", "1")),
        ("2022-04-29,e1,p,s1,0,,", (None, "e1", None)),
        # ... only empty ones
        (
            "2022-04-29,e1,p,s1,0,1,,x",
            ("malformed CSV row: too many columns (expected 6, found 8)", None, None),
        ),
        # a space before an opening quote: the quotes are not part of the value
        ('2022-04-29, "e1",p,s1,0,1', (None, "e1", "1")),
        ('2022-04-29, "e,1",p,s1,0, "1"', (None, "e,1", "1")),
        # ... while spaces before an unquoted value stay, as DuckDB keeps them (an email as
        # entered keeps them: skipinitialspace dropped them on the record-by-record path)
        ("2022-04-29,  e1,p,s1,0,1", (None, "  e1", "1")),
        # ... even when another value of the line is quoted after spaces
        ('2022-04-29,  e1,p,s1,0, "1"', (None, "  e1", "1")),
        # spaces after a closing quote are dropped (DuckDB's reader allows them, the csv
        # module's did not: the line was quarantined on the record-by-record path only)
        ('2022-04-29,"e1" ,p,s1,0,1', (None, "e1", "1")),
        ('2022-04-29,"e1",p,s1,0,"1"  ', (None, "e1", "1")),
        ('2022-04-29,"e""1" ,p,s1,0,1', (None, 'e"1', "1")),
        # ... but nothing else: DuckDB read `"e" "1"` as `e 1` and a tab as its own error
        (
            '2022-04-29,"e" "1",p,s1,0,1',
            ("malformed CSV row: ',' expected after '\"'", None, None),
        ),
        (
            '2022-04-29,"e1"\t,p,s1,0,1',
            ("malformed CSV row: ',' expected after '\"'", None, None),
        ),
        # and spaces before an opening quote are never a value's: DuckDB read a value after
        # two of them whole, quotes and spaces
        ('2022-04-29,  "e1",p,s1,0,1', (None, "e1", "1")),
        ('2022-04-29,e1,p,s1,0,  "1"  ', (None, "e1", "1")),
        # a quote inside an unquoted value is text, on every path
        ('2022-04-29,e"1,p,s1,0,1', (None, 'e"1', "1")),
    ],
)
def test_a_line_reads_alike_on_every_path(tmp_path, line, expected):
    # The same line on the fast path, and on the record-by-record one (taken when any value of
    # the file spans lines, or its line endings are mixed): one outcome, whatever the rest of
    # the file holds. Trailing empty fields were "too many columns" on the latter only, and
    # ` "e1"` was stored with its space and quotes.
    paths = {
        "fast": f"{HEADER}\n{line}\n",
        "spanning": f"{HEADER}\n{line}\n{SPANNING}",
        "mixed": f"{HEADER}\r\n{line}\n",
    }
    for path, data in paths.items():
        _, rows, values = extract_bytes(tmp_path / path, data.encode())
        assert rows[0][:3] == (2, expected[0], line), path
        assert (values[0][2], values[0][6]) == expected[1:], path
        assert len(rows) == (2 if path == "spanning" else 1), path


def test_json_lines_with_mixed_line_endings_keep_their_line_numbers(tmp_path):
    # DuckDB's line splitting counted the CRLF of an LF file as two lines: later lines shifted.
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    record = (
        '{"date": "2022-04-29", "event_id": "e%d", "poll_id": "p", "session_id": "s",'
        ' "option": 0, "votes": 1}'
    )
    data = f"{record % 1}\n{record % 2}\r\n\n{record % 3}\n"
    (folder / "a.json").write_bytes(data.encode())
    out = tmp_path / "out.parquet"
    result = extract("interactions", "2022-04-29", str(tmp_path / "landing"), out)
    assert (result["rows"], result["malformed"]) == (3, 0)
    assert [(r[1], r[3], r[5]) for r in staged(out)] == [
        (1, record % 1, "e1"),
        (2, record % 2, "e2"),
        (4, record % 3, "e3"),
    ]


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 1 << 20])
def test_line_endings_are_told_apart_in_chunks(tmp_path, monkeypatch, chunk):
    # The file is read in chunks, a CRLF possibly split between two: every text of up to 6
    # characters among a, CR and LF, against its counts over the whole text.
    from itertools import product

    from audience_profiles import landing

    monkeypatch.setattr(landing, "LINE_ENDING_CHUNK", chunk)
    for size in range(7):
        for chars in product(b"a\r\n", repeat=size):
            data = bytes(chars)
            n_cr, n_lf, n_crlf = data.count(b"\r"), data.count(b"\n"), data.count(b"\r\n")
            expected = "\n" if n_cr == 0 else "\r\n" if n_cr == n_lf == n_crlf else None
            (tmp_path / "f.csv").write_bytes(data)
            assert landing._line_ending(tmp_path / "f.csv") == expected, data


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 1 << 20])
def test_the_line_readers_delimiter_and_a_cut_byte_order_mark_are_found_in_chunks(
    tmp_path, monkeypatch, chunk
):
    # A chunk shorter than the delimiter kept only its own bytes for the next one: split over
    # three chunks, the delimiter was missed and DuckDB cut the line short. And the first read
    # of a short chunk was taken for the whole file: a file starting "\xef\xbc" went to Python.
    from audience_profiles import landing

    monkeypatch.setattr(landing, "LINE_ENDING_CHUNK", chunk)
    path = tmp_path / "f.csv"
    for before in range(9):
        path.write_bytes(b"a" * before + landing.LINE_DELIMITER + b"b\n")
        assert landing._line_ending(path) is None, before
        path.write_bytes(b"a" * before + landing.LINE_DELIMITER[:3] + b"x\n")
        assert landing._line_ending(path) == "\n", before
    for data, expected in [
        (b"\xef", None),
        (b"\xef\xbb", None),
        (b"\xbb", "\n"),
        (b"\xef\xbc", "\n"),
        (b"\xef\xbb\xbf", "\n"),
        (b"\xef\xbb\xbfa\n", "\n"),
    ]:
        path.write_bytes(data)
        assert landing._line_ending(path) == expected, data


def test_the_python_paths_hold_a_batch_of_lines_at_a_time(tmp_path, monkeypatch):
    # Lines and records in batches of 2 (100,000 in use): a record over lines straddles two
    # batches, and the rows are those of one batch.
    data = (
        f'{HEADER}\r\n2022-04-29,e1,p,s1,0,1\n2022-04-29,"x\r\ny",p,s2,0,1\nbad,row\n\n'
        "2022-04-29,e3,p,s3,0,1\r2022-04-29,e4,p,s4,0,1\n"
    )
    _, whole, _ = extract_bytes(tmp_path / "whole", data.encode())
    monkeypatch.setattr("audience_profiles.landing.RECORD_BATCH", 2)
    _, batched, _ = extract_bytes(tmp_path / "batched", data.encode())
    assert batched == whole
    assert [(r[0], r[3]) for r in whole] == [
        (2, "e1"),
        (3, "x\r\ny"),
        (5, None),
        (7, "e3"),
        (8, "e4"),
    ]


@pytest.mark.parametrize("name", ["a[b].csv", "a?.csv", "a*.json", "a{b}.csv"])
def test_a_file_name_with_pattern_characters_is_read_as_itself(tmp_path, name):
    """DuckDB's readers take a path as a glob: `a[b].csv` was read as `ab.csv`, whose rows were
    staged twice while its own were lost, and the counts still agreed."""
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    own = {"date": "2022-04-29", "event_id": "own", "poll_id": "p", "session_id": "s"}
    if name.endswith(".json"):
        write_ndjson(folder / name, [{**own, "option": 0, "votes": 1}])
    else:
        write_csv(folder / name, INTERACTION_HEADER, [[*own.values(), 0, 1]])
    for other in ("ab.csv", "aa.csv"):  # what the pattern would match instead
        write_csv(folder / other, INTERACTION_HEADER, [["2022-04-29", other, "p", "s", 0, 1]])
    write_ndjson(folder / "ab.json", [{**own, "event_id": "ab.json", "option": 0, "votes": 1}])
    out = tmp_path / "out.parquet"
    extract("interactions", "2022-04-29", str(tmp_path / "landing"), out)
    rows = {(r[0].rsplit("/", 1)[-1], r[5]) for r in staged(out)}
    assert rows == {
        (name, "own"),
        ("ab.csv", "ab.csv"),
        ("aa.csv", "aa.csv"),
        ("ab.json", "ab.json"),
    }


def test_a_dangling_link_fails_the_extract_naming_it(tmp_path):
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    (folder / "gone.csv").symlink_to(tmp_path / "nowhere.csv")
    with pytest.raises(LandingError, match=r"gone\.csv: cannot be read"):
        extract("interactions", "2022-04-29", str(tmp_path / "landing"), tmp_path / "o.parquet")


def test_a_file_name_that_is_not_utf8_fails_the_extract_naming_it(tmp_path):
    """A Latin-1 name (from a Windows share or a zip) is no text: the file failed as `cannot be
    read (InvalidInputException)`, and a message holding the name broke a UTF-8 log."""
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    name = os.fsdecode(b"caf\xe9.csv")
    (folder / name).write_text(f"{','.join(INTERACTION_HEADER)}\n2022-04-29,e1,p1,s1,0,1\n")
    (folder / os.fsdecode(b".caf\xe9.csv.crc")).write_text("")  # hidden: left alone
    with pytest.raises(LandingError) as err:
        extract("interactions", "2022-04-29", str(tmp_path / "landing"), tmp_path / "o.parquet")
    assert str(err.value) == (
        f"{folder}: 1 file name(s) not UTF-8 text: caf\\xe9.csv (a landing file's name is "
        "stored with its rows, as text): rename them"
    )
    str(err.value).encode()  # loggable
    # the wait for the landing says so too, rather than wait for a file that is there
    with pytest.raises(LandingError, match="not UTF-8 text"):
        partition_gap(str(tmp_path / "landing"), SOURCES["interactions"], "2022-04-29", None)


def _form_partition(tmp_path) -> Path:
    folder = tmp_path / "landing" / "form_entries" / "date=2022-04-29"
    folder.mkdir(parents=True)
    return folder


def test_a_link_out_of_the_landing_folder_is_refused_naming_it(tmp_path):
    """Whoever can write to the landing folder could link in any file the worker can read; its
    lines would land in quarantine, which drops deliver (a credentials file, another tenant's)."""
    secret = tmp_path / "elsewhere" / "credentials.json"
    secret.parent.mkdir()
    secret.write_text("[default]\naws_secret_access_key = SECRETKEY123\n")
    (_form_partition(tmp_path) / "c.json").symlink_to(secret)
    out = tmp_path / "o.parquet"

    with pytest.raises(LandingError, match=r"c\.json: leads outside the landing folder") as err:
        extract("form_entries", "2022-04-29", str(tmp_path / "landing"), out)
    assert "SECRETKEY123" not in str(err.value) and not out.exists()


def test_a_linked_partition_folder_out_of_the_landing_folder_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_csv(elsewhere / "f.csv", FORM_HEADER, [])
    (tmp_path / "landing" / "form_entries").mkdir(parents=True)
    (tmp_path / "landing" / "form_entries" / "date=2022-04-29").symlink_to(elsewhere)

    with pytest.raises(LandingError, match=r"f\.csv: leads outside the landing folder"):
        extract("form_entries", "2022-04-29", str(tmp_path / "landing"), tmp_path / "o.parquet")


def test_a_link_to_something_not_a_file_is_refused(tmp_path):
    """A link to a pipe (or a device) would hang the extract."""
    pipe = tmp_path / "landing" / "pipe"
    folder = _form_partition(tmp_path)
    os.mkfifo(pipe)
    (folder / "p.csv").symlink_to(pipe)

    with pytest.raises(LandingError, match=r"p\.csv: not a regular file"):
        extract("form_entries", "2022-04-29", str(tmp_path / "landing"), tmp_path / "o.parquet")


def test_a_loop_of_links_is_refused_naming_it(tmp_path):
    folder = _form_partition(tmp_path)
    (folder / "a.csv").symlink_to(folder / "b.csv")
    (folder / "b.csv").symlink_to(folder / "a.csv")
    with pytest.raises(LandingError, match=r"a\.csv: a loop of links"):
        extract("form_entries", "2022-04-29", str(tmp_path / "landing"), tmp_path / "o.parquet")


def test_links_inside_the_landing_folder_are_read(tmp_path):
    """A landing root that is itself a link, and a file linked from elsewhere in it."""
    real = tmp_path / "real"
    shared = real / "shared" / "f.csv"
    shared.parent.mkdir(parents=True)
    write_csv(
        shared,
        FORM_HEADER,
        [
            [
                "2022-04-29T10:00:00",
                "Ann",
                "Fan",
                "ann@example.com",
                "Yes",
                "No",
                "Yes",
                "s-1",
                "Quiz",
                "7",
            ]
        ],
    )
    (real / "form_entries" / "date=2022-04-29").mkdir(parents=True)
    (real / "form_entries" / "date=2022-04-29" / "f.csv").symlink_to(shared)
    (tmp_path / "landing").symlink_to(real)

    result = extract(
        "form_entries", "2022-04-29", str(tmp_path / "landing"), tmp_path / "o.parquet"
    )

    assert result["rows"] == 1


def test_a_file_without_its_header_is_named_without_its_first_line(tmp_path):
    """The first line is then a data row: an email and names must not reach the task log."""
    folder = tmp_path / "landing" / "form_entries" / "date=2022-04-29"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text(
        "2022-04-29T10:00:00,David,Wilson,david.wilson@example.com,Yes,No,Yes,s1,Quiz,7\n"
    )
    with pytest.raises(LandingError) as err:
        extract("form_entries", "2022-04-29", str(tmp_path / "landing"), tmp_path / "o.parquet")
    assert "missing required column(s) entry_datetime, email, session_id" in str(err.value)
    assert "10 field(s)" in str(err.value)
    assert "david" not in str(err.value).lower() and "Wilson" not in str(err.value)


def test_a_header_field_longer_than_csvs_default_limit_is_read(tmp_path):
    wide = "x" * 200_000
    result, rows = extract_csv(tmp_path, "")  # the folder and file, replaced below
    path = tmp_path / "landing" / "interactions" / "date=2022-04-29" / "a.csv"
    path.write_text(",".join([*INTERACTION_HEADER, wide]) + "\n2022-04-29,e1,p,s,0,1,y\n")
    out = tmp_path / "wide.parquet"
    assert extract("interactions", "2022-04-29", str(tmp_path / "landing"), out)["rows"] == 1


def test_a_json_field_named_twice_is_flagged_naming_it(tmp_path):
    """The reader took the first value, most JSON readers take the last: which one was meant
    is unknown. A value that only mentions a field's name is no second field."""
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    row = '"date":"2022-04-29","event_id":"e1","poll_id":"p","session_id":"s","option":0'
    (folder / "a.json").write_text(
        "{" + row + ',"votes":1,"votes":7}\n' + "{" + row + ',"votes":1,"x":"\\"votes\\""}\n'
    )
    out = tmp_path / "out.parquet"
    extract("interactions", "2022-04-29", str(tmp_path / "landing"), out)
    assert [(r[1], r[2]) for r in staged(out)] == [(1, "votes: named more than once"), (2, None)]


@pytest.mark.parametrize(
    "kind, what",
    [
        ("array", "line 1 opens a JSON array of records"),
        ("array on one line", "line 1 opens a JSON array of records"),
        ("array, one record per line", "line 1 opens a JSON array of records"),
        ("pretty-printed", "lines 1-8 are one JSON object (a pretty-printed record)"),
    ],
)
def test_a_json_document_instead_of_json_lines_fails_the_file_saying_so(tmp_path, kind, what):
    # Each of its lines was quarantined as `not a JSON object`: hundreds of rows for one file,
    # under a reason that did not say the contract reads one object per line.
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    record = {c: "1" for c in ("date", "event_id", "poll_id", "session_id", "option", "votes")}
    body = {
        "array": json.dumps([record, record], indent=2),
        "array on one line": json.dumps([record, record]),
        "array, one record per line": f"[\n{json.dumps(record)},\n{json.dumps(record)}\n]\n",
        "pretty-printed": json.dumps(record, indent=2) + "\n" + json.dumps(record, indent=2),
    }[kind]
    (folder / "part-0.json").write_text(body)
    with pytest.raises(LandingError) as err:
        extract("interactions", "2022-04-29", str(tmp_path / "landing"), tmp_path / "o.parquet")
    convert = "jq -c '.[]'" if kind.startswith("array") else "jq -c ."
    assert str(err.value) == (
        f"{folder / 'part-0.json'}: {what}, not JSON Lines (one object per line, "
        f"docs/data-contract.md): land it with one record per line, e.g. converted with {convert}"
    )


INTERACTION_COLUMNS = ("date", "event_id", "poll_id", "session_id", "option", "votes")
CSV_HEADER = ["\ufeffdate", '"event_id"', "poll_id", "session_id", "option", "Votes"]
CSV_ROW = ["2022-04-29", "e1", "p1", "s1", "0", "1"]


@pytest.mark.parametrize(
    "name, body, what",
    [
        *(
            (
                "part-0.json",
                "".join(delimiter.join(cells) + "\n" for cells in (CSV_HEADER, CSV_ROW, CSV_ROW)),
                "line 1 is a CSV header (date, event_id, poll_id, session_id, option, votes) and "
                "no line is a JSON object: the file is CSV; land it named .csv",
            )
            for delimiter in (",", ";", "\t")
        ),
        (
            "part-0.csv",
            "\ufeff" + (json.dumps(dict.fromkeys(INTERACTION_COLUMNS, "1")) + "\n") * 2,
            "line 1 is a JSON object, not a CSV header: the file is JSON Lines; land it named .json",
        ),
    ],
)
def test_a_file_of_the_other_format_fails_the_file_saying_so(tmp_path, name, body, what):
    # A CSV file named .json had each of its rows, header too, quarantined as `not a JSON
    # object`; a JSON Lines file named .csv failed as a malformed CSV header naming a quote.
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    (folder / name).write_text(body)
    with pytest.raises(LandingError) as err:
        extract("interactions", "2022-04-29", str(tmp_path / "landing"), tmp_path / "o.parquet")
    assert str(err.value) == f"{folder / name}: {what}"


def test_a_json_file_of_no_object_and_no_csv_header_is_quarantined_line_by_line(tmp_path):
    # Not CSV (the header lacks a required column), and a file with an object in it is JSON
    # Lines with bad lines: both read, their lines quarantined.
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    header = "date,event_id,poll_id,session_id,option"
    record = json.dumps(
        {c: "1" for c in ("date", "event_id", "poll_id", "session_id", "option", "votes")}
    )
    (folder / "part-0.json").write_text(f"{header},votes\n{record}\n")
    (folder / "part-1.json").write_text(f"{header}\n2022-04-29,e1,p1,s1,0\n")
    out = tmp_path / "out.parquet"
    extract("interactions", "2022-04-29", str(tmp_path / "landing"), out)
    assert sorted((r[0].rsplit("/", 1)[-1], r[1], r[2]) for r in staged(out) if r[2]) == [
        ("part-0.json", 1, "not a JSON object"),
        ("part-1.json", 1, "not a JSON object"),
        ("part-1.json", 2, "not a JSON object"),
    ]


def test_a_json_lines_file_with_a_broken_first_line_is_no_document(tmp_path):
    """A first record cut short, a raw line break inside a string, an array of no records: the
    lines are quarantined, the file is read."""
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    record = json.dumps(
        {c: "1" for c in ("date", "event_id", "poll_id", "session_id", "option", "votes")}
    )
    out = tmp_path / "o.parquet"
    for body, errors in [
        (f"{record[:20]}\n{record}\n", ["not a JSON object", None]),
        (record.replace('"1"', '"1\n"', 1) + f"\n{record}\n", ["not a JSON object"] * 2 + [None]),
        (f"[1, 2]\n{record}\n", ["not a JSON object", None]),
    ]:
        (folder / "part-0.json").write_text(body)
        extract("interactions", "2022-04-29", str(tmp_path / "landing"), out)
        assert [r[2] for r in staged(out)] == errors, body


def test_a_compressed_file_or_a_capitalised_header_is_said_to_be_so(tmp_path):
    # a gzip body named .csv was "line 1 is not UTF-8 text"; Date,Event_ID,... was "none of them
    # a column read"
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    (folder / "part-0.csv").write_bytes(gzip.compress(f"{HEADER}\n".encode()))
    with pytest.raises(LandingError) as err:
        extract("interactions", "2022-04-29", str(tmp_path / "landing"), tmp_path / "out.parquet")
    assert str(err.value).startswith(
        f"{folder / 'part-0.csv'}: gzip-compressed (it starts with gzip's magic bytes): name it "
        "part-0.csv.gz to have it read, or land it decompressed"
    )
    (folder / "part-0.csv").write_text("Date,Event_ID,poll_id,Session_ID,option,votes\n")
    with pytest.raises(LandingError) as err:
        extract("interactions", "2022-04-29", str(tmp_path / "landing"), tmp_path / "out.parquet")
    assert str(err.value).endswith("; column names are lower case, not Date, Event_ID, Session_ID")
    # two files concatenated (their byte order marks twice), a zero-width space: the names
    # look right in any viewer, so the message says what hides in them
    bom = "\ufeff"
    (folder / "part-0.csv").write_text(
        f"{bom}{bom}date,event_id,poll_id,\u200bsession_id,option,votes\n", encoding="utf-8"
    )
    with pytest.raises(LandingError) as err:
        extract("interactions", "2022-04-29", str(tmp_path / "landing"), tmp_path / "out.parquet")
    assert str(err.value) == (
        f"{folder / 'part-0.csv'}: invisible characters in column names: date (U+FEFF), "
        "session_id (U+200B); remove them from the header"
    )
    # an optional column too: not read, its values (a consent answer) were lost unremarked
    forms = tmp_path / "landing" / "form_entries" / "date=2022-04-29"
    forms.mkdir(parents=True)
    (forms / "part-0.csv").write_text(
        "entry_datetime,email,session_id,\u200bOptin_1\n2022-04-29T10:00:00,a@b.co,s,Yes\n"
    )
    with pytest.raises(LandingError, match=r"column names: Optin_1 \(U\+200B\);"):
        extract("form_entries", "2022-04-29", str(tmp_path / "landing"), tmp_path / "f.parquet")
    # and in another case alone, in CSV and in JSON
    (forms / "part-0.csv").write_text(
        "entry_datetime,email,session_id,Optin_1\n2022-04-29T10:00:00,a@b.co,s,Yes\n"
    )
    with pytest.raises(LandingError, match="column names are lower case, not Optin_1: such a"):
        extract("form_entries", "2022-04-29", str(tmp_path / "landing"), tmp_path / "f.parquet")
    (forms / "part-0.csv").unlink()
    (forms / "part-0.json").write_text(
        '{"entry_datetime": "2022-04-29T10:00:00", "email": "a@b.co", "session_id": "s", '
        '"OPTIN_1": "Yes"}\n'
    )
    with pytest.raises(LandingError, match="field names are lower case, not OPTIN_1: such a"):
        extract("form_entries", "2022-04-29", str(tmp_path / "landing"), tmp_path / "f.parquet")
    # and in a record of its own: another record's `optin_1` hid this one's `Optin_1` (the file's
    # fields are all its records'), an opt-out read as no statement
    record = '"entry_datetime": "2022-04-29T10:00:00", "email": "a@b.co", "session_id": "s"'
    (forms / "part-0.json").write_text(
        f'{{{record}, "optin_1": "Yes"}}\n{{{record}, "Optin_1": "No"}}\n'
    )
    with pytest.raises(
        LandingError,
        match=r"not Optin_1: such a field is not read \(in a record without the field in lower",
    ):
        extract("form_entries", "2022-04-29", str(tmp_path / "landing"), tmp_path / "f.parquet")
    # beside it in the same record, it is an extra field, as in a CSV header
    (forms / "part-0.json").write_text(f'{{{record}, "optin_1": "Yes", "Optin_1": "No"}}\n')
    extract("form_entries", "2022-04-29", str(tmp_path / "landing"), tmp_path / "f.parquet")


def test_a_json_field_read_but_for_white_space_or_an_invisible_character_fails_the_file(tmp_path):
    # A CSV header's names are trimmed; a JSON field "optin_1 " (a spreadsheet's header cell,
    # through pandas) was not read, its consent answers lost unremarked, and a record's
    # "\u200bemail" was quarantined as `email: missing`, pointing at a field that is there.
    forms = tmp_path / "landing" / "form_entries" / "date=2022-04-29"
    forms.mkdir(parents=True)
    record = '"entry_datetime": "2022-04-29T10:00:00", "session_id": "s"'
    (forms / "part-0.json").write_text(
        f'{{{record}, "email": "a@b.co", "optin_1 ": "No"}}\n'
        f'{{{record}, "\\u200bemail": "a@b.co", "\\u00a0Optin_2": "No", " note": "x"}}\n'
    )
    with pytest.raises(LandingError) as err:
        extract("form_entries", "2022-04-29", str(tmp_path / "landing"), tmp_path / "f.parquet")
    assert str(err.value) == (
        f"{forms / 'part-0.json'}: field names with white space or invisible characters in "
        r'them: "\u00a0Optin_2", "\u200bemail", "optin_1 "; name the fields without them'
    )


@pytest.mark.parametrize(
    "line, expected",
    [
        ("2022-04-29,e1,p,s1,0,1", (None, "e1", "1")),
        ("2022-04-29,e1,p,s1,0,1,", (None, "e1", "1")),
        ("2022-04-29,e1,p,s1,0,1,,", (None, "e1", "1")),
        ("2022-04-29,e1,p,s1,0,1,x", (None, "e1", "1")),  # an extra column, as named ""
        (
            "2022-04-29,e1,p,s1,0",
            ("malformed CSV row: too few columns (expected 6, found 5)", None, None),
        ),
    ],
)
def test_a_header_ending_in_a_comma_takes_rows_with_or_without_one(tmp_path, line, expected):
    # Excel writes `...,votes,`: its 7 columns quarantined every 6-field row of the day ("too
    # few columns (expected 7, found 6)"). A row may leave the unnamed column out, on every path.
    paths = {
        "fast": f"{HEADER},\n{line}\n",
        "spanning": f"{HEADER},\n{line}\n{SPANNING}",
        "mixed": f"{HEADER},\r\n{line}\n",
    }
    for path, data in paths.items():
        _, rows, values = extract_bytes(tmp_path / path, data.encode())
        assert rows[0][:3] == (2, expected[0], line), path
        assert (values[0][2], values[0][6]) == expected[1:], path
        assert len(rows) == (2 if path == "spanning" else 1), path


def test_a_header_is_split_as_rows_are(tmp_path):
    # A space before an opening quote, as the rows may have it: `"date", "event_id"` was the
    # column ` "event_id"`, so "missing required column(s) event_id".
    header = ", ".join(f'"{c}"' for c in HEADER.split(","))
    for path, rest in (("fast", ""), ("spanning", SPANNING)):
        data = f'{header}\n2022-04-29, "e1",p,s1,0,1\n{rest}'
        _, rows, _ = extract_bytes(tmp_path / path, data.encode())
        assert (rows[0][1], rows[0][3]) == (None, "e1"), path
    with pytest.raises(LandingError, match=r"cannot be read \(malformed CSV header \(',' expected"):
        extract_bytes(tmp_path / "bad", f'"date" "x",{HEADER}\n'.encode())


@pytest.mark.parametrize("first", ["", "  ", "\r"])
def test_a_blank_line_before_the_header_is_named(tmp_path, first):
    # It was "the file is empty, without its header": the header is line 1, as line numbers
    # count, and DuckDB's reader takes line 1 for the header, so the line is not skipped.
    with pytest.raises(
        LandingError, match=r"a\.csv: line 1 is blank: the header must be on line 1"
    ):
        extract_bytes(tmp_path, f"{first}\n{HEADER}\n2022-04-29,e1,p,s1,0,1\n".encode())


def _land_unread_root_entries(put) -> None:
    """A landing root whose misspelt source folder and loose file no run reads, beside what is
    fine to keep there: ``put(key, body)`` writes one file under the root."""
    put("interactions/date=2022-04-29/part-0.csv", ",".join(INTERACTION_HEADER) + "\n")
    put(
        "form-entries/date=2022-04-29/part-0.csv", ",".join(FORM_HEADER) + "\n"
    )  # form_entries/ misspelt
    put("Identity/date=2022-04-29/part-0.csv", "observed_at,session_id,external_id\n")
    put("part-9.csv", ",".join(INTERACTION_HEADER) + "\n")  # a partition's file dropped at the top
    put("archive/interactions/part-0.csv", ",".join(INTERACTION_HEADER) + "\n")  # kept on purpose
    put("_staging/form_entry/part-0.csv", ",".join(FORM_HEADER) + "\n")  # hidden: a writer's own
    put("README.txt", "not data\n")


UNREAD = [
    "Identity/ (not identities/)",
    "form-entries/ (not form_entries/)",
    "part-9.csv (a source's files belong in <source>/date=YYYY-MM-DD/)",
]


def test_a_misspelt_source_folder_and_files_at_the_landing_root_are_named(tmp_path):
    """Files under a source folder's misspelling (``form-entries/``) were read by no run and named
    by no check: their rows were in no count, output or quarantine, without a word."""
    root = tmp_path / "landing"

    def put(key: str, body: str) -> None:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_text(body)

    _land_unread_root_entries(put)
    assert landing.unread_root_entries(str(root), None) == (str(root), UNREAD)
    assert landing.unread_root_entries(str(tmp_path / "none"), None) == (str(tmp_path / "none"), [])


def test_a_name_that_is_not_utf8_is_shown_with_its_bytes_escaped(tmp_path):
    # A Latin-1 name (from a Windows share) was shown as it came: the run report's page failed to
    # encode it (every run's report task, for a file at the landing root), and no UTF-8 log could
    # hold a message naming it.
    root = tmp_path / "landing"
    (root / "interactions").mkdir(parents=True)
    (root / os.fsdecode(b"caf\xe9.csv")).write_text("x\n")
    (root / os.fsdecode(b"Int\xe9ractions")).mkdir()
    assert landing.unread_root_entries(str(root), None)[1] == [
        "Int\\xe9ractions/ (not interactions/)",
        "caf\\xe9.csv (a source's files belong in <source>/date=YYYY-MM-DD/)",
    ]
    (root / "interactions" / os.fsdecode(b"r\xe9sum\xe9.csv")).write_text("x\n")
    with pytest.raises(LandingError) as err:
        extract("interactions", "2022-04-29", str(root), tmp_path / "o.parquet")
    assert "1 entry no run reads: r\\xe9sum\\xe9.csv (" in str(err.value)
    str(err.value).encode()  # loggable
    # a file landed in a partition after its run is late (the report names it)
    partition = root / "identities" / "date=2022-04-29"
    partition.mkdir(parents=True)
    (partition / os.fsdecode(b"caf\xe9.csv")).write_text("x\n")
    late = partition_versions(str(root), SOURCES["identities"], "2022-04-29", None)
    assert list(late) == [f"{partition}/caf\\xe9.csv"]


@pytest.mark.services
def test_a_misspelt_source_folder_is_named_on_s3_too(aws_conn, moto_server):
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket="landing-misspelt")
    for prefix in ("l/", ""):  # under a prefix, and at the bucket's top

        def put(key: str, body: str, prefix=prefix) -> None:
            s3.put_object(Bucket="landing-misspelt", Key=prefix + key, Body=body.encode())

        _land_unread_root_entries(put)
        root = f"s3://landing-misspelt/{prefix}".rstrip("/")
        # at the top, the l/ folder is not named: no source's name is like it
        assert landing.unread_root_entries(root, aws_conn) == (root, UNREAD)


def test_a_spill_that_finds_its_disk_full_is_said_as_a_full_disk(tmp_path, monkeypatch):
    """DuckDB says "Out of Memory" when its spill folder's disk is full: an operator would raise
    memory instead of freeing the disk. (Reproduced on a full tmpfs by review; simulated here.)"""
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    write_csv(folder / "part-0.csv", INTERACTION_HEADER, [["2022-04-29", "e", "p", "s", "1", "1"]])
    connect = duckdb.connect

    class SpillFails:
        def __init__(self, *args, **kwargs):
            self._con = connect(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self._con, name)

        def execute(self, sql, *args):
            if sql.startswith("COPY staged"):
                raise duckdb.OutOfMemoryException(
                    "Out of Memory Error: failed to offload data block of size 256.0 KiB "
                    "(0 bytes/1.4 MiB used) - 'max_temp_directory_size'"
                )
            return self._con.execute(sql, *args)

    monkeypatch.setattr(landing.duckdb, "connect", SpillFails)
    out = tmp_path / "runs" / "extract" / "interactions.parquet"
    with pytest.raises(OSError, match="the disk under the extract's spill folder is full") as err:
        extract("interactions", "2022-04-29", str(tmp_path / "landing"), out)
    assert err.value.filename == str(out.parent / ".interactions.spill")


@pytest.mark.parametrize(
    ("name", "like"),
    [
        ("Form-Entries", "form_entries"),
        ("formentries", "form_entries"),
        ("identity", "identities"),
        ("interaction", "interactions"),
        ("interacions", "interactions"),  # a letter left out
        ("intreactions", "interactions"),  # two swapped
        ("erasure-requests", "erasure_requests"),
        # someone's own folders, not typos: a source's name among other words, or other words
        ("interactions_archive", None),
        ("new_interactions", None),
        ("elements_old", None),
        ("reactions", None),
        ("identifiers", None),
        ("archive", None),
    ],
)
def test_a_folder_is_taken_for_a_misspelt_source_only_when_it_is_one(name, like):
    # A fuzzy match flagged archive folders (interactions_archive/) and other sources
    # (reactions/) on every run.
    assert landing._source_like(name) == like
