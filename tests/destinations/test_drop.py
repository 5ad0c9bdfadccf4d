"""drop.py through LocalSink: layout, manifest, idempotent re-runs, crashes, PII, escaping, splitting."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from audience_profiles.config import ConfigError, DestinationConfig, parse_config
from audience_profiles.destinations import RunInfo, destination_for
from audience_profiles.destinations.drop import (
    DELIVERY_MEMORY_LIMIT,
    MANIFEST,
    QUICKSIGHT_MANIFEST,
    LocalSink,
    keep_days,
    prune_partitions,
    render_parts,
    scratch_duckdb,
    write_partition,
)
from audience_profiles.files import OutsideFolderError
from audience_profiles.privacy import hash_identifier
from tests.destinations.drop_checks import (
    AUDIT,
    AUDIT_ROWS,
    IDENTIFIER_ROWS,
    IDENTIFIERS,
    QUARANTINE,
    QUARANTINE_ROWS,
    check_partition,
    read_part,
    write_profiles,
    write_table,
)

TABLE = "audience_profiles"
RUN = RunInfo(ds="2024-05-01", run_id="scheduled__2024-05-01T00:00:00+00:00")
PARTITION = f"{TABLE}/dt={RUN.ds}"


class RecordingSink(LocalSink):
    """LocalSink that logs each call and can fail one put, as a dropped connection would."""

    def __init__(self, root: Path, fail_put: str | None = None):
        super().__init__(root)
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.fail_put = fail_put

    def put(self, local_path: Path, key: str) -> None:
        if self.fail_put and key.endswith(self.fail_put):
            raise ConnectionError(f"lost the connection while writing {key}")
        self.calls.append(("put", (key,)))
        super().put(local_path, key)

    def delete(self, keys: list[str]) -> None:
        self.calls.append(("delete", tuple(keys)))
        super().delete(keys)


def make_config(**changes) -> DestinationConfig:
    options = changes.pop("options", {})
    base = DestinationConfig(name="drop_test", kind="local", tables=(TABLE,), options=options)
    return dataclasses.replace(base, **changes)


def check(
    sink: LocalSink, expected_rows: int, run: RunInfo = RUN, partition: str = PARTITION, **kw
):
    return check_partition(
        sink.list(partition + "/"),
        lambda key: (sink.root / key).read_bytes(),
        partition,
        run_id=run.run_id,
        expected_rows=expected_rows,
        **kw,
    )


def test_every_format_lands_with_a_manifest_that_describes_it(tmp_path):
    export = write_profiles(tmp_path / "export.parquet", 40)
    sink = RecordingSink(tmp_path / "out")
    config = make_config(formats=("csv", "json", "parquet"))

    result = write_partition(sink, "", TABLE, str(export), config, RUN)

    manifest, rows = check(sink, 40)
    assert result.rows == 40
    assert result.manifest == manifest
    assert [f["key"].rsplit("/", 1)[1] for f in manifest["files"]] == [
        "part-00000.csv",
        "part-00000.json",
        "part-00000.parquet",
    ]
    assert {f["compression"] for f in manifest["files"]} == {"none"}
    assert manifest["manifest_version"] == 1
    assert manifest["table"] == TABLE and manifest["destination"] == "drop_test"
    assert manifest["schema"][:2] == [
        {"name": "profile_id", "type": "VARCHAR"},
        {"name": "email", "type": "VARCHAR"},
    ]
    assert rows["csv"][3]["profile_id"] == "a-0000003"
    assert rows["csv"][3]["optin_1"] == "false"
    assert rows["json"][3]["sessions"] == 4
    assert json.loads(rows["json"][3]["answers"]) == {"Favourite player": "Player 3", "Kit": "Home"}
    assert rows["parquet"][3]["email"] == rows["json"][3]["email"] == rows["csv"][3]["email"]
    # The manifest is the last write: a reader that sees it sees every part.
    assert sink.calls[-1] == ("put", (f"{PARTITION}/{MANIFEST}",))


def test_rerun_replaces_the_partition_exactly_and_leaves_other_dates_alone(tmp_path):
    sink = RecordingSink(tmp_path / "out")
    config = make_config(formats=("csv", "json"), options={"max_file_mb": 0.05})
    big = write_profiles(tmp_path / "big.parquet", 3000, tag="old")
    other_day = RunInfo(ds="2024-04-30", run_id="scheduled__2024-04-30T00:00:00+00:00")
    write_partition(sink, "", TABLE, str(big), config, other_day)
    other_before = {k: (sink.root / k).read_bytes() for k in sink.list(f"{TABLE}/dt=2024-04-30/")}
    write_partition(sink, "", TABLE, str(big), config, RUN)
    old_manifest, _ = check(sink, 3000)
    assert len(old_manifest["files"]) > 4

    small = write_profiles(tmp_path / "small.parquet", 700, tag="new")
    rerun = dataclasses.replace(RUN, run_id="manual__rerun")
    sink.calls.clear()
    write_partition(sink, "", TABLE, str(small), config, rerun)

    manifest, rows = check(sink, 700, run=rerun)
    assert len(manifest["files"]) < len(old_manifest["files"])
    for fmt in ("csv", "json"):
        assert [r["profile_id"] for r in rows[fmt]] == [f"new-{i:07d}" for i in range(700)]
    # Withdraw the manifest first, remove the stale parts, publish the new manifest last.
    assert sink.calls[0] == ("delete", (f"{PARTITION}/{MANIFEST}",))
    stale = {k for k in (f["key"] for f in old_manifest["files"])} - {
        f["key"] for f in manifest["files"]
    }
    assert ("delete", tuple(sorted(stale))) in sink.calls
    assert sink.calls[-1] == ("put", (f"{PARTITION}/{MANIFEST}",))
    after = {k: (sink.root / k).read_bytes() for k in sink.list(f"{TABLE}/dt=2024-04-30/")}
    assert after == other_before


def test_same_export_gives_the_same_parts(tmp_path):
    export = write_profiles(tmp_path / "export.parquet", 2000)
    config = make_config(formats=("csv", "parquet"), options={"max_file_mb": 0.05})
    first = write_partition(LocalSink(tmp_path / "one"), "", TABLE, str(export), config, RUN)
    second = write_partition(LocalSink(tmp_path / "two"), "", TABLE, str(export), config, RUN)

    def parts(manifest):
        return [(f["key"], f["rows"], f["sha256"]) for f in manifest["files"]]

    assert parts(first.manifest) == parts(second.manifest)


def test_crash_between_parts_never_leaves_a_manifest_that_lies(tmp_path):
    config = make_config(formats=("csv",), options={"max_file_mb": 0.05})
    root = tmp_path / "out"
    write_partition(
        LocalSink(root), "", TABLE, str(write_profiles(tmp_path / "v1.parquet", 3000)), config, RUN
    )
    v2 = write_profiles(tmp_path / "v2.parquet", 1500, tag="v2")

    crashing = RecordingSink(root, fail_put="part-00001.csv")
    with pytest.raises(ConnectionError):
        write_partition(crashing, "", TABLE, str(v2), config, RUN)
    assert not (root / PARTITION / MANIFEST).exists()
    assert ("put", (f"{PARTITION}/part-00000.csv",)) in crashing.calls

    # Airflow's retry: the same call again.
    write_partition(LocalSink(root), "", TABLE, str(v2), config, RUN)
    _, rows = check(LocalSink(root), 1500)
    assert [r["profile_id"] for r in rows["csv"]] == [f"v2-{i:07d}" for i in range(1500)]


def test_a_link_planted_at_a_part_s_temporary_name_is_replaced_not_written_through(tmp_path):
    """Whoever can write to a shared output folder could plant a link at ``<part>.tmp``; a run
    must not overwrite the link's target (a ~/.bashrc) with export content."""
    victim = tmp_path / "home" / ".bashrc"
    victim.parent.mkdir()
    victim.write_text("# original\n")
    root = tmp_path / "out"
    (root / PARTITION).mkdir(parents=True)
    (root / PARTITION / "part-00000.csv.tmp").symlink_to(victim)
    config = make_config(formats=("csv",))

    write_partition(
        LocalSink(root), "", TABLE, str(write_profiles(tmp_path / "p.parquet", 10)), config, RUN
    )

    assert victim.read_text() == "# original\n"
    part = root / PARTITION / "part-00000.csv"
    assert not part.is_symlink() and not part.with_name(part.name + ".tmp").exists()
    check(LocalSink(root), 10)


