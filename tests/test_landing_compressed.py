"""Compressed landing files (``*.csv.gz``, ``*.json.bz2``, ``*.jsonl.zst``, ...): read as the
plain file is, under the landed name and with the decompressed text's line numbers, or failing
naming the file. Every test runs for each codec (gzip, bzip2, zstd, zip, xz), those of joined
members and of bytes cut or flipped for the codecs whose files are one stream (not zip, which
has its own)."""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import lzma
import os
import random
import traceback
import zipfile
from pathlib import Path

import duckdb
import pytest
import zstandard

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


# a codec's suffix: how to compress, and its name in messages. zstd with a checksum, as its
# command-line tool writes it (without, a corrupt frame may decompress to other text).
def zip_compress(data: bytes, names: tuple[str, ...] = ("part-0.csv",)) -> bytes:
    """A zip archive of one file (as Firehose and pandas write them), or of ``names``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.writestr(name, data)
    return buffer.getvalue()


COMPRESS = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".zst": zstandard.ZstdCompressor(write_checksum=True).compress,
    ".zip": zip_compress,
    ".xz": lzma.compress,  # with a CRC64 of the text, as the xz tool writes it
}
NAMES = {".gz": "gzip", ".bz2": "bzip2", ".zst": "zstd", ".zip": "zip", ".xz": "xz"}
NOT_A = {
    codec: f"not {'an' if codec == '.xz' else 'a'} {name} file" for codec, name in NAMES.items()
}
CODEC = pytest.mark.parametrize("codec", list(COMPRESS), ids=[s[1:] for s in COMPRESS])
# the codecs whose files are one stream of members, streams or frames, read as they come
STREAMED = [".gz", ".bz2", ".zst", ".xz"]
STREAMED_CODEC = pytest.mark.parametrize("codec", STREAMED, ids=[s[1:] for s in STREAMED])


def compress(codec: str, text: str | bytes) -> bytes:
    return COMPRESS[codec](text.encode() if isinstance(text, str) else text)


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


@CODEC
@pytest.mark.parametrize(
    ("suffix", "body"),
    [(".csv", b) for b in CSV_BODIES.values()]
    + [(s, b) for s in (".json", ".ndjson", ".jsonl") for b in JSON_BODIES.values()],
    ids=[f"csv-{k}" for k in CSV_BODIES]
    + [f"{s[1:]}-{k}" for s in (".json", ".ndjson", ".jsonl") for k in JSON_BODIES],
)
def test_a_compressed_file_stages_row_for_row_as_the_plain_file(tmp_path, codec, suffix, body):
    # A landed part-0.csv.gz failed the extract: "file(s) the pipeline does not read"; so did
    # part-0.csv.bz2 and part-0.csv.zst until they were read too.
    root = tmp_path / "landing"
    plain = land(root, "2022-04-29", f"part-0{suffix}", body.encode())
    packed = land(root, "2022-04-30", f"part-0{suffix}{codec}", compress(codec, body))
    plain_result, plain_rows = read(root, "2022-04-29", tmp_path / "plain.parquet")
    result, rows = read(root, "2022-04-30", tmp_path / "packed.parquet")
    assert plain_rows and {r[0] for r in plain_rows} == {str(plain)}
    # _file is the landed compressed file; _line, _error, _raw and the values are the plain file's
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
    "name",
    [
        "PART-0.CSV.GZ",
        "part-0.Csv.Gz",
        "part-0.JSONL.GZ",
        "a[b]*?.csv.gz",
        "PART-0.CSV.BZ2",
        "part-0.Jsonl.Bz2",
        "a[b]*?.json.bz2",
        "PART-0.CSV.ZST",
        "part-0.NDJSON.Zst",
        "a[b]*?.csv.zst",
        "PART-0.CSV.ZIP",
        "a[b]*?.jsonl.zip",
    ],
)
def test_an_upper_case_or_pattern_compressed_name_is_read(tmp_path, name):
    # (pattern characters: the decompressed copy is named by its number, read as itself)
    root = tmp_path / "landing"
    body = CSV_BODIES["clean"] if ".csv" in name.lower() else JSON_BODIES["clean"]
    path = land(root, "2022-04-29", name, compress(Path(name.lower()).suffix, body))
    result, rows = read(root, "2022-04-29", tmp_path / "out.parquet")
    assert (result["files"], result["rows"], result["malformed"]) == (1, 2, 0)
    assert [(r[0], r[1], r[5]) for r in rows][0] == (str(path), 1 + (".csv." in name.lower()), "e1")


def test_a_zip_archives_hidden_members_are_not_counted(tmp_path):
    # macOS's Compress puts the file's metadata beside it (__MACOSX/._part-0.csv, and a
    # .DS_Store when a folder is zipped): such an archive failed as "a zip archive of 3 files"
    root = tmp_path / "landing"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("part-0/part-0.csv", CSV_BODIES["clean"])
        archive.writestr("part-0/.DS_Store", b"\0\0\0\1Bud1")
        archive.writestr("__MACOSX/part-0/._part-0.csv", b"\0\5\26\7\0\2\0\0Mac OS X")
    path = land(root, "2022-04-29", "part-0.csv.zip", buffer.getvalue())
    result, rows = read(root, "2022-04-29", tmp_path / "out.parquet")
    assert (result["files"], result["rows"], result["malformed"]) == (1, 2, 0)
    assert {r[0] for r in rows} == {str(path)}


@STREAMED_CODEC
def test_every_member_stream_or_frame_of_a_concatenated_file_is_read(tmp_path, codec):
    # gzip members, bzip2 streams, zstd frames (an exporter appending, `cat a.gz b.gz`, pbzip2,
    # a zstd writer's flushes): one text, lines counted on
    root = tmp_path / "landing"
    first, second = f"{HEADER}\n2022-04-29,e1,p,s1,0,1\n2022-04", "-29,e2,p,s2,0,1\nbad,row\n"
    parts = [compress(codec, first), compress(codec, ""), compress(codec, second)]
    land(root, "2022-04-29", f"a.csv{codec}", b"".join(parts))
    result, rows = read(root, "2022-04-29", tmp_path / "out.parquet")
    assert [(r[1], r[2], r[3]) for r in rows] == [
        (2, None, "2022-04-29,e1,p,s1,0,1"),
        (3, None, "2022-04-29,e2,p,s2,0,1"),
        (4, "malformed CSV row: too few columns (expected 6, found 2)", "bad,row"),
    ]


def many_rows(n: int) -> str:
    """A CSV text of ``n`` rows that compresses little: a zstd frame of it spans many of the
    decompressor's inputs (landing.ZSTD_INPUT_CHUNK)."""
    rng = random.Random(7)
    rows = [f"2022-04-29,e{rng.getrandbits(64):x},p,s{i},0,1" for i in range(n)]
    return f"{HEADER}\n" + "\n".join(rows) + "\n"


