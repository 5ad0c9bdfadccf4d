"""drop_erasure.py through LocalSink: erased rows leave every partition, nothing else changes."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from audience_profiles.config import DestinationConfig, PipelineConfig
from audience_profiles.destinations.base import ErasureRequest, RunInfo
from audience_profiles.destinations.drop import MANIFEST, LocalSink, write_partition
from audience_profiles.destinations.drop_erasure import (
    ERASING_MANIFEST,
    erase_drops,
    filter_file,
    load_subjects,
)
from audience_profiles.destinations.local import LocalDestination
from audience_profiles.privacy import hash_identifier
from tests.destinations.drop_checks import (
    AUDIT,
    AUDIT_ROWS,
    IDENTIFIERS,
    QUARANTINE,
    QUARANTINE_ROWS,
    check_partition,
    read_part,
    write_profiles,
    write_table,
)
from tests.destinations.test_drop import RecordingSink

TABLE = "audience_profiles"
DAYS = [RunInfo(ds=f"2024-05-0{d}", run_id=f"scheduled__2024-05-0{d}") for d in (1, 2, 3)]
# Profile 5 is erased by id, profile 7 only by its email (upper-cased in the export).
ERASED = {"a-0000005", "a-0000007"}


def destination(root: Path, tables=(TABLE,), **changes) -> LocalDestination:
    config = DestinationConfig(
        name="drop_test", kind="local", tables=tables, options={"path": str(root)}
    )
    config = dataclasses.replace(config, **changes)
    pipeline = PipelineConfig(
        source_file="<test>",
        start_date=None,
        landing_root="",
        landing_conn_id=None,
        work_dir="",
        warehouse=None,
        identity_config="",
        segments_config="",
        destinations=(config,),
    )
    return LocalDestination(config, pipeline)


def request_for(export: Path) -> ErasureRequest:
    email = (
        pq.read_table(export, filters=[("profile_id", "=", "a-0000007")]).column("email")[0].as_py()
    )
    return ErasureRequest(
        request_id="r1",
        requested_at="2024-05-04 10:00:00",
        profile_ids=("a-0000005",),
        identifiers=(("email", email.strip().lower()), ("session_id", "not-in-this-table")),
    )


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def check_day(sink: LocalSink, run: RunInfo, rows: int) -> tuple[dict, dict]:
    partition = f"{TABLE}/dt={run.ds}"
    return check_partition(
        sink.list(partition + "/"),
        lambda key: (sink.root / key).read_bytes(),
        partition,
        run_id=run.run_id,
        expected_rows=rows,
    )


def test_erased_rows_leave_every_partition_and_format_and_nothing_else_changes(tmp_path):
    root = tmp_path / "out"
    dest = destination(
        root,
        formats=("csv", "json", "parquet"),
        compression="gzip",
        options={"path": str(root), "max_file_mb": 0.004},
    )
    export = write_profiles(tmp_path / "export.parquet", 60)
    untouched = write_profiles(tmp_path / "other.parquet", 20, tag="b")
    for run in DAYS[:2]:
        write_partition(LocalSink(root), "", TABLE, str(export), dest.config, run)
    write_partition(LocalSink(root), "", TABLE, str(untouched), dest.config, DAYS[2])
    before = snapshot(root)
    _, before_rows = check_day(LocalSink(root), DAYS[0], 60)

    holding = {
        key
        for key, data in before.items()
        if not key.endswith(MANIFEST) and ERASED & {r["profile_id"] for r in read_part(key, data)}
    }

    statuses = dest.erase([request_for(export)])

    # 2 people x 3 formats x 2 days.
    detail = f"12 row(s) removed from {len(holding)} file(s) in 2 partition(s)"
    assert statuses == {"r1": {"status": "done", "detail": detail}}
    after = snapshot(root)
    for run in DAYS[:2]:
        manifest, rows = check_day(LocalSink(root), run, 58)
        assert manifest["erasure_requests"] == ["r1"]
        for fmt, kept in rows.items():
            assert [r["profile_id"] for r in kept] == [
                r["profile_id"] for r in before_rows[fmt] if r["profile_id"] not in ERASED
            ], fmt
    # Only the parts that held an erased row changed (and their manifests); the other parts, and
    # the whole partition of another day, are byte for byte what they were.
    changed = {k for k in before if before[k] != after.get(k)}
    assert {k for k in changed if not k.endswith(MANIFEST)} == holding
    assert len(holding) < len([k for k in before if DAYS[0].ds in k or DAYS[1].ds in k]) - 2
    assert not any(DAYS[2].ds in k for k in changed)


def test_manifest_is_withdrawn_before_parts_change_and_written_last(tmp_path):
    root = tmp_path / "out"
    dest = destination(root, formats=("csv",))
    export = write_profiles(tmp_path / "export.parquet", 10)
    write_partition(LocalSink(root), "", TABLE, str(export), dest.config, DAYS[0])
    sink = RecordingSink(root)

    erase_drops(dest, sink, "", [request_for(export)])

    partition = f"{TABLE}/dt={DAYS[0].ds}"
    saved = f"{partition}/{ERASING_MANIFEST}"
    assert sink.calls == [
        ("put", (saved,)),
        ("delete", (f"{partition}/{MANIFEST}",)),
        ("put", (f"{partition}/part-00000.csv",)),
        ("put", (f"{partition}/{MANIFEST}",)),
        ("delete", (saved,)),
    ]
    # A second pass finds nothing and touches nothing.
    sink.calls.clear()
    assert erase_drops(dest, sink, "", [request_for(export)])["r1"]["detail"].startswith("0 row")
    assert sink.calls == []


def _write_day(root: Path, dest: LocalDestination, exports: dict[str, Path]) -> None:
    for table, path in exports.items():
        write_partition(LocalSink(root), "", table, str(path), dest.config, DAYS[0])


def _rows(root: Path, table: str, count: int) -> dict[str, list[dict]]:
    """Per format, the rows of ``table``'s day-1 partition (checked against its manifest)."""
    partition = f"{table}/dt={DAYS[0].ds}"
    return check_partition(
        LocalSink(root).list(partition + "/"),
        lambda key: (root / key).read_bytes(),
        partition,
        run_id=DAYS[0].run_id,
        expected_rows=count,
    )[1]