FORMULAS = ['=HYPERLINK("x")', "+1+2", "-3", "@SUM(A1)", "\tTab", "\rReturn"]
HARMLESS = ["a=b", "O'Brien", "", "plain", "'quoted"]


def test_csv_cells_that_start_a_formula_are_escaped(tmp_path):
    names = FORMULAS + HARMLESS
    export = write_profiles(
        tmp_path / "export.parquet",
        0,
        extra=[
            {"profile_id": f"p{i}", "first_name": n, "interactions": -i}
            for i, n in enumerate(names)
        ],
    )
    sink = LocalSink(tmp_path / "out")
    write_partition(sink, "", TABLE, str(export), make_config(formats=("csv", "json")), RUN)
    _, rows = check(sink, len(names))

    assert [r["first_name"] for r in rows["csv"]] == ["'" + f for f in FORMULAS] + HARMLESS
    # Numbers are numbers in a spreadsheet, never formulas.
    assert [r["interactions"] for r in rows["csv"]] == [str(-i) for i in range(len(names))]
    # Only CSV is opened by spreadsheets: JSON keeps the data as it is.
    assert [r["first_name"] for r in rows["json"]] == names

    unescaped = LocalSink(tmp_path / "raw")
    config = make_config(formats=("csv",), csv_injection_escape=False)
    write_partition(unescaped, "", TABLE, str(export), config, RUN)
    _, rows = check(unescaped, len(names))
    assert [r["first_name"] for r in rows["csv"]] == names


