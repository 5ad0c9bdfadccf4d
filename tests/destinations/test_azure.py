"""``azure`` destination against Azurite, through the Airflow wasb connection."""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

import pytest
from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

from audience_profiles.config import ConfigError, parse_config
from audience_profiles.destinations import RunInfo, destination_for
from audience_profiles.destinations.azure import AzureSink
from audience_profiles.destinations.drop import MANIFEST
from tests.destinations.drop_checks import (
    IDENTIFIER_ROWS,
    IDENTIFIERS,
    check_partition,
    write_profiles,
    write_table,
)

pytestmark = pytest.mark.services

RUN = RunInfo(ds="2024-05-01", run_id="scheduled__2024-05-01T00:00:00+00:00")
PREFIX = "exports/audience"


def azure_destination(tmp_path, conn_id: str, container: str, **keys):
    pipeline = parse_config(
        {
            "start_date": "2024-01-01",
            "landing_root": str(tmp_path / "landing"),
            "work_dir": str(tmp_path / "work"),  # its scratch and locks, not the project's
            "destinations": [
                {"name": "blob_drop", "kind": "azure", "conn_id": conn_id, "container": container}
                | keys
            ],
        }
    )
    return destination_for(pipeline.destination("blob_drop"), pipeline)


def check_blob(hook: WasbHook, container: str, table: str, ds: str, *, run_id: str, rows: int):
    partition = f"{PREFIX}/{table}/dt={ds}"
    return check_partition(
        hook.get_blobs_list_recursive(container, prefix=partition + "/"),
        lambda key: hook.download(container, key).readall(),
        partition,
        run_id=run_id,
        expected_rows=rows,
    )


def new_container() -> str:
    return f"drops-{uuid.uuid4().hex[:12]}"


def test_the_container_is_created_and_each_table_lands(tmp_path, azure_conn):
    hook = WasbHook(wasb_conn_id=azure_conn)
    container = new_container()
    assert not hook.blob_service_client.get_container_client(container).exists()
    destination = azure_destination(
        tmp_path,
        azure_conn,
        container,
        prefix=PREFIX,
        tables=["audience_profiles", "profile_identifiers"],
        formats=["csv", "json", "parquet"],
        compression="gzip",
        max_file_mb=0.05,
        pii="hashed",
    )
    exports = {
        "audience_profiles": str(write_profiles(tmp_path / "p.parquet", 3000)),
        "profile_identifiers": str(
            write_table(tmp_path / "i.parquet", IDENTIFIER_ROWS, IDENTIFIERS)
        ),
    }

    report = destination.deliver(RUN, exports)

    assert report.rows == {"audience_profiles": 3000, "profile_identifiers": 3}
    profiles, rows = check_blob(
        hook, container, "audience_profiles", RUN.ds, run_id=RUN.run_id, rows=3000
    )
    identifiers, id_rows = check_blob(
        hook, container, "profile_identifiers", RUN.ds, run_id=RUN.run_id, rows=3
    )
    assert len([f for f in profiles["files"] if f["format"] == "json"]) > 1
    for fmt in ("csv", "json", "parquet"):
        assert [r["profile_id"] for r in rows[fmt]] == [f"a-{i:07d}" for i in range(3000)], fmt
        assert "email" not in rows[fmt][0] and len(rows[fmt][0]["email_sha256"]) == 64
    assert id_rows["csv"][0]["identifier_type"] == "email_sha256"

    # Nothing but the two partitions, and the report's URLs are the blobs' own (URL-quoted).
    parts = {f["key"] for m in (profiles, identifiers) for f in m["files"]}
    manifests = {
        f"{PREFIX}/{t}/dt={RUN.ds}/{MANIFEST}" for t in ("audience_profiles", "profile_identifiers")
    }
    assert set(hook.get_blobs_list_recursive(container)) == parts | manifests
    account_url = hook.blob_service_client.url.rstrip("/")
    assert sorted(report.files) == sorted(f"{account_url}/{container}/{quote(k)}" for k in parts)
    assert {f["url"] for f in profiles["files"]} <= set(report.files)


def test_rerun_replaces_the_partition_and_removes_stale_parts(tmp_path, azure_conn):
    hook = WasbHook(wasb_conn_id=azure_conn)
    container = new_container()
    destination = azure_destination(
        tmp_path,
        azure_conn,
        container,
        prefix=PREFIX,
        tables=["audience_profiles"],
        max_file_mb=0.02,
    )
    big = {"audience_profiles": str(write_profiles(tmp_path / "big.parquet", 3000, tag="old"))}
    other_day = RunInfo(ds="2024-04-30", run_id="scheduled__2024-04-30T00:00:00+00:00")
    destination.deliver(other_day, big)
    destination.deliver(RUN, big)
    old, _ = check_blob(hook, container, "audience_profiles", RUN.ds, run_id=RUN.run_id, rows=3000)

    small = {"audience_profiles": str(write_profiles(tmp_path / "small.parquet", 300, tag="new"))}
    report = destination.deliver(RunInfo(ds=RUN.ds, run_id="manual__rerun"), small)

    new, rows = check_blob(
        hook, container, "audience_profiles", RUN.ds, run_id="manual__rerun", rows=300
    )
    assert len(old["files"]) > len(new["files"])
    assert [r["profile_id"] for r in rows["csv"]] == [f"new-{i:07d}" for i in range(300)]
    assert report.rows == {"audience_profiles": 300}
    check_blob(
        hook, container, "audience_profiles", "2024-04-30", run_id=other_day.run_id, rows=3000
    )


def test_a_container_is_required(tmp_path):
    with pytest.raises(ConfigError, match="container: destination .* needs container"):
        azure_destination(tmp_path, "azure_test", "")


def test_a_sas_token_never_reaches_a_part_url(monkeypatch):
    """A wasb connection may hold its SAS token as an account URL; the SDK then puts the token in
    every blob URL. Those URLs go into the manifests (read by every consumer of the drop), the
    delivery report and the task's XCom, so they must not carry it. No service needed: the URL is
    built locally."""
    sas = "sv=2022-11-02&ss=b&srt=co&sp=rwdlac&se=2030-01-01T00:00:00Z&sig=SECRETSIGNATURE%3D"
    conn = {
        "conn_type": "wasb",
        "login": "myaccount",
        "extra": {"sas_token": f"https://myaccount.blob.core.windows.net/?{sas}"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_WASB_SAS", json.dumps(conn))
    sink = AzureSink(WasbHook(wasb_conn_id="wasb_sas"), "audience")

    url = sink.url("exports/audience_profiles/dt=2024-05-01/part-00000.csv")

    assert url == (
        "https://myaccount.blob.core.windows.net/audience/"
        "exports/audience_profiles/dt%3D2024-05-01/part-00000.csv"
    )
