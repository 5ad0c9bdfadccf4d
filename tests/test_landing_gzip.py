"""Gzip-compressed landing files (``*.csv.gz``, ``*.json.gz``, ...): read as the plain file is,
under the landed name and with the decompressed text's line numbers, or failing naming the file."""

from __future__ import annotations

import errno
import gzip
import os
import traceback
from pathlib import Path

import duckdb
import pytest

from audience_profiles import landing
from audience_profiles.landing import (
    SOURCES,
    LandingError,
    extract,
    partition_gap,
    partition_versions,
    unread_root_entries,
)

HEADER = "date,event_id,poll_id,session_id,option,votes"
RECORD = (
    '{"date": "2022-04-29", "event_id": "%s", "poll_id": "p", "session_id": "s",'
    ' "option": 0, "votes": 1}'
)
CSV_BODIES = {
    # the fast path: every line one row
    "clean": f"{HEADER}\n2022-04-29,e1,p,s1,0,1\n2022-04-29,e2,p,s2,1,1\n",
    # rows DuckDB rejects and a blank line: numbered around them
    "malformed": f'{HEADER}\n2022-04-29,e1,p,s1,0,1\nbad,row\n\n2022-04-29,"e,2",p,s2,1,1\n',
    # a value over two lines and mixed line endings: record by record, in Python
    "spanning": f'{HEADER}\r\n2022-04-29,"e\n1",p,s1,0,1\r\nbad,row\r2022-04-29,e2,p,s2,0,1\n',
    # a byte order mark and a line that is not plain (DuckDB's reader, then read again)
    "bom": f'\ufeff{HEADER}\n2022-04-29,  "e1",p,s1,0,1\n2022-04-29,e2,p,s2,0,1,,x\n',
}
JSON_BODIES = {
    "clean": f"{RECORD % 'e1'}\n{RECORD % 'e2'}\n",
    "mixed": f'{RECORD % "e1"}\r\nnot json\n   \n{{"votes": [1]}}\r\n{RECORD % "e3"}',
}


def staged(path: Path) -> list[tuple]:
    return duckdb.sql(f"SELECT * FROM read_parquet('{path}') ORDER BY _file, _line").fetchall()


def land(root: Path, ds: str, name: str, data: bytes, source: str = "interactions") -> Path:
    path = root / source / f"date={ds}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def read(root: Path, ds: str, out: Path) -> tuple[dict, list[tuple]]:
    result = extract("interactions", ds, str(root), out)
    return result, staged(out)


def logged(error: BaseException) -> str:
    """The error as a task log shows it: its traceback, with any chained exception."""
    return "".join(traceback.format_exception(error))


@pytest.mark.parametrize(
    ("suffix", "body"),
    [(".csv", b) for b in CSV_BODIES.values()]
    + [(s, b) for s in (".json", ".ndjson", ".jsonl") for b in JSON_BODIES.values()],
    ids=[f"csv-{k}" for k in CSV_BODIES]
    + [f"{s[1:]}-{k}" for s in (".json", ".ndjson", ".jsonl") for k in JSON_BODIES],
)
def test_a_gzipped_file_stages_row_for_row_as_the_plain_file(tmp_path, suffix, body):
    # A landed part-0.csv.gz failed the extract: "file(s) the pipeline does not read".
    root = tmp_path / "landing"
    plain = land(root, "2022-04-29", f"part-0{suffix}", body.encode())
    packed = land(root, "2022-04-30", f"part-0{suffix}.gz", gzip.compress(body.encode()))
    plain_result, plain_rows = read(root, "2022-04-29", tmp_path / "plain.parquet")
    result, rows = read(root, "2022-04-30", tmp_path / "gz.parquet")
    assert plain_rows and {r[0] for r in plain_rows} == {str(plain)}
    # _file is the landed .gz; _line, _error, _raw and the values are the plain file's
    assert {r[0] for r in rows} == {str(packed)}
    assert [r[1:] for r in rows] == [r[1:] for r in plain_rows]
    assert (result["rows"], result["malformed"]) == (
        plain_result["rows"],
        plain_result["malformed"],
    )
    # the version is the landed (compressed) file's, as the partition lists it
    versions = partition_versions(str(root), SOURCES["interactions"], "2022-04-30", None)
    assert result["versions"] == versions == {str(packed): landing.local_version(packed.stat())}