# Only identifiers, no profile id: hashed emails and the escaped session must still match.
FAN = ErasureRequest("r1", "2024-05-04", (), (("email", "fan@example.com"), ("session_id", "-s1")))


def test_hashed_and_escaped_identifiers_are_found(tmp_path):
    root = tmp_path / "out"
    tables = ("profile_identifiers", "identity_link_audit", "quarantine", TABLE)
    dest = destination(root, tables=tables, formats=("csv", "json"), pii="hashed")
    identifiers = write_table(
        tmp_path / "ids.parquet",
        [
            {"identifier_type": "email", "identifier_value": "fan@example.com", "profile_id": "p1"},
            {"identifier_type": "session_id", "identifier_value": "-s1", "profile_id": "p1"},
            {"identifier_type": "session_id", "identifier_value": "s2", "profile_id": "p2"},
            {
                "identifier_type": "email",
                "identifier_value": "keep@example.com",
                "profile_id": "p2",
            },
        ],
        IDENTIFIERS,
    )
    profiles = write_profiles(
        tmp_path / "profiles.parquet",
        0,
        extra=[
            {"profile_id": "p9", "email": "fan@example.com"},
            {"profile_id": "p2", "email": "keep@example.com"},
        ],
    )
    _write_day(
        root,
        dest,
        {
            "profile_identifiers": identifiers,
            "identity_link_audit": write_table(tmp_path / "audit.parquet", AUDIT_ROWS, AUDIT),
            "quarantine": write_table(tmp_path / "q.parquet", QUARANTINE_ROWS, QUARANTINE),
            TABLE: profiles,
        },
    )

    dest.erase([FAN])

    ids = _rows(root, "profile_identifiers", 2)
    assert [(r["identifier_type"], r["identifier_value"]) for r in ids["json"]] == [
        ("session_id", "s2"),
        ("email_sha256", hash_identifier("keep@example.com")),
    ]
    # The audit's emails are hashes here: the first row goes by its hash (and by the session).
    audit = _rows(root, "identity_link_audit", 2)
    assert [r["right_value"] for r in audit["json"]] == [
        hash_identifier("keep@example.com"),
        "sso-9",
    ]
    # A hashed drop carries no raw line: nothing in the quarantine names anyone, so it stays.
    quarantine = _rows(root, "quarantine", 3)
    assert [r["raw"] for r in quarantine["json"]] == [None, None, None]
    assert [r["profile_id"] for r in _rows(root, TABLE, 1)["csv"]] == ["p2"]
    assert json.loads((root / f"{TABLE}/dt={DAYS[0].ds}/{MANIFEST}").read_text())["pii"] == "hashed"