def test_a_multi_frame_zstd_file_is_read_whole(tmp_path):
    # As a streaming writer (Kafka Connect, Spark) writes it: a frame per flush, each without
    # its size, none ending on a line; a skippable frame first (metadata some writers add).
    # zstandard's stream_reader stops at the first frame's end unless told to read across.
    text = many_rows(3000)
    buffer = io.BytesIO()
    writer = zstandard.ZstdCompressor().stream_writer(buffer, closefd=False)
    for start in range(0, len(text), 20_000):
        writer.write(text[start : start + 20_000].encode())
        writer.flush(zstandard.FLUSH_FRAME)
    writer.close()
    skippable = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"meta"
    data = skippable + buffer.getvalue()
    frames = len(text) // 20_000 + 1
    assert data.count(b"\x28\xb5\x2f\xfd") >= frames > 3 and len(data) > 8 * 4096
    root = tmp_path / "landing"
    land(root, "2022-04-29", "a.csv", text.encode())
    packed = land(root, "2022-04-30", "a.csv.zst", data)
    plain = read(root, "2022-04-29", tmp_path / "plain.parquet")[1]
    result, rows = read(root, "2022-04-30", tmp_path / "packed.parquet")
    assert result["rows"] == 3000 and result["malformed"] == 0
    assert [r[1:] for r in rows] == [r[1:] for r in plain] and rows[-1][0] == str(packed)
    # cut short inside its last frame (zstandard's stream_reader read it as far as it went)
    packed.write_bytes(data[:-3])
    with pytest.raises(LandingError, match=r"a.csv.zst: cannot be read \(truncated zstd\)$"):
        read(root, "2022-04-30", tmp_path / "packed.parquet")