EMAILS = [" Fan@Example.COM ", "\tfan@example.com\n", "UPPER@EXAMPLE.ORG", "", None, "İnfo@x.com"]


def test_hashed_pii_is_privacy_hash_identifier_and_drops_names(tmp_path):
    extra = [
        {"profile_id": f"p{i}", "email": e, "first_name": "=Ann"} for i, e in enumerate(EMAILS)
    ]
    export = write_profiles(tmp_path / "export.parquet", 0, extra=extra)
    sink = LocalSink(tmp_path / "out")
    config = make_config(formats=("csv", "parquet"), pii="hashed")
    write_partition(sink, "", TABLE, str(export), config, RUN)

    manifest, rows = check(sink, len(EMAILS))
    names = [c["name"] for c in manifest["schema"]]
    assert "email_sha256" in names
    assert not {"email", "first_name", "last_name"} & set(names)
    assert manifest["pii"] == "hashed"
    assert [r["email_sha256"] for r in rows["parquet"]] == [hash_identifier(e) for e in EMAILS]
    assert [r["email_sha256"] for r in rows["csv"]] == [hash_identifier(e) or "" for e in EMAILS]


def test_omitted_pii_leaves_no_trace(tmp_path):
    export = write_profiles(tmp_path / "export.parquet", 5)
    sink = LocalSink(tmp_path / "out")
    write_partition(sink, "", TABLE, str(export), make_config(formats=("json",), pii="omit"), RUN)
    manifest, rows = check(sink, 5)
    names = [c["name"] for c in manifest["schema"]]
    assert names[0] == "profile_id"
    assert not {"email", "email_sha256", "first_name", "last_name"} & set(names)
    assert "@" not in (sink.root / PARTITION / "part-00000.json").read_text()


@pytest.mark.parametrize(
    ("pii", "expected"),
    [
        (
            "plain",
            [("email", " Fan@Example.com"), ("session_id", "'-s1"), ("external_id", "sso-9")],
        ),
        (
            "hashed",
            [
                ("email_sha256", hash_identifier("fan@example.com")),
                ("session_id", "'-s1"),
                ("external_id", "sso-9"),
            ],
        ),
        ("omit", [("email", ""), ("session_id", "'-s1"), ("external_id", "sso-9")]),
    ],
)
def test_email_identifiers_follow_the_pii_policy(tmp_path, pii, expected):
    export = write_table(tmp_path / "ids.parquet", IDENTIFIER_ROWS, IDENTIFIERS)
    sink = LocalSink(tmp_path / "out")
    config = make_config(tables=("profile_identifiers",), pii=pii)
    write_partition(sink, "", "profile_identifiers", str(export), config, RUN)
    _, rows = check(sink, 3, partition=f"profile_identifiers/dt={RUN.ds}")
    assert [(r["identifier_type"], r["identifier_value"]) for r in rows["csv"]] == expected