@pytest.mark.parametrize(
    "name", ["PART-0.CSV.GZ", "part-0.Csv.Gz", "part-0.JSONL.GZ", "a[b]*?.csv.gz"]
)
def test_an_upper_case_or_pattern_gz_name_is_read(tmp_path, name):
    # (pattern characters: the decompressed copy is named by its number, read as itself)
    root = tmp_path / "landing"
    body = CSV_BODIES["clean"] if ".csv" in name.lower() else JSON_BODIES["clean"]
    path = land(root, "2022-04-29", name, gzip.compress(body.encode()))
    result, rows = read(root, "2022-04-29", tmp_path / "out.parquet")
    assert (result["files"], result["rows"], result["malformed"]) == (1, 2, 0)
    assert [(r[0], r[1], r[5]) for r in rows][0] == (
        str(path),
        1 + name.lower().endswith(".csv.gz"),
        "e1",
    )


def test_every_member_of_a_multi_member_gzip_is_read(tmp_path):
    # concatenated members (an exporter appending, `cat a.gz b.gz`): one text, lines counted on
    root = tmp_path / "landing"
    first, second = f"{HEADER}\n2022-04-29,e1,p,s1,0,1\n2022-04", "-29,e2,p,s2,0,1\nbad,row\n"
    members = [gzip.compress(first.encode()), gzip.compress(b""), gzip.compress(second.encode())]
    land(root, "2022-04-29", "a.csv.gz", b"".join(members))
    result, rows = read(root, "2022-04-29", tmp_path / "out.parquet")
    assert [(r[1], r[2], r[3]) for r in rows] == [
        (2, None, "2022-04-29,e1,p,s1,0,1"),
        (3, None, "2022-04-29,e2,p,s2,0,1"),
        (4, "malformed CSV row: too few columns (expected 6, found 2)", "bad,row"),
    ]


SECRET = "ann.secret@example.com"
GOOD = gzip.compress(f"{HEADER}\n2022-04-29,{SECRET},p,s1,0,1\n".encode() * 50)
CRC_OFF = GOOD[:-8] + bytes([GOOD[-8] ^ 0xFF]) + GOOD[-7:]


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (f"{HEADER}\n2022-04-29,{SECRET},p,s1,0,1\n".encode(), "not a gzip file"),
        (b"\x1f", "not a gzip file"),  # less than gzip's magic bytes
        (GOOD[: len(GOOD) // 2], "truncated gzip"),
        (GOOD[:-4], "truncated gzip"),  # its length field cut off
        (GOOD[:20] + b"\xff" * 8 + GOOD[28:], "corrupt gzip"),  # a deflate stream broken
        (CRC_OFF, "corrupt gzip"),
        (GOOD + SECRET.encode(), "corrupt gzip"),  # text after its last member
    ],
    ids=["plain-text", "one-byte", "half", "no-length", "bad-deflate", "bad-crc", "trailing"],
)
def test_a_corrupt_or_truncated_gzip_fails_naming_the_file_and_the_kind(tmp_path, data, kind):
    root = tmp_path / "landing"
    path = land(root, "2022-04-29", "part-0.csv.gz", data)
    out = tmp_path / "extract" / "out.parquet"
    with pytest.raises(LandingError) as err:
        read(root, "2022-04-29", out)
    assert str(err.value) == f"{path}: cannot be read ({kind})"
    # never a value (gzip's message quotes the file's first bytes), and no scratch copy left
    assert "secret" not in logged(err.value) and "b'" not in logged(err.value)
    assert not any(p.name != "out.parquet" for p in out.parent.iterdir())