def test_plain_quarantined_lines_match_on_whole_words(tmp_path):
    root = tmp_path / "out"
    tables = ("quarantine", "identity_link_audit")
    dest = destination(root, tables=tables, formats=("csv", "json"))
    _write_day(
        root,
        dest,
        {
            "quarantine": write_table(tmp_path / "q.parquet", QUARANTINE_ROWS, QUARANTINE),
            "identity_link_audit": write_table(tmp_path / "audit.parquet", AUDIT_ROWS, AUDIT),
        },
    )

    dest.erase([FAN])

    # The address in any case, the session inside a JSON line; not an address containing it.
    for rows in _rows(root, "quarantine", 1).values():
        assert [r["raw"] for r in rows] == ["2024-05-01T10:00:00,Other,xfan@example.com,Maybe"]
    for rows in _rows(root, "identity_link_audit", 2).values():
        assert [r["right_value"] for r in rows] == ["keep@example.com", "sso-9"]


class FailingSink(LocalSink):
    """LocalSink whose ``fail_at``-th part upload fails, as a dropped connection would."""

    def __init__(self, root: Path, fail_at: int):
        super().__init__(root)
        self.fail_at = fail_at
        self.part_puts = 0

    def put(self, local_path: Path, key: str) -> None:
        if "/part-" in key:
            self.part_puts += 1
            if self.part_puts == self.fail_at:
                raise ConnectionError(f"lost the connection while writing {key}")
        super().put(local_path, key)


def _crashed_erasure(tmp_path: Path) -> tuple[Path, LocalDestination, Path, str]:
    """A day whose erasure failed on its second rewritten part (the first one is replaced)."""
    root = tmp_path / "out"
    dest = destination(
        root,
        formats=("csv", "json", "parquet"),
        compression="gzip",
        options={"path": str(root), "max_file_mb": 0.004},
    )
    export = write_profiles(tmp_path / "export.parquet", 60)
    write_partition(LocalSink(root), "", TABLE, str(export), dest.config, DAYS[0])
    partition = f"{TABLE}/dt={DAYS[0].ds}"
    before = snapshot(root)
    with pytest.raises(ConnectionError):
        erase_drops(dest, FailingSink(root, fail_at=2), "", [request_for(export)])
    keys = LocalSink(root).list(partition + "/")
    # The manifest is withdrawn and one part is already rewritten.
    assert f"{partition}/{MANIFEST}" not in keys
    assert len([k for k in keys if "/part-" in k and snapshot(root)[k] != before[k]]) == 1
    return root, dest, export, partition


def test_a_retry_after_a_failed_erasure_finishes_the_partition_and_its_manifest(tmp_path):
    root, dest, export, partition = _crashed_erasure(tmp_path)

    statuses = erase_drops(dest, LocalSink(root), "", [request_for(export)])

    assert statuses["r1"]["status"] == "done"
    # The manifest is back, names exactly the parts (the saved copy is gone) and vouches for each
    # one's rows, bytes and SHA-256, also for the part the failed attempt rewrote.
    manifest, rows = check_day(LocalSink(root), DAYS[0], 58)
    assert manifest["erasure_requests"] == ["r1"]
    for kept in rows.values():
        assert not ERASED & {r["profile_id"] for r in kept}
    # Nothing left to do: a further pass touches nothing.
    sink = RecordingSink(root)
    assert erase_drops(dest, sink, "", [request_for(export)])["r1"]["detail"].startswith("0 row")
    assert sink.calls == []