def test_xz_stream_padding_between_and_after_streams_is_skipped(tmp_path, monkeypatch):
    # The xz format allows null bytes in fours between and after streams (xz -d reads them).
    # lzma.decompress stopped at the padding and dropped the rows of every stream after it.
    text = many_rows(40)
    half = len(text) // 2
    data = lzma.compress(text[:half].encode()) + b"\0" * 8 + lzma.compress(text[half:].encode())
    root = tmp_path / "landing"
    land(root, "2022-04-29", "a.csv", text.encode())
    land(root, "2022-04-30", "a.csv.xz", data + b"\0" * 4)
    plain = read(root, "2022-04-29", tmp_path / "plain.parquet")[1]
    rows = read(root, "2022-04-30", tmp_path / "packed.parquet")[1]
    assert len(rows) == 40 and [r[1:] for r in rows] == [r[1:] for r in plain]
    monkeypatch.setattr(landing, "DECOMPRESS_CHUNK", 3)  # padding split across reads
    rows = read(root, "2022-04-30", tmp_path / "packed.parquet")[1]
    assert [r[1:] for r in rows] == [r[1:] for r in plain]


@STREAMED_CODEC
def test_a_file_decompressed_a_few_bytes_at_a_time_reads_the_same(tmp_path, monkeypatch, codec):
    # The chunks' bounds (a chunk ending inside a member, a stream, a frame, or between them)
    # change nothing: every codec's reader, with chunks of a few bytes.
    text = many_rows(40)
    root = tmp_path / "landing"
    land(root, "2022-04-29", "a.csv", text.encode())
    half = len(text) // 2
    land(
        root,
        "2022-04-30",
        f"a.csv{codec}",
        compress(codec, text[:half]) + compress(codec, text[half:]),
    )
    plain = read(root, "2022-04-29", tmp_path / "plain.parquet")[1]
    monkeypatch.setattr(landing, "DECOMPRESS_CHUNK", 7)
    monkeypatch.setattr(landing, "ZSTD_INPUT_CHUNK", 5)
    rows = read(root, "2022-04-30", tmp_path / "packed.parquet")[1]
    assert len(rows) == 40 and [r[1:] for r in rows] == [r[1:] for r in plain]


SECRET = "ann.secret@example.com"
SECRET_TEXT = f"{HEADER}\n2022-04-29,{SECRET},p,s1,0,1\n"
GOOD = {codec: compress(codec, SECRET_TEXT * 50) for codec in COMPRESS}


def xz_check_at(data: bytes) -> int:
    """Where an xz stream of one block keeps its CRC64 of the text: just before the index,
    whose size the stream's 12-byte footer gives."""
    index_size = (int.from_bytes(data[-8:-4], "little") + 1) * 4
    return -(12 + index_size + 8)


# where a codec keeps its check of the text: gzip's CRC-32, bzip2's stream CRC, zstd's checksum,
# xz's CRC64
CHECK_AT = {".gz": -8, ".bz2": -2, ".zst": -4, ".xz": xz_check_at(GOOD[".xz"])}


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