@pytest.mark.parametrize("suffix", [".csv", ".json"])
@pytest.mark.parametrize("data", [b"", gzip.compress(b"")], ids=["zero-bytes", "empty-text"])
def test_an_empty_gzip_is_read_as_an_empty_plain_file(tmp_path, suffix, data):
    root = tmp_path / "landing"
    land(root, "2022-04-29", f"a{suffix}", b"")
    packed = land(root, "2022-04-30", f"a{suffix}.gz", data)
    try:
        expected = read(root, "2022-04-29", tmp_path / "plain.parquet")[0]
    except LandingError as exc:  # a CSV without its header
        with pytest.raises(LandingError) as err:
            read(root, "2022-04-30", tmp_path / "gz.parquet")
        assert str(err.value) == str(exc).replace(
            f"{root}/interactions/date=2022-04-29/a{suffix}", str(packed)
        )
        return
    result = read(root, "2022-04-30", tmp_path / "gz.parquet")[0]
    assert (result["files"], result["rows"]) == (expected["files"], expected["rows"]) == (1, 0)


def test_a_dangling_link_to_a_gzip_fails_naming_it(tmp_path):
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    (folder / "gone.csv.gz").symlink_to(tmp_path / "nowhere.csv.gz")
    with pytest.raises(LandingError) as err:
        read(tmp_path / "landing", "2022-04-29", tmp_path / "out.parquet")
    assert str(err.value) == f"{folder / 'gone.csv.gz'}: cannot be read (No such file or directory)"


def test_a_gzip_compressed_twice_says_so(tmp_path):
    root = tmp_path / "landing"
    path = land(root, "2022-04-29", "a.csv.gz", gzip.compress(gzip.compress(HEADER.encode())))
    with pytest.raises(LandingError) as err:
        read(root, "2022-04-29", tmp_path / "out.parquet")
    assert str(err.value).startswith(f"{path}: gzip-compressed twice (decompressed, it starts")


