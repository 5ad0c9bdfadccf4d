"""The landing contract: every row is staged with its file and physical line, or the file fails."""

from __future__ import annotations

import duckdb
import pytest

from audience_profiles.landing import LandingError, extract
from tests.support import INTERACTION_HEADER, write_csv, write_ndjson


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
    assert rows[1][2].startswith("malformed CSV row")
    assert rows[1][3] == "bad,row"
    assert rows[2][5] == "e,2"  # quoted comma survives


def test_clean_csv_rows_are_numbered_by_their_physical_line(tmp_path):
    # No blank, malformed or multi-line rows: the fast path (row i is line i + 2).
    lines = [f"2022-04-29,e{i},54663,s{i},{i % 4},1" for i in range(5000)]
    result, rows = extract_csv(tmp_path, "\n".join(lines))
    assert result == {**result, "rows": 5000, "malformed": 0}
    assert [(r[1], r[3]) for r in rows] == [(i + 2, line) for i, line in enumerate(lines)]
    assert all(r[5] == f"e{r[1] - 2}" for r in rows)  # each row's values come from its own line


def test_csv_value_spanning_lines_keeps_every_row(tmp_path):
    # A quoted value over two physical lines: rows cannot be matched to lines, so they are
    # staged with no line number and their parsed values as raw text, none dropped.
    result, rows = extract_csv(
        tmp_path, '2022-04-29,"e\n1",54663,s1,0,1\n2022-04-29,e2,54663,s2,1,1\n'
    )
    assert result == {**result, "rows": 2, "malformed": 0}
    assert sorted(r[5] for r in rows) == ["e\n1", "e2"]
    assert all(r[1] is None for r in rows)


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
        ],
    )
    result = extract(
        "interactions", "2022-04-29", str(tmp_path / "landing"), tmp_path / "out.parquet"
    )
    assert (result["rows"], result["malformed"]) == (3, 2)
    rows = staged(tmp_path / "out.parquet")
    assert [r[1] for r in rows] == [1, 2, 4]
    assert rows[0][6] == "54663" and rows[0][8] == "2"  # numbers arrive as text
    assert rows[1][2] == "not a JSON object"


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
    with pytest.raises(LandingError, match="empty.csv: missing required column"):
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