@pytest.mark.parametrize("pii", ["plain", "hashed", "omit"])
def test_operator_tables_follow_the_pii_policy(tmp_path, pii):
    # The link audit names identifiers in left/right pairs; a quarantined line can hold anything.
    sink = LocalSink(tmp_path / "out")
    config = make_config(tables=("identity_link_audit", "quarantine"), formats=("csv",), pii=pii)
    for table, rows, schema in (
        ("identity_link_audit", AUDIT_ROWS, AUDIT),
        ("quarantine", QUARANTINE_ROWS, QUARANTINE),
    ):
        export = write_table(tmp_path / f"{table}.parquet", rows, schema)
        write_partition(sink, "", table, str(export), config, RUN)
    _, audit = check(sink, 3, partition=f"identity_link_audit/dt={RUN.ds}")
    _, quarantine = check(sink, 3, partition=f"quarantine/dt={RUN.ds}")
    pairs = [
        (r["left_type"], r["left_value"], r["right_type"], r["right_value"]) for r in audit["csv"]
    ]
    emails = {
        "plain": [("email", "fan@example.com"), ("email", "keep@example.com")],
        "hashed": [
            ("email_sha256", hash_identifier("fan@example.com")),
            ("email_sha256", hash_identifier("keep@example.com")),
        ],
        "omit": [("email", ""), ("email", "")],
    }[pii]
    assert pairs == [
        ("session_id", "'-s1", *emails[0]),
        ("session_id", "kiosk", *emails[1]),
        ("session_id", "kiosk", "external_id", "sso-9"),  # pseudonymous ids stay, as elsewhere
    ]
    assert [r["detail"] for r in audit["csv"]] == [r["detail"] for r in AUDIT_ROWS]
    expected_raw = [r["raw"] for r in QUARANTINE_ROWS] if pii == "plain" else ["", "", ""]
    assert [r["raw"] for r in quarantine["csv"]] == expected_raw
    assert [r["reason"] for r in quarantine["csv"]] == [r["reason"] for r in QUARANTINE_ROWS]
    if pii != "plain":
        written = "".join(p.read_text() for p in (tmp_path / "out").rglob("part-*")).lower()
        assert "@" not in written


def test_a_policy_that_leaves_nothing_fails_loudly(tmp_path):
    export = write_table(
        tmp_path / "e.parquet", [{"email": "a@b.co"}], pa.schema([("email", pa.string())])
    )
    with pytest.raises(ValueError, match="leaves no column"):
        write_partition(LocalSink(tmp_path), "", TABLE, str(export), make_config(pii="omit"), RUN)


def test_gzip_round_trip(tmp_path):
    export = write_profiles(tmp_path / "export.parquet", 500)
    formats = ("csv", "json", "parquet")
    plain, zipped = LocalSink(tmp_path / "plain"), LocalSink(tmp_path / "gz")
    write_partition(plain, "", TABLE, str(export), make_config(formats=formats), RUN)
    write_partition(
        zipped, "", TABLE, str(export), make_config(formats=formats, compression="gzip"), RUN
    )

    plain_manifest, plain_rows = check(plain, 500)
    manifest, rows = check(zipped, 500)
    assert [(f["key"].rsplit("/", 1)[1], f["compression"]) for f in manifest["files"]] == [
        ("part-00000.csv.gz", "gzip"),
        ("part-00000.json.gz", "gzip"),
        ("part-00000.parquet", "none"),  # Parquet compresses inside the file (zstd)
    ]
    assert rows == plain_rows
    csv_bytes = {m["format"]: m["bytes"] for m in manifest["files"]}["csv"]
    assert csv_bytes < plain_manifest["files"][0]["bytes"] / 2


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_parts_split_at_max_file_mb(tmp_path, compression):
    export = write_profiles(tmp_path / "export.parquet", 6000)
    sink = LocalSink(tmp_path / "out")
    limit_mb = 0.1
    config = make_config(
        formats=("csv", "json", "parquet"),
        compression=compression,
        options={"max_file_mb": limit_mb},
    )
    write_partition(sink, "", TABLE, str(export), config, RUN)

    manifest, rows = check(sink, 6000)
    for fmt in ("csv", "json"):
        files = [f for f in manifest["files"] if f["format"] == fmt]
        assert len(files) > 1, fmt
        assert all(f["bytes"] <= limit_mb * 1024 * 1024 for f in files), fmt
        assert [r["profile_id"] for r in rows[fmt]] == [f"a-{i:07d}" for i in range(6000)]
    assert [r["profile_id"] for r in rows["parquet"]] == [f"a-{i:07d}" for i in range(6000)]