def test_a_delivery_after_a_failed_erasure_removes_the_saved_manifest(tmp_path):
    root, dest, export, partition = _crashed_erasure(tmp_path)
    assert (root / partition / ERASING_MANIFEST).exists()  # readers ignore it

    write_partition(LocalSink(root), "", TABLE, str(export), dest.config, DAYS[0])

    check_day(LocalSink(root), DAYS[0], 60)  # exactly the parts and the manifest


# Values a rewrite must keep as they were: NULL and "" differ in every format.
AWKWARD = ["", None, " lead", 'q"uote', "multi\nline", "cr\r\nlf", "NULL", "a,b", "=1+1"]


def test_kept_rows_keep_empty_strings_and_nulls_apart(tmp_path):
    root = tmp_path / "out"
    table = "profile_identifiers"
    dest = destination(root, tables=(table,), formats=("csv", "json", "parquet"))
    rows = [
        {"identifier_type": "external_id", "identifier_value": v, "profile_id": f"p{i}"}
        for i, v in enumerate(AWKWARD)
    ]
    gone = {"identifier_type": "external_id", "identifier_value": "x", "profile_id": "gone"}
    export = write_table(tmp_path / "ids.parquet", [*rows[:4], gone, *rows[4:]], IDENTIFIERS)
    _write_day(root, dest, {table: export})
    partition = root / table / f"dt={DAYS[0].ds}"
    csv_before = (partition / "part-00000.csv").read_bytes()

    dest.erase([ErasureRequest("r1", "2024-05-04", ("gone",), ())])

    # The CSV part is the original without the erased line, byte for byte ("" stays "").
    gone_line = b"external_id,x,gone\n"
    assert gone_line in csv_before
    assert (partition / "part-00000.csv").read_bytes() == csv_before.replace(gone_line, b"")
    parsed = _rows(root, table, len(AWKWARD))
    for fmt in ("json", "parquet"):
        assert [r["identifier_value"] for r in parsed[fmt]] == AWKWARD, fmt


def test_a_table_no_longer_dropped_is_erased_too(tmp_path):
    """Taken out of the destination's tables, audience_profiles keeps the partitions it dropped
    before: the erasure must still reach them."""
    root = tmp_path / "out"
    export = write_profiles(tmp_path / "export.parquet", 10)
    write_partition(LocalSink(root), "", TABLE, str(export), destination(root).config, DAYS[0])

    now = destination(root, tables=("profile_merges",))  # the drop's tables since
    statuses = now.erase([request_for(export)])

    assert statuses["r1"]["status"] == "done"
    _, rows = check_day(LocalSink(root), DAYS[0], 8)
    assert not ERASED & {r["profile_id"] for kept in rows.values() for r in kept}


def test_an_email_as_entered_is_found_whatever_white_space_pads_it(tmp_path):
    """A drop fed by an older export may hold an email as entered: it is matched trimmed of any
    white space (a tab, a line separator, a no-break space), as privacy.normalise_identifier trims."""
    part = tmp_path / "part-00000.csv"
    part.write_text(
        "profile_id,email\n"
        "p1,David.Wilson@Example.com\t\n"
        '"p2","\u2028david.wilson@example.com\u00a0"\n'
        "p3,ann@example.com\n",
        encoding="utf-8",
    )
    con = duckdb.connect()
    load_subjects(
        con,
        [ErasureRequest("r-1", "2024-05-04", (), (("email", "david.wilson@example.com"),))],
    )
    assert filter_file(con, part, "csv", False, tmp_path / "out.csv") == (1, 2)


