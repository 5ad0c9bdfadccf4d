"""``s3`` destination against moto in server mode, through the Airflow AWS connection."""

from __future__ import annotations

import json
import uuid

import pytest
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from moto.s3.models import S3Backend
from moto.server import ThreadedMotoServer
from werkzeug.exceptions import InternalServerError

from audience_profiles.config import ConfigError, parse_config
from audience_profiles.destinations import RunInfo, destination_for
from audience_profiles.destinations.drop import MANIFEST, QUICKSIGHT_MANIFEST
from tests.destinations.drop_checks import (
    IDENTIFIER_ROWS,
    IDENTIFIERS,
    check_partition,
    write_profiles,
    write_table,
)
from tests.services._proc import free_port

pytestmark = pytest.mark.services

RUN = RunInfo(ds="2024-05-01", run_id="scheduled__2024-05-01T00:00:00+00:00")
PREFIX = "exports/audience"


def s3_destination(tmp_path, conn_id: str, bucket: str, **keys):
    pipeline = parse_config(
        {
            "start_date": "2024-01-01",
            "landing_root": str(tmp_path / "landing"),
            "work_dir": str(tmp_path / "work"),  # its scratch and locks, not the project's
            "destinations": [
                {"name": "s3_drop", "kind": "s3", "conn_id": conn_id, "bucket": bucket, **keys}
            ],
        }
    )
    return destination_for(pipeline.destination("s3_drop"), pipeline)


def new_bucket(conn_id: str) -> tuple[S3Hook, str]:
    hook = S3Hook(aws_conn_id=conn_id)
    bucket = f"drops-{uuid.uuid4().hex[:12]}"
    hook.create_bucket(bucket_name=bucket, region_name="us-east-1")
    return hook, bucket


def check_s3(hook: S3Hook, bucket: str, table: str, ds: str, *, run_id: str, rows: int, **kw):
    def fetch(key: str) -> bytes:
        return hook.get_conn().get_object(Bucket=bucket, Key=key)["Body"].read()

    partition = f"{PREFIX}/{table}/dt={ds}"
    return check_partition(
        hook.list_keys(bucket_name=bucket, prefix=partition + "/"),
        fetch,
        partition,
        run_id=run_id,
        expected_rows=rows,
        **kw,
    )


def test_each_table_lands_as_parts_and_a_manifest(tmp_path, aws_conn):
    hook, bucket = new_bucket(aws_conn)
    destination = s3_destination(
        tmp_path,
        aws_conn,
        bucket,
        prefix=PREFIX + "/",
        tables=["audience_profiles", "profile_identifiers"],
        formats=["csv", "parquet"],
        compression="gzip",
        max_file_mb=0.05,
        quicksight_manifest=True,
    )
    exports = {
        "audience_profiles": str(write_profiles(tmp_path / "p.parquet", 1500)),
        "profile_identifiers": str(
            write_table(tmp_path / "i.parquet", IDENTIFIER_ROWS, IDENTIFIERS)
        ),
    }

    report = destination.deliver(RUN, exports)

    assert report.rows == {"audience_profiles": 1500, "profile_identifiers": 3}
    profiles, rows = check_s3(
        hook, bucket, "audience_profiles", RUN.ds, run_id=RUN.run_id, rows=1500, quicksight=True
    )
    identifiers, _ = check_s3(
        hook, bucket, "profile_identifiers", RUN.ds, run_id=RUN.run_id, rows=3, quicksight=True
    )
    assert len([f for f in profiles["files"] if f["format"] == "csv"]) > 1
    assert all(f["key"].endswith((".csv.gz", ".parquet")) for f in profiles["files"])
    assert [r["profile_id"] for r in rows["csv"]] == [f"a-{i:07d}" for i in range(1500)]
    assert [r["profile_id"] for r in rows["parquet"]] == [r["profile_id"] for r in rows["csv"]]
    # Nothing outside the two partitions, and the report names every part and manifest.
    all_keys = set(hook.list_keys(bucket_name=bucket))
    parts = {f["key"] for m in (profiles, identifiers) for f in m["files"]}
    partitions = [f"{PREFIX}/{t}/dt={RUN.ds}" for t in ("audience_profiles", "profile_identifiers")]
    markers = {f"{p}/{name}" for p in partitions for name in (MANIFEST, QUICKSIGHT_MANIFEST)}
    assert all_keys == parts | markers
    assert sorted(report.files) == sorted(f"s3://{bucket}/{k}" for k in parts)
    assert (
        report.details["manifests"]["audience_profiles"]
        == f"s3://{bucket}/{partitions[0]}/{MANIFEST}"
    )

    quicksight = json.loads(hook.read_key(f"{partitions[0]}/{QUICKSIGHT_MANIFEST}", bucket))
    assert quicksight["fileLocations"][0]["URIs"] == [
        f"s3://{bucket}/{f['key']}" for f in profiles["files"] if f["format"] == "csv"
    ]