def test_parts_keep_file_order_across_row_groups_and_threads(tmp_path):
    """Parts are cut without an ORDER BY (it held the whole table in memory): many row groups
    read by several threads still come out in file order, part after part, every run."""
    import pyarrow.parquet as pq

    count = 120_000
    ids = [f"p-{(i * 7919) % count:07d}" for i in range(count)]  # not sorted by value
    export = tmp_path / "export.parquet"
    pq.write_table(
        pa.table({"profile_id": ids, "interactions": list(range(count))}),
        export,
        row_group_size=2_000,
    )
    config = make_config(formats=("csv", "json"), options={"max_file_mb": 0.5})
    for out in ("one", "two"):
        sink = LocalSink(tmp_path / out)
        write_partition(sink, "", TABLE, str(export), config, RUN)
        manifest, rows = check(sink, count)
        for fmt in ("csv", "json"):
            assert len([f for f in manifest["files"] if f["format"] == fmt]) > 3, fmt
            assert [r["profile_id"] for r in rows[fmt]] == ids, fmt
    assert (tmp_path / "one" / PARTITION / MANIFEST).read_text().count("sha256") == (
        tmp_path / "two" / PARTITION / MANIFEST
    ).read_text().count("sha256")


def test_a_deliverys_duckdb_is_bounded_and_spills_into_a_folder_it_removes(tmp_path):
    with scratch_duckdb(tmp_path) as con:
        limit, spill = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchone()
        assert Path(spill).parent == tmp_path
        # a sort larger than the limit spills instead of failing or growing
        con.execute("SET threads = 1")
        total = con.execute(
            "SELECT count(*) FROM (SELECT md5(CAST(range AS VARCHAR)) AS h FROM range(6000000) "
            "ORDER BY h)"
        ).fetchone()[0]
    assert total == 6_000_000
    with duckdb.connect(config={"memory_limit": DELIVERY_MEMORY_LIMIT}) as bounded:
        assert limit == bounded.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert list(tmp_path.iterdir()) == []


def test_a_row_larger_than_the_limit_gets_a_part_of_its_own(tmp_path):
    huge = "x" * 120_000  # over the 0.1 MB limit, under csv.field_size_limit()
    export = write_profiles(
        tmp_path / "export.parquet", 2, extra=[{"profile_id": "big", "answers": huge}]
    )
    sink = LocalSink(tmp_path / "out")
    write_partition(sink, "", TABLE, str(export), make_config(options={"max_file_mb": 0.1}), RUN)
    manifest, rows = check(sink, 3)
    assert [f["rows"] for f in manifest["files"]] == [2, 1]
    assert rows["csv"][2]["answers"] == huge