def test_the_erasure_removes_a_part_s_temporary_copy_a_dead_write_left(tmp_path):
    """A delivery killed while it wrote a part (or out of disk before this fix) left
    ``.part-NNNNN.<ext>.<random>.tmp``: rows of people that no manifest names. The erasure,
    which holds the exports lock alone, must not pass over it: here the copy of a second part, whose own name the
    erasure never writes (rewriting ``part-00000.csv`` clears that part's copy on the way)."""
    root = tmp_path / "out"
    dest = destination(root, formats=("csv",))
    export = write_profiles(tmp_path / "export.parquet", 20)
    write_partition(LocalSink(root), "", TABLE, str(export), dest.config, DAYS[0])
    partition = root / TABLE / f"dt={DAYS[0].ds}"
    leftover = partition / ".part-00001.csv.0123456789ab.tmp"  # files.replace_file's name
    shutil.copyfile(partition / "part-00000.csv", leftover)
    assert {"a-0000005", "a-0000007"} <= {
        r["profile_id"] for r in read_part("part-00000.csv", leftover.read_bytes())
    }

    dest.erase([request_for(export)])

    assert not leftover.exists()
    assert sorted(p.name for p in partition.iterdir()) == [MANIFEST, "part-00000.csv"]


def test_the_erasure_removes_a_temporary_part_an_older_version_left(tmp_path):
    """Before files.replace_file took random hidden names, a killed write left ``<part>.tmp``
    (``part-00001.csv.tmp``); nothing writes that name any more, so only the erasure can take
    those rows out of a partition no delivery rewrites."""
    root = tmp_path / "out"
    dest = destination(root, formats=("csv",))
    export = write_profiles(tmp_path / "export.parquet", 20)
    write_partition(LocalSink(root), "", TABLE, str(export), dest.config, DAYS[0])
    partition = root / TABLE / f"dt={DAYS[0].ds}"
    leftover = partition / "part-00001.csv.tmp"
    shutil.copyfile(partition / "part-00000.csv", leftover)

    dest.erase([request_for(export)])

    assert not leftover.exists()
    assert sorted(p.name for p in partition.iterdir()) == [MANIFEST, "part-00000.csv"]


def test_a_quarantined_line_names_an_sso_id_or_session_in_its_own_case_only(tmp_path):
    """SSO ids and sessions are compared case and all (docs/identity.md): `SSO-9` is not the
    account `sso-9`, so erasing one keeps the other's lines; an email matches in any case."""
    root = tmp_path / "out"
    dest = destination(root, tables=("quarantine",), formats=("csv",))
    lines = ["x,S-1,sso-9,Maybe", "x,s-1,SSO-9,Maybe", "x,s-2,u-2,FAN@EXAMPLE.COM"]
    rows = [
        {"source": "identities", "file": "a.csv", "line": n, "reason": "r", "raw": raw}
        for n, raw in enumerate(lines, start=2)
    ]
    _write_day(root, dest, {"quarantine": write_table(tmp_path / "q.parquet", rows, QUARANTINE)})
    request = ErasureRequest(
        "r-9",
        "2024-05-04",
        (),
        (("external_id", "sso-9"), ("session_id", "S-1"), ("email", "fan@example.com")),
    )

    dest.erase([request])

    assert [r["raw"] for r in _rows(root, "quarantine", 1)["csv"]] == ["x,s-1,SSO-9,Maybe"]


def test_a_quarantined_json_line_names_an_identifier_its_writer_escaped(tmp_path):
    """A JSON writer escapes non-ASCII characters (upper- or lower-case hex, a surrogate pair)
    and may escape "/": the line's words are decoded before they are compared, and an email is
    lowered after decoding ("\\u00C9" lowered is still "É" encoded)."""
    root = tmp_path / "out"
    dest = destination(root, tables=("quarantine",), formats=("csv",))
    lines = [
        '{"email": "JOS\\u00C9@EXAMPLE.COM"}',
        '{"external_id": "caf\\u00e9\\/1"}',
        '{"session_id": "s-\\ud83d\\ude00"}',
        '{"external_id": "CAF\\u00C9\\/1"}',
    ]
    rows = [
        {"source": "identities", "file": "a.json", "line": n, "reason": "r", "raw": raw}
        for n, raw in enumerate(lines, start=1)
    ]
    _write_day(root, dest, {"quarantine": write_table(tmp_path / "q.parquet", rows, QUARANTINE)})
    identifiers = (("email", "josé@example.com"), ("external_id", "café/1"), ("session_id", "s-😀"))

    dest.erase([ErasureRequest("r-10", "2024-05-04", (), identifiers)])

    assert [r["raw"] for r in _rows(root, "quarantine", 1)["csv"]] == [lines[3]]