BAD_FILES = [
    pytest.param(codec, data, kind.format(NAMES[codec]), id=f"{codec[1:]}-{case}")
    for codec, good in GOOD.items()
    if codec in STREAMED
    for case, data, kind in [
        ("plain-text", SECRET_TEXT.encode(), NOT_A[codec]),
        ("half", good[: len(good) // 2], "truncated {}"),
        # gzip's length, bzip2's stream CRC, zstd's checksum cut off
        ("no-end", good[:-4], "truncated {}"),
        ("broken", good[:20] + b"\xff" * 8 + good[28:], "corrupt {}"),
        ("bad-check", flipped(good, CHECK_AT[codec]), "corrupt {}"),
        ("trailing", good + SECRET.encode(), "corrupt {}"),  # text after its last member
    ]
] + [
    # less than the codec's magic bytes: gzip reads them whole first, the others a byte at a time
    pytest.param(".gz", b"\x1f", "not a gzip file", id="gz-one-byte"),
    pytest.param(".bz2", b"B", "truncated bzip2", id="bz2-one-byte"),
    pytest.param(".zst", b"\x28", "truncated zstd", id="zst-one-byte"),
    pytest.param(".xz", b"\xfd", "truncated xz", id="xz-one-byte"),
    # stream padding is null bytes in fours: three are not, nor is padding before the stream
    pytest.param(".xz", GOOD[".xz"] + b"\0" * 3, "corrupt xz", id="xz-bad-padding"),
    pytest.param(".xz", b"\0" * 4 + GOOD[".xz"], "not an xz file", id="xz-padding-first"),
    # fewer bytes than a stream's header: not a stream cut short (the decompressor waited)
    pytest.param(".xz", GOOD[".xz"] + b"\n", "corrupt xz", id="xz-trailing-newline"),
    pytest.param(".xz", b"\n", "not an xz file", id="xz-one-other-byte"),
]
# A zip archive is read through its central directory, at its end: one cut short has none.
GOOD_ZIP = GOOD[".zip"]
CENTRAL = GOOD_ZIP.rindex(b"PK\x01\x02")  # the member's entry there (its CRC-32 at +16)
BAD_FILES += [
    pytest.param(".zip", data, kind, id=f"zip-{case}")
    for case, data, kind in [
        ("plain-text", SECRET_TEXT.encode(), "not a zip file"),
        ("one-byte", b"P", "not a zip file"),
        ("half", GOOD_ZIP[: len(GOOD_ZIP) // 2], "corrupt zip"),
        ("no-end", GOOD_ZIP[:-4], "corrupt zip"),
        ("broken", GOOD_ZIP[:40] + b"\xff" * 8 + GOOD_ZIP[48:], "corrupt zip"),
        ("bad-check", flipped(GOOD_ZIP, CENTRAL + 16), "corrupt zip"),
        ("trailing", GOOD_ZIP + SECRET.encode(), "bytes after the end of the zip archive"),
        (
            "two-files",
            zip_compress(SECRET_TEXT.encode(), ("a.csv", "b.csv")),
            "a zip archive of 2 files: it must hold exactly one (names starting with _ or . not "
            "counted)",
        ),
        (
            "no-file",
            zip_compress(b"", ()),
            "a zip archive of 0 files: it must hold exactly one (names starting with _ or . not "
            "counted)",
        ),
    ]
]


@pytest.mark.parametrize(("codec", "data", "kind"), BAD_FILES)
def test_a_corrupt_or_truncated_file_fails_naming_the_file_and_the_kind(
    tmp_path, codec, data, kind
):
    root = tmp_path / "landing"
    path = land(root, "2022-04-29", f"part-0.csv{codec}", data)
    out = tmp_path / "extract" / "out.parquet"
    with pytest.raises(LandingError) as err:
        read(root, "2022-04-29", out)
    assert str(err.value) == f"{path}: cannot be read ({kind})"
    # never a value (gzip's message quotes the file's first bytes), and no scratch copy left
    assert "secret" not in logged(err.value) and "b'" not in logged(err.value)
    assert not any(p.name != "out.parquet" for p in out.parent.iterdir())


@pytest.mark.parametrize(
    ("named", "holding"),
    [(n, h) for n in COMPRESS for h in COMPRESS if n != h],
    ids=[f"{n[1:]}-holding-{h[1:]}" for n in COMPRESS for h in COMPRESS if n != h],
)
def test_a_file_compressed_with_another_codec_than_its_name_says_is_told_its_name(
    tmp_path, named, holding
):
    root = tmp_path / "landing"
    path = land(root, "2022-04-29", f"part-0.csv{named}", GOOD[holding])
    with pytest.raises(LandingError) as err:
        read(root, "2022-04-29", tmp_path / "out.parquet")
    assert str(err.value) == (
        f"{path}: cannot be read ({NOT_A[named]}: it starts with {NAMES[holding]}'s "
        f"magic bytes, name it part-0.csv{holding})"
    )


@CODEC
@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_a_compressed_file_under_a_plain_name_is_told_its_name(tmp_path, codec, suffix):
    # it was "line 1 is not UTF-8 text", pointing nowhere useful
    root = tmp_path / "landing"
    body = SECRET_TEXT if suffix == ".csv" else JSON_BODIES["clean"]
    path = land(root, "2022-04-29", f"part-0{suffix}", compress(codec, body * 50))
    with pytest.raises(LandingError) as err:
        read(root, "2022-04-29", tmp_path / "out.parquet")
    name = NAMES[codec]
    assert str(err.value) == (
        f"{path}: {name}-compressed (it starts with {name}'s magic bytes): name it "
        f"part-0{suffix}{codec} to have it read, or land it decompressed"
    )
    assert "secret" not in logged(err.value)


def test_a_text_starting_as_bzip2_does_is_read_as_text(tmp_path):
    # "BZh9" alone is not bzip2's magic: a column may be named so (read in Python: the line
    # endings are mixed)
    root = tmp_path / "landing"
    land(root, "2022-04-29", "a.csv", f"BZh9,{HEADER}\r\nx,2022-04-29,e1,p,s1,0,1\n".encode())
    result, rows = read(root, "2022-04-29", tmp_path / "out.parquet")
    assert (result["rows"], result["malformed"], rows[0][5]) == (1, 0, "e1")


@CODEC
@pytest.mark.parametrize("suffix", [".csv", ".json"])
@pytest.mark.parametrize("empty", ["zero-bytes", "empty-text"])
def test_an_empty_compressed_file_is_read_as_an_empty_plain_file(tmp_path, codec, suffix, empty):
    root = tmp_path / "landing"
    land(root, "2022-04-29", f"a{suffix}", b"")
    data = b"" if empty == "zero-bytes" else compress(codec, "")
    packed = land(root, "2022-04-30", f"a{suffix}{codec}", data)
    try:
        expected = read(root, "2022-04-29", tmp_path / "plain.parquet")[0]
    except LandingError as exc:  # a CSV without its header
        with pytest.raises(LandingError) as err:
            read(root, "2022-04-30", tmp_path / "packed.parquet")
        assert str(err.value) == str(exc).replace(
            f"{root}/interactions/date=2022-04-29/a{suffix}", str(packed)
        )
        return
    result = read(root, "2022-04-30", tmp_path / "packed.parquet")[0]
    assert (result["files"], result["rows"]) == (expected["files"], expected["rows"]) == (1, 0)


@CODEC
def test_a_dangling_link_to_a_compressed_file_fails_naming_it(tmp_path, codec):
    folder = tmp_path / "landing" / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    (folder / f"gone.csv{codec}").symlink_to(tmp_path / f"nowhere.csv{codec}")
    with pytest.raises(LandingError) as err:
        read(tmp_path / "landing", "2022-04-29", tmp_path / "out.parquet")
    assert str(err.value) == (
        f"{folder / f'gone.csv{codec}'}: cannot be read (No such file or directory)"
    )


@pytest.mark.parametrize(
    ("outer", "inner"),
    [(o, i) for o in COMPRESS for i in COMPRESS],
    ids=[f"{i[1:]}-then-{o[1:]}" for o in COMPRESS for i in COMPRESS],
)
def test_a_file_compressed_twice_says_so(tmp_path, outer, inner):
    root = tmp_path / "landing"
    data = compress(outer, compress(inner, SECRET_TEXT * 50))
    path = land(root, "2022-04-29", f"a.csv{outer}", data)
    with pytest.raises(LandingError) as err:
        read(root, "2022-04-29", tmp_path / "out.parquet")
    twice = (
        f"{NAMES[inner]}-compressed twice (decompressed, it starts with {NAMES[inner]}'s magic "
        "bytes again)"
        if outer == inner
        else f"{NAMES[inner]}-compressed, then {NAMES[outer]}-compressed (decompressed, it "
        f"starts with {NAMES[inner]}'s magic bytes)"
    )
    assert str(err.value) == f"{path}: {twice}: land it compressed once"


def test_a_zstd_window_over_the_decompressors_limit_says_so(tmp_path):
    # zstd --long=28 and over: the decompressor refuses to hold its window (zstd's own needs
    # --memory), and "corrupt zstd" would send someone looking for damage
    buffer = io.BytesIO()
    params = zstandard.ZstdCompressionParameters(window_log=28)
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(
        buffer, closefd=False
    ) as writer:
        writer.write(SECRET_TEXT.encode())
    root = tmp_path / "landing"
    path = land(root, "2022-04-29", "a.csv.zst", buffer.getvalue())
    with pytest.raises(LandingError) as err:
        read(root, "2022-04-29", tmp_path / "out.parquet")
    assert str(err.value) == (
        f"{path}: cannot be read (a zstd window over 128 MiB, as zstd --long=28 or more "
        "writes: compress it with a smaller window)"
    )


def test_an_xz_dictionary_over_the_decompressors_limit_says_so(tmp_path):
    # xz --lzma2=dict=256MiB: the decompressor would hold 256 MiB (a hostile file, 1.5 GiB);
    # xz -9's 64 MiB is within the limit
    filters = [{"id": lzma.FILTER_LZMA2, "dict_size": 256 * 1024 * 1024}]
    root = tmp_path / "landing"
    land(root, "2022-04-28", "a.csv.xz", lzma.compress(SECRET_TEXT.encode(), preset=9))
    assert read(root, "2022-04-28", tmp_path / "out.parquet")[0]["rows"] == 1
    path = land(
        root, "2022-04-29", "a.csv.xz", lzma.compress(SECRET_TEXT.encode(), filters=filters)
    )
    with pytest.raises(LandingError) as err:
        read(root, "2022-04-29", tmp_path / "out.parquet")
    assert str(err.value) == (
        f"{path}: cannot be read (an xz file that needs over 128 MiB of memory to decompress: "
        "compress it with xz -9 or a lower preset)"
    )


def test_the_decompressed_copy_is_removed_once_read(tmp_path, monkeypatch):
    root = tmp_path / "landing"
    for name, codec in (("a.csv.gz", ".gz"), ("b.csv.bz2", ".bz2"), ("bb.csv.zst", ".zst")):
        land(root, "2022-04-29", name, compress(codec, CSV_BODIES["clean"]))
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
    assert result["rows"] == 8
    # one decompressed copy at a time, named by the file's number and inner suffix
    assert seen == [
        ("a.csv.gz", "00000.csv", ["00000.csv"]),
        ("b.csv.bz2", "00001.csv", ["00001.csv"]),
        ("bb.csv.zst", "00002.csv", ["00002.csv"]),
        ("c.csv", "c.csv", []),
    ]
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.parquet"]
    # and on failure: a file after it that cannot be read
    land(root, "2022-04-29", "d.csv.zst", compress(".zst", "no,header\n"))
    with pytest.raises(LandingError, match="d.csv.zst: missing required column"):
        extract("interactions", "2022-04-29", str(root), out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.parquet"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@CODEC
def test_a_full_disk_while_decompressing_says_so_naming_the_scratch_folder(tmp_path, codec):
    root = tmp_path / "landing"
    land(root, "2022-04-29", f"a.csv{codec}", GOOD[codec])
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


@CODEC
def test_a_compressed_file_counts_wherever_a_data_file_does(tmp_path, codec):
    root = tmp_path / "landing"
    folder = root / "interactions" / "date=2022-04-29"
    folder.mkdir(parents=True)
    gap = partition_gap(str(root), SOURCES["interactions"], "2022-04-29", None)
    assert gap == f"{folder}: no data file in it yet"
    land(root, "2022-04-29", f"part-0.json{codec}", compress(codec, JSON_BODIES["clean"]))
    assert partition_gap(str(root), SOURCES["interactions"], "2022-04-29", None) is None
    # one lying where no run reads it is named as a plain one is
    (root / f"stray.csv{codec}").write_bytes(GOOD[codec])
    assert unread_root_entries(str(root), None)[1] == [
        f"stray.csv{codec} (a source's files belong in <source>/date=YYYY-MM-DD/)"
    ]
    (root / "interactions" / f"beside.ndjson{codec}").write_bytes(GOOD[codec])
    with pytest.raises(LandingError, match=rf"1 entry no run reads: beside.ndjson{codec} \("):
        extract("interactions", "2022-04-29", str(root), tmp_path / "out.parquet")


@pytest.mark.services
@CODEC
def test_an_s3_compressed_file_is_read_under_its_key(aws_conn, moto_server, tmp_path, codec):
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket = f"landing-{codec[1:]}"
    s3.create_bucket(Bucket=bucket)
    partition = "l/interactions/date=2022-04-29"
    csv_body, json_body = CSV_BODIES["malformed"], JSON_BODIES["mixed"]
    keys = (f"a.csv{codec}", f"b.JSON{codec.upper()}")
    s3.put_object(Bucket=bucket, Key=f"{partition}/{keys[0]}", Body=compress(codec, csv_body))
    s3.put_object(Bucket=bucket, Key=f"{partition}/{keys[1]}", Body=compress(codec, json_body))
    root = f"s3://{bucket}/l"
    out = tmp_path / "extract" / "out.parquet"
    result = extract("interactions", "2022-04-29", root, out, conn_id=aws_conn)
    rows = staged(out)

    local = tmp_path / "landing"
    land(local, "2022-04-29", "a.csv", csv_body.encode())
    land(local, "2022-04-29", "b.json", json_body.encode())
    plain = staged(
        extract("interactions", "2022-04-29", str(local), tmp_path / "p.parquet")["path"]
    )
    names = [f"s3://{bucket}/{partition}/{n}" for n in keys]
    assert sorted({r[0] for r in rows}) == names
    assert [r[1:] for r in rows] == [r[1:] for r in plain]
    # the compressed objects' ETags, as the partition lists them
    versions = partition_versions(root, SOURCES["interactions"], "2022-04-29", aws_conn)
    assert result["versions"] == versions and sorted(versions) == names
    head = s3.head_object(Bucket=bucket, Key=f"{partition}/{keys[0]}")
    assert versions[names[0]] == head["ETag"].strip('"')
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.parquet"]


@CODEC
def test_erasure_requests_are_read_compressed_too(tmp_path, codec):
    # the erasure DAG's read_requests stages them through the same extract
    root = tmp_path / "landing"
    folder = root / "erasure_requests"
    folder.mkdir(parents=True)
    header = ",".join(SOURCES["erasure_requests"].columns)
    body = f"{header}\nr1,email,ann@example.com,2022-04-29T10:00:00Z,erase\n"
    (folder / f"requests.csv{codec}").write_bytes(compress(codec, body))
    result = extract("erasure_requests", "2022-04-29", str(root), tmp_path / "out.parquet")
    assert (result["files"], result["rows"], result["malformed"]) == (1, 1, 0)
    assert staged(tmp_path / "out.parquet")[0][:2] == (str(folder / f"requests.csv{codec}"), 2)