def test_the_decompressed_copy_is_removed_once_read(tmp_path, monkeypatch):
    root = tmp_path / "landing"
    for name in ("a.csv.gz", "b.csv.gz"):
        land(root, "2022-04-29", name, gzip.compress(CSV_BODIES["clean"].encode()))
    land(root, "2022-04-29", "c.csv", CSV_BODIES["clean"].encode())
    out = tmp_path / "extract" / "out.parquet"
    scratch = out.parent / ".out.decompressed"
    seen = []
    stage_csv = landing._stage_csv

    def spy(con, source, name, path):
        seen.append((Path(name).name, path.name, sorted(p.name for p in scratch.glob("*"))))
        return stage_csv(con, source, name, path)

    monkeypatch.setattr(landing, "_stage_csv", spy)
    result = extract("interactions", "2022-04-29", str(root), out)
    assert result["rows"] == 6
    # one decompressed copy at a time, named by the file's number and inner suffix
    assert seen == [
        ("a.csv.gz", "00000.csv", ["00000.csv"]),
        ("b.csv.gz", "00001.csv", ["00001.csv"]),
        ("c.csv", "c.csv", []),
    ]
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.parquet"]
    # and on failure: a file after it that cannot be read
    land(root, "2022-04-29", "d.csv.gz", gzip.compress(b"no,header\n"))
    with pytest.raises(LandingError, match="d.csv.gz: missing required column"):
        extract("interactions", "2022-04-29", str(root), out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.parquet"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_while_decompressing_says_so_naming_the_scratch_folder(tmp_path):
    root = tmp_path / "landing"
    land(root, "2022-04-29", "a.csv.gz", GOOD)
    out = tmp_path / "extract" / "out.parquet"
    scratch = out.parent / ".out.decompressed"
    scratch.mkdir(parents=True)
    (scratch / "00000.csv").symlink_to("/dev/full")  # every write: ENOSPC
    with pytest.raises(OSError) as err:
        extract("interactions", "2022-04-29", str(root), out)
    assert not isinstance(err.value, LandingError)  # not the file's fault: not left out by a stream
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(scratch)
    assert "the disk under the extract's scratch folder is full" in str(err.value)
    assert "secret" not in logged(err.value) and not scratch.exists()


def test_a_gzipped_file_counts_wherever_a_data_file_does(tmp_path):
    root = tmp_path / "landing"
    folder = root / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    gap = partition_gap(str(root), SOURCES["interactions"], "2022-04-29", None)
    assert gap == f"{folder}: no data file in it yet"
    land(root, "2022-04-29", "part-0.json.gz", gzip.compress(JSON_BODIES["clean"].encode()))
    assert partition_gap(str(root), SOURCES["interactions"], "2022-04-29", None) is None
    # one lying where no run reads it is named as a plain one is
    (root / "stray.csv.gz").write_bytes(GOOD)
    assert unread_root_entries(str(root), None)[1] == [
        "stray.csv.gz (a source's files belong in <source>/date=YYYY-MM-DD/)"
    ]
    (root / "interactions" / "beside.ndjson.gz").write_bytes(GOOD)
    with pytest.raises(LandingError, match=r"1 entry no run reads: beside.ndjson.gz \("):
        extract("interactions", "2022-04-29", str(root), tmp_path / "out.parquet")


@pytest.mark.services
def test_an_s3_gzipped_file_is_read_under_its_key(aws_conn, moto_server, tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket="landing-gzip")
    partition = "l/interactions/date=2022-04-29"
    csv_body, json_body = CSV_BODIES["malformed"], JSON_BODIES["mixed"]
    s3.put_object(
        Bucket="landing-gzip", Key=f"{partition}/a.csv.gz", Body=gzip.compress(csv_body.encode())
    )
    s3.put_object(
        Bucket="landing-gzip", Key=f"{partition}/b.JSON.GZ", Body=gzip.compress(json_body.encode())
    )
    root = "s3://landing-gzip/l"
    out = tmp_path / "extract" / "out.parquet"
    result = extract("interactions", "2022-04-29", root, out, conn_id=aws_conn)
    rows = staged(out)

    local = tmp_path / "landing"
    land(local, "2022-04-29", "a.csv", csv_body.encode())
    land(local, "2022-04-29", "b.json", json_body.encode())
    plain = staged(
        extract("interactions", "2022-04-29", str(local), tmp_path / "p.parquet")["path"]
    )
    names = [f"s3://landing-gzip/{partition}/{n}" for n in ("a.csv.gz", "b.JSON.GZ")]
    assert sorted({r[0] for r in rows}) == names
    assert [r[1:] for r in rows] == [r[1:] for r in plain]
    # the compressed objects' ETags, as the partition lists them
    versions = partition_versions(root, SOURCES["interactions"], "2022-04-29", aws_conn)
    assert result["versions"] == versions and sorted(versions) == names
    head = s3.head_object(Bucket="landing-gzip", Key=f"{partition}/a.csv.gz")
    assert versions[names[0]] == head["ETag"].strip('"')
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.parquet"]


def test_erasure_requests_are_read_gzipped_too(tmp_path):
    # the erasure DAG's read_requests stages them through the same extract
    root = tmp_path / "landing"
    folder = root / "erasure_requests"
    folder.mkdir(parents=True)
    header = ",".join(SOURCES["erasure_requests"].columns)
    body = f"{header}\nr1,email,ann@example.com,2022-04-29T10:00:00Z,erase\n"
    (folder / "requests.csv.gz").write_bytes(gzip.compress(body.encode()))
    result = extract("erasure_requests", "2022-04-29", str(root), tmp_path / "out.parquet")
    assert (result["files"], result["rows"], result["malformed"]) == (1, 1, 0)
    assert staged(tmp_path / "out.parquet")[0][:2] == (str(folder / "requests.csv.gz"), 2)