def test_quicksight_manifest_lists_the_csv_parts_and_goes_when_disabled(tmp_path):
    export = write_profiles(tmp_path / "export.parquet", 3000)
    sink = RecordingSink(tmp_path / "out")
    options = {"quicksight_manifest": True, "max_file_mb": 0.1}
    write_partition(
        sink, "", TABLE, str(export), make_config(formats=("csv", "json"), options=options), RUN
    )

    manifest, _ = check(sink, 3000, quicksight=True)
    quicksight = json.loads((sink.root / PARTITION / QUICKSIGHT_MANIFEST).read_text())
    csv_urls = [f["url"] for f in manifest["files"] if f["format"] == "csv"]
    assert quicksight["fileLocations"] == [{"URIs": csv_urls}]
    assert quicksight["globalUploadSettings"]["containsHeader"] == "true"
    assert sink.calls[-2:] == [
        ("put", (f"{PARTITION}/{QUICKSIGHT_MANIFEST}",)),
        ("put", (f"{PARTITION}/{MANIFEST}",)),
    ]

    sink.calls.clear()
    write_partition(sink, "", TABLE, str(export), make_config(formats=("csv",)), RUN)
    assert sink.calls[0] == (
        "delete",
        (f"{PARTITION}/{MANIFEST}", f"{PARTITION}/{QUICKSIGHT_MANIFEST}"),
    )
    check(sink, 3000)  # the listing check fails if the QuickSight manifest were still there


def test_an_empty_table_still_gets_a_partition(tmp_path):
    export = write_profiles(tmp_path / "export.parquet", 0)
    sink = LocalSink(tmp_path / "out")
    config = make_config(formats=("csv", "json", "parquet"), options={"max_file_mb": 1})
    write_partition(sink, "", TABLE, str(export), config, RUN)
    manifest, _ = check(sink, 0)
    assert [f["rows"] for f in manifest["files"]] == [0, 0, 0]
    header = (sink.root / PARTITION / "part-00000.csv").read_text().strip()
    assert header.split(",")[0] == "profile_id"


def test_render_parts_returns_parts_and_schema(tmp_path):
    export = write_profiles(tmp_path / "export.parquet", 10)
    parts, schema = render_parts(str(export), "json", tmp_path / "parts", pii="hashed")
    assert [(p.name, rows) for p, rows in parts] == [("part-00000.json", 10)]
    assert ("email_sha256", "VARCHAR") in schema
    assert len(read_part(parts[0][0].name, parts[0][0].read_bytes())) == 10


def local_drop(tmp_path, **options):
    pipeline = parse_config(
        {
            "start_date": "2024-01-01",
            "landing_root": str(tmp_path / "landing"),
            "work_dir": str(tmp_path / "work"),  # its locks, not the project's data/work
            "destinations": [
                {
                    "name": "files",
                    "kind": "local",
                    "path": str(tmp_path / "out"),
                    "tables": [TABLE],
                    "formats": ["csv"],
                    "quicksight_manifest": True,
                }
                | options
            ],
        }
    )
    return destination_for(pipeline.destination("files"), pipeline)


def test_local_destination_delivers_every_configured_table(tmp_path):
    drop = local_drop(tmp_path, tables=[TABLE, "profile_identifiers"])
    exports = {
        TABLE: str(write_profiles(tmp_path / "p.parquet", 7)),
        "profile_identifiers": str(
            write_table(tmp_path / "i.parquet", IDENTIFIER_ROWS, IDENTIFIERS)
        ),
    }
    report = drop.deliver(RUN, exports)

    assert report.rows == {TABLE: 7, "profile_identifiers": 3}
    out = tmp_path / "out"
    assert report.files == [
        str(out / PARTITION / "part-00000.csv"),
        str(out / f"profile_identifiers/dt={RUN.ds}/part-00000.csv"),
    ]
    assert report.details["manifests"][TABLE] == str(out / PARTITION / MANIFEST)
    with pytest.raises(ValueError, match="exported no profile_identifiers"):
        drop.deliver(RUN, {TABLE: exports[TABLE]})


def test_a_local_drop_refuses_to_deliver_where_another_writes_through_a_link(tmp_path):
    # pipeline.yml's load compares folders as written (it must not touch a mount while DAG
    # files are parsed); the delivery follows links, before it writes or deletes anything.
    (tmp_path / "out").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "out")
    pipeline = parse_config(
        {
            "start_date": "2024-01-01",
            "landing_root": str(tmp_path / "landing"),
            "work_dir": str(tmp_path / "work"),
            "destinations": [
                {"name": name, "kind": "local", "path": str(tmp_path / folder), "tables": [TABLE]}
                for name, folder in (("a", "out"), ("b", "link"))
            ],
        },
        "p.yml",
    )
    export = {TABLE: str(write_profiles(tmp_path / "p.parquet", 7))}
    for name in ("a", "b"):
        with pytest.raises(ConfigError, match=r"\(b\) writes audience_profiles where .* \(a\)"):
            destination_for(pipeline.destination(name), pipeline).deliver(RUN, export)
    assert list((tmp_path / "out").iterdir()) == []
    # one of them disabled: delivered
    b = pipeline.destinations[1]
    pipeline = dataclasses.replace(
        pipeline, destinations=(pipeline.destinations[0], dataclasses.replace(b, enabled=False))
    )
    assert destination_for(pipeline.destination("a"), pipeline).deliver(RUN, export).rows == {
        TABLE: 7
    }