def test_rerun_replaces_the_partition_and_removes_stale_parts(tmp_path, aws_conn):
    hook, bucket = new_bucket(aws_conn)
    destination = s3_destination(
        tmp_path, aws_conn, bucket, prefix=PREFIX, tables=["audience_profiles"], max_file_mb=0.05
    )
    big = {"audience_profiles": str(write_profiles(tmp_path / "big.parquet", 1500, tag="old"))}
    other_day = RunInfo(ds="2024-04-30", run_id="scheduled__2024-04-30T00:00:00+00:00")
    destination.deliver(other_day, big)
    destination.deliver(RUN, big)
    old, _ = check_s3(hook, bucket, "audience_profiles", RUN.ds, run_id=RUN.run_id, rows=1500)

    small = {"audience_profiles": str(write_profiles(tmp_path / "small.parquet", 400, tag="new"))}
    rerun = RunInfo(ds=RUN.ds, run_id="manual__rerun")
    report = destination.deliver(rerun, small)

    new, rows = check_s3(
        hook, bucket, "audience_profiles", RUN.ds, run_id="manual__rerun", rows=400
    )
    assert len(new["files"]) < len(old["files"])
    assert [r["profile_id"] for r in rows["csv"]] == [f"new-{i:07d}" for i in range(400)]
    assert report.rows == {"audience_profiles": 400}
    check_s3(hook, bucket, "audience_profiles", "2024-04-30", run_id=other_day.run_id, rows=1500)


def test_keep_days_removes_older_partitions_under_the_prefix_only(tmp_path, aws_conn):
    hook, bucket = new_bucket(aws_conn)
    hook.load_string("not ours", f"{PREFIX}-other/audience_profiles/dt=2024-04-01/x", bucket)
    destination = s3_destination(
        tmp_path, aws_conn, bucket, prefix=PREFIX, tables=["audience_profiles"], keep_days=1
    )
    export = {"audience_profiles": str(write_profiles(tmp_path / "p.parquet", 5))}
    destination.deliver(RunInfo(ds="2024-04-30", run_id="r-04-30"), export)

    report = destination.deliver(RUN, export)

    assert report.details["pruned"] == {"audience_profiles": ["dt=2024-04-30"]}
    assert sorted(hook.list_keys(bucket)) == sorted(
        [
            f"{PREFIX}-other/audience_profiles/dt=2024-04-01/x",
            *hook.list_keys(bucket, prefix=f"{PREFIX}/audience_profiles/dt={RUN.ds}/"),
        ]
    )
    check_s3(hook, bucket, "audience_profiles", RUN.ds, run_id=RUN.run_id, rows=5)


@pytest.fixture
def faulty_s3(monkeypatch):
    """A moto server in this process whose PutObject answers 500 for keys set in ``fail_keys``.

    The connection disables boto's own retries so the task fails at once: Airflow's task retry
    (calling deliver again) is the retry under test.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {
            "endpoint_url": f"http://{host}:{port}",
            "region_name": "us-east-1",
            "config_kwargs": {"retries": {"mode": "standard", "max_attempts": 1}},
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_FAULTY", json.dumps(conn))
    fail_keys: set[str] = set()
    failures: list[str] = []
    put_object = S3Backend.put_object

    def failing_put_object(self, bucket_name, key_name, *args, **kwargs):
        if key_name in fail_keys:
            failures.append(key_name)
            raise InternalServerError("injected fault")
        return put_object(self, bucket_name, key_name, *args, **kwargs)

    monkeypatch.setattr(S3Backend, "put_object", failing_put_object)
    try:
        yield "aws_faulty", fail_keys, failures
    finally:
        server.stop()


def test_an_error_mid_drop_then_a_retry_leaves_one_complete_partition(tmp_path, faulty_s3):
    conn_id, fail_keys, failures = faulty_s3
    hook, bucket = new_bucket(conn_id)
    destination = s3_destination(
        tmp_path,
        conn_id,
        bucket,
        prefix=PREFIX,
        tables=["audience_profiles"],
        formats=["csv", "json"],
        max_file_mb=0.05,
    )
    partition = f"{PREFIX}/audience_profiles/dt={RUN.ds}"
    destination.deliver(
        RUN, {"audience_profiles": str(write_profiles(tmp_path / "v1.parquet", 2000))}
    )
    v1, _ = check_s3(hook, bucket, "audience_profiles", RUN.ds, run_id=RUN.run_id, rows=2000)

    v2 = {"audience_profiles": str(write_profiles(tmp_path / "v2.parquet", 1200, tag="v2"))}
    rerun = RunInfo(ds=RUN.ds, run_id="manual__v2")
    fail_keys.add(f"{partition}/part-00002.csv")
    with pytest.raises(Exception, match="500"):
        destination.deliver(rerun, v2)
    assert set(failures) == {f"{partition}/part-00002.csv"}
    keys = hook.list_keys(bucket_name=bucket, prefix=partition + "/")
    # Half-replaced: old and new parts side by side, and no manifest vouching for either.
    assert f"{partition}/{MANIFEST}" not in keys
    assert f"{partition}/part-00000.csv" in keys
    assert len(keys) == len(v1["files"])

    fail_keys.clear()
    destination.deliver(rerun, v2)

    manifest, rows = check_s3(
        hook, bucket, "audience_profiles", RUN.ds, run_id="manual__v2", rows=1200
    )
    expected_ids = [f"v2-{i:07d}" for i in range(1200)]
    for fmt in ("csv", "json"):
        assert [r["profile_id"] for r in rows[fmt]] == expected_ids, fmt
    assert len(manifest["files"]) < len(v1["files"])


def test_a_bucket_is_required(tmp_path):
    with pytest.raises(ConfigError, match="bucket: destination .* needs bucket"):
        s3_destination(tmp_path, "aws_test", "")