def test_keep_days_removes_the_partitions_before_the_last_n_days(tmp_path):
    """Every partition of a snapshot table holds the whole history: kept for ever, a daily drop
    grows with the square of the days (1 GB a year from a 16 MB landing)."""
    drop = local_drop(tmp_path, keep_days=2)
    export = {TABLE: str(write_profiles(tmp_path / "p.parquet", 5))}
    for ds in ("2024-04-28", "2024-04-29", "2024-04-30"):
        drop.deliver(RunInfo(ds=ds, run_id=f"scheduled__{ds}"), export)
    out = tmp_path / "out" / TABLE
    (out / "notes").mkdir()  # a folder that is no partition: left alone
    (out / "notes" / "README").write_text("what the drop holds")

    report = drop.deliver(RUN, export)  # 2024-05-01

    assert sorted(p.name for p in out.iterdir()) == ["dt=2024-04-30", "dt=2024-05-01", "notes"]
    assert report.details["pruned"] == {TABLE: ["dt=2024-04-29"]}  # 04-28 went with 04-30's
    # a backfill of an earlier date removes nothing after it
    drop.deliver(RunInfo(ds="2024-04-29", run_id="backfill__2024-04-29"), export)
    assert sorted(p.name for p in out.iterdir()) == [
        "dt=2024-04-29",
        "dt=2024-04-30",
        "dt=2024-05-01",
        "notes",
    ]


def test_a_partition_being_written_is_not_pruned(tmp_path):
    """A backfill of an old date beside the daily run: its partition has parts but no manifest
    yet, and the daily delivery must not remove them under it."""
    sink = LocalSink(tmp_path / "out")
    export = str(write_profiles(tmp_path / "p.parquet", 5))
    write_partition(
        sink, "", TABLE, export, make_config(formats=("csv",)), RunInfo("2024-03-01", "r")
    )
    (tmp_path / "out" / TABLE / "dt=2024-03-01" / MANIFEST).unlink()  # as while it is written

    assert prune_partitions(sink, "", TABLE, RUN.ds, 1) == []
    assert (tmp_path / "out" / TABLE / "dt=2024-03-01" / "part-00000.csv").exists()


def test_a_partition_on_its_way_out_loses_its_manifests_first(tmp_path):
    sink = RecordingSink(tmp_path / "out")
    config = make_config(formats=("csv",), options={"keep_days": 1})
    export = str(write_profiles(tmp_path / "p.parquet", 5))
    write_partition(sink, "", TABLE, export, config, RunInfo("2024-04-30", "r0"))
    sink.calls.clear()

    assert prune_partitions(sink, "", TABLE, RUN.ds, 1) == ["dt=2024-04-30"]

    deletes = [keys for call, keys in sink.calls if call == "delete"]
    assert deletes[0] == (f"{TABLE}/dt=2024-04-30/{MANIFEST}",)
    assert deletes[1] == (f"{TABLE}/dt=2024-04-30/part-00000.csv",)


@pytest.mark.parametrize("value", [0, -1, 1.5, "7", True])
def test_keep_days_must_be_a_whole_number_of_days(tmp_path, value):
    # pipeline.yml's load refuses it first (tests/test_config.py); a config built otherwise too
    with pytest.raises(ConfigError, match="keep_days: must be"):
        local_drop(tmp_path, keep_days=value)
    with pytest.raises(ConfigError, match="keep_days must be a whole number of days"):
        keep_days(make_config(options={"keep_days": value}))


def test_a_partition_folder_linked_out_of_the_drop_is_refused(tmp_path):
    """Whoever can write to a shared output folder could link a partition folder to one the
    worker may write to: its files were taken for stale parts and deleted, and the parts written
    there."""
    victim = tmp_path / "home" / ".ssh"
    victim.mkdir(parents=True)
    (victim / "authorized_keys").write_text("ssh-ed25519 AAAA me\n")
    root = tmp_path / "out"
    (root / TABLE).mkdir(parents=True)
    (root / PARTITION).symlink_to(victim)
    config = make_config(formats=("csv",))

    with pytest.raises(OutsideFolderError, match="leads outside"):
        write_partition(
            LocalSink(root), "", TABLE, str(write_profiles(tmp_path / "p.parquet", 5)), config, RUN
        )

    assert sorted(p.name for p in victim.iterdir()) == ["authorized_keys"]


def test_pruning_leaves_a_partition_a_delivery_writes_as_it_writes_it(tmp_path, monkeypatch):
    """keep_days pruning by a new date beside a re-delivery of an old one (a backfill with
    --reprocess-behavior completed): the prune listed the old partition with its manifest, the
    re-delivery then wrote its parts, the prune deleted them, and the re-delivery's manifest,
    written last, named files that were gone. The prune and the delivery of a table now take
    turns (drop.table_lock): whichever comes second sees what the first left."""
    import threading

    drop = local_drop(tmp_path, keep_days=3, max_file_mb=0.01, quicksight_manifest=False)
    old = RunInfo("2024-04-01", "backfill__2024-04-01")
    export = {TABLE: str(write_profiles(tmp_path / "p.parquet", 300))}
    drop.deliver(old, export)
    listed, parts_written, pruned = threading.Event(), threading.Event(), threading.Event()
    original_list, original_put = LocalSink.list, LocalSink.put
    redelivery = "redelivery"

    def slow_prune_list(self, prefix):
        keys = original_list(self, prefix)
        if threading.current_thread().name != redelivery and prefix == f"{TABLE}/":
            listed.set()  # the prune has seen the old partition, manifest and all
            parts_written.wait(2)  # and is slow to delete (S3 round trips, many partitions)
        return keys

    def put(self, local_path, key):
        if threading.current_thread().name == redelivery and key.endswith(MANIFEST):
            parts_written.set()
            pruned.wait(5)
        original_put(self, local_path, key)

    monkeypatch.setattr(LocalSink, "list", slow_prune_list)
    monkeypatch.setattr(LocalSink, "put", put)

    def deliver_again():
        listed.wait(5)
        drop.deliver(old, export)

    thread = threading.Thread(target=deliver_again, name=redelivery)
    thread.start()
    try:
        drop.deliver(RunInfo("2024-05-01", "scheduled__2024-05-01"), export)  # prunes 04-01
    finally:
        pruned.set()
        thread.join()

    partition = tmp_path / "out" / TABLE / f"dt={old.ds}"
    manifest = json.loads((partition / MANIFEST).read_text())
    assert len(manifest["files"]) > 1
    assert [f["key"] for f in manifest["files"] if not (tmp_path / "out" / f["key"]).exists()] == []


def test_pruning_waits_for_no_delivery_and_is_left_to_the_next(tmp_path):
    """A prune does not wait for a delivery writing the table (nor two prunes of a catch-up for
    each other: one walked into a folder the other removed, and its delivery failed)."""
    from audience_profiles.destinations.drop import table_lock

    drop = local_drop(tmp_path, keep_days=1, quicksight_manifest=False)
    export = {TABLE: str(write_profiles(tmp_path / "p.parquet", 5))}
    drop.deliver(RunInfo("2024-04-01", "r1"), export)
    work = tmp_path / "work"
    with table_lock(work, "files", TABLE, prune=False):  # another date's delivery writing
        report = drop.deliver(RUN, export)
        with table_lock(work, "files", TABLE, prune=True) as alone:
            assert not alone
    assert "pruned" not in report.details
    assert (tmp_path / "out" / TABLE / "dt=2024-04-01" / MANIFEST).exists()
    report = drop.deliver(RUN, export)
    assert report.details["pruned"] == {TABLE: ["dt=2024-04-01"]}
