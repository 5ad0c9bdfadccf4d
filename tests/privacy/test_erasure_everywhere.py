"""One erasure request, every destination: local drops (plain and hashed), S3 (moto), Azure Blob
(Azurite), Kinesis (moto), Dotdigital (stand-in), Snowflake (fakesnow) and PostgreSQL (sql kind,
hashed).

David is built into every destination over three daily runs. After his request, each destination
holds exactly what it held before minus David's rows (streams: plus one profile_erased record for
his profile), and the next daily run, which brings new data about his address, adds nothing about
him anywhere while the others' data keeps flowing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import closing

import boto3
import pytest
import yaml
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.microsoft.azure.hooks.wasb import WasbHook
from airflow.providers.postgres.hooks.postgres import PostgresHook

from audience_profiles.destinations.drop import MANIFEST
from audience_profiles.pipeline import RunWindow, run_all
from audience_profiles.privacy import hash_identifier
from audience_profiles.privacy.erasure import run_erasure
from audience_profiles.warehouse.snowflake import snowflake_hook
from tests.destinations.drop_checks import check_partition, read_part
from tests.destinations.test_kinesis import create_stream, read_stream
from tests.privacy.people import (
    ANN,
    BOB,
    BOB_SESSION,
    DAVID,
    DAYS,
    file_request,
    form,
    interaction,
    query,
    write_people,
)
from tests.services.dotdigital_standin import DOTDIGITAL_CONN_ID
from tests.support import FORM_HEADER, INTERACTION_HEADER, SEED_SESSION, write_config, write_csv

pytestmark = pytest.mark.services

FANS = "AP fans"
NEXT_DAY = "2022-04-30"


class Drop:
    """Read a drop destination back through the provider hooks (or the file system)."""

    def __init__(self, name: str, keys: Callable[[], list[str]], fetch: Callable[[str], bytes]):
        self.name, self.keys, self.fetch = name, keys, fetch

    def parts(self) -> dict[str, list[dict]]:
        return {
            key: read_part(key, self.fetch(key)) for key in sorted(self.keys()) if "/part-" in key
        }

    def check_manifests(self) -> None:
        for key in self.keys():
            if key.endswith(MANIFEST):
                partition = key.rsplit("/", 1)[0]
                manifest = json.loads(self.fetch(key))
                check_partition(
                    self.keys(),
                    self.fetch,
                    partition,
                    run_id=manifest["run_id"],
                    expected_rows=manifest["rows"],
                )


class Warehouse:
    """Read a SQL warehouse destination's tables back as rows (lower-case column names)."""

    def __init__(self, name: str, connect: Callable, schema: str, tables: list[str]):
        self.name, self.connect, self.schema, self.tables = name, connect, schema, tables

    def rows(self) -> dict[str, list[dict]]:
        with closing(self.connect()) as con:
            cur = con.cursor()
            found = {}
            for table in self.tables:
                cur.execute(f"SELECT * FROM {self.schema}.{table}")
                names = [d[0].lower() for d in cur.description]
                found[table] = sorted(
                    (dict(zip(names, r, strict=True)) for r in cur.fetchall()),
                    key=lambda r: json.dumps(r, sort_keys=True, default=str),
                )
            return found


@pytest.fixture
def everywhere(tmp_path, aws_conn, moto_server, azure_conn, dotdigital, snowflake_conn, pg_conn):
    services = (aws_conn, moto_server, azure_conn, dotdigital, snowflake_conn, pg_conn)
    return deliver_everywhere(tmp_path, services)


def deliver_everywhere(
    tmp_path,
    services: tuple,
    more_destinations: tuple[dict, ...] = (),
    more_people: Callable | None = None,
):
    """The sample people (and ``more_people(landing)``'s) built over DAYS into every destination
    (and ``more_destinations``); (config, drops, warehouses, Kinesis records, Dotdigital).
    ``services``: the fixtures aws_conn, moto_server, azure_conn, dotdigital, snowflake_conn and
    pg_conn, in that order."""
    aws_conn, moto_server, azure_conn, dotdigital, snowflake_conn, pg_conn = services
    bucket, container = f"drops-{uuid.uuid4().hex[:8]}", f"drops-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    stream = create_stream(moto_server, shards=1)
    profile_tables = ["audience_profiles", "profile_identifiers"]
    warehouse_tables = [
        "audience_profiles",
        "audience_profile_interactions",
        "profile_identifiers",
        "quarantine",
    ]
    snowflake_database = "ERASE_" + uuid.uuid4().hex[:8].upper()
    pg_schema = "erase_" + uuid.uuid4().hex[:8]
    pg = PostgresHook(postgres_conn_id=pg_conn)
    pg.run(f'CREATE SCHEMA "{pg_schema}"', autocommit=True)
    destinations = [
        {
            "name": "local_plain",
            "kind": "local",
            "path": str(tmp_path / "plain"),
            "formats": ["csv", "json"],
            "tables": [
                "audience_profiles",
                "audience_profile_interactions",
                "profile_identifiers",
                "profile_merges",
                "interactions_enriched",
                "quarantine",
            ],
        },
        {
            "name": "local_hashed",
            "kind": "local",
            "path": str(tmp_path / "hashed"),
            "formats": ["parquet"],
            "pii": "hashed",
            "tables": profile_tables,
        },
        {
            "name": "s3_drop",
            "kind": "s3",
            "conn_id": aws_conn,
            "bucket": bucket,
            "prefix": "exports",
            "formats": ["csv"],
            "compression": "gzip",
            "tables": ["audience_profiles", "audience_profile_interactions", "quarantine"],
        },
        {
            "name": "azure_drop",
            "kind": "azure",
            "conn_id": azure_conn,
            "container": container,
            "formats": ["json"],
            "tables": profile_tables,
        },
        {
            "name": "profile_stream",
            "kind": "kinesis",
            "conn_id": aws_conn,
            "stream_name": stream,
            "tables": ["audience_profiles", "audience_profile_interactions"],
        },
        {
            "name": "dotdigital",
            "kind": "dotdigital",
            "conn_id": DOTDIGITAL_CONN_ID,
            "tables": ["segment_memberships", "audience_profiles"],
            "segments": {"fans": {"address_book": FANS}},
            "poll_interval": 0.01,
            "backoff_base": 0.01,
        },
        {
            "name": "snowflake",
            "kind": "snowflake",
            "conn_id": snowflake_conn,
            "database": snowflake_database,
            "schema": "AUDIENCE",
            "tables": warehouse_tables,
        },
        {
            "name": "postgres",
            "kind": "sql",
            "conn_id": pg_conn,
            "schema": pg_schema,
            "pii": "hashed",
            "tables": warehouse_tables,
        },
    ]
    # Everyone opted in is in segment "fans", which Dotdigital syncs to one address book.
    segments = tmp_path / "segments.yml"
    segments.write_text(
        yaml.safe_dump({"segments": {"fans": {"attribute": {"column": "optin_1", "equals": True}}}})
    )
    config = write_config(
        tmp_path, destinations=[*destinations, *more_destinations], segments_config=str(segments)
    )
    write_people(tmp_path / "landing")
    if more_people:
        more_people(tmp_path / "landing")
    for ds in DAYS:
        run_all(RunWindow.for_date(ds), config)

    s3 = S3Hook(aws_conn_id=aws_conn)
    wasb = WasbHook(wasb_conn_id=azure_conn)

    def local(name: str) -> Drop:
        root = tmp_path / name
        return Drop(
            name,
            lambda: [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()],
            lambda key: (root / key).read_bytes(),
        )

    drops = [
        local("plain"),
        local("hashed"),
        Drop(
            "s3_drop",
            lambda: s3.list_keys(bucket),
            lambda key: s3.get_key(key, bucket).get()["Body"].read(),
        ),
        Drop(
            "azure_drop",
            lambda: wasb.get_blobs_list_recursive(container, prefix=""),
            lambda key: wasb.download(container, key).readall(),
        ),
    ]
    warehouses = [
        Warehouse(
            "snowflake",
            snowflake_hook(snowflake_conn, snowflake_database, "AUDIENCE").get_conn,
            "AUDIENCE",
            warehouse_tables,
        ),
        Warehouse("postgres", pg.get_conn, f'"{pg_schema}"', warehouse_tables),
    ]
    return config, drops, warehouses, lambda: read_stream(moto_server, stream), dotdigital


def about_david(row: dict, profile_ids: set[str]) -> bool:
    text = json.dumps(row, default=str).lower()
    return bool(
        {DAVID, SEED_SESSION, hash_identifier(DAVID), *profile_ids} & set(_values(row))
        or DAVID in text
    )


def _values(row: dict) -> list[str]:
    return [str(v).lstrip("'").lower() for v in row.values() if v is not None]


def test_an_erasure_reaches_every_destination_and_stays(everywhere, tmp_path):
    config, drops, warehouses, stream_records, standin = everywhere
    david_profiles = {
        r[0]
        for r in query(
            config, f"SELECT profile_id FROM profile_identifiers WHERE identifier_value = '{DAVID}'"
        )
    }
    assert len(david_profiles) == 1
    before = {d.name: d.parts() for d in drops}
    for name, parts in before.items():  # David is in every drop to begin with
        assert any(about_david(r, david_profiles) for rows in parts.values() for r in rows), name
    tables_before = {w.name: w.rows() for w in warehouses}
    for name, tables in tables_before.items():
        assert any(about_david(r, david_profiles) for rows in tables.values() for r in rows), name
    records_before = stream_records()
    members_before = standin.members(FANS)
    assert members_before == {DAVID, ANN, BOB}

    file_request(tmp_path / "landing", "r-1", "email", "David.Wilson@example.com")
    result = run_erasure(NEXT_DAY, config)

    assert result["record"] == {"completed": ["r-1"], "pending": 0}
    log = dict(
        query(config, "SELECT destination, status FROM erasure_log WHERE request_id = 'r-1'")
    )
    assert log == dict.fromkeys(
        [*(d["name"] for d in config.raw["destinations"]), "warehouse", "suppression_list"],
        "done",
    )
    # Every drop: each part is what it was minus David's rows; manifests match the files.
    for drop in drops:
        after = drop.parts()
        assert after.keys() == before[drop.name].keys(), drop.name
        for key, rows in before[drop.name].items():
            assert after[key] == [r for r in rows if not about_david(r, david_profiles)], key
        drop.check_manifests()
    # Every warehouse table: what it held minus David's rows.
    for warehouse in warehouses:
        assert warehouse.rows() == {
            table: [r for r in rows if not about_david(r, david_profiles)]
            for table, rows in tables_before[warehouse.name].items()
        }, warehouse.name
    # The stream: exactly one new record, profile_erased for David's profile.
    new = [r for _, r in stream_records()[len(records_before) :]]
    assert [(r["event_type"], r["profile_id"]) for r in new] == [
        ("profile_erased", p) for p in david_profiles
    ]
    assert DAVID not in json.dumps(new)
    assert standin.members(FANS) == members_before - {DAVID}

    # The next day brings David back (his address, a new session, his old one): nothing of it
    # reaches any destination, while Bob's new activity does.
    landing = tmp_path / "landing"
    write_csv(
        landing / "form_entries" / f"date={NEXT_DAY}" / "p.csv",
        FORM_HEADER,
        [form(f"{NEXT_DAY}T10:00:00", "David", "Wilson", " DAVID.Wilson@example.com", "d-2")],
    )
    write_csv(
        landing / "interactions" / f"date={NEXT_DAY}" / "p.csv",
        INTERACTION_HEADER,
        [
            interaction(NEXT_DAY, "d-2", 0),
            interaction(NEXT_DAY, SEED_SESSION, 1),
            interaction(NEXT_DAY, BOB_SESSION, 2),
        ],
    )
    records_mid = stream_records()
    run_all(RunWindow.for_date(NEXT_DAY), config)

    for drop in drops:
        parts = drop.parts()
        fresh = [r for key, rows in parts.items() if f"dt={NEXT_DAY}" in key for r in rows]
        assert fresh, drop.name
        assert not [r for r in fresh if about_david(r, david_profiles) or "d-2" in _values(r)]
        assert {k: v for k, v in parts.items() if f"dt={NEXT_DAY}" not in k} == {
            k: [r for r in v if not about_david(r, david_profiles)]
            for k, v in before[drop.name].items()
        }
    for warehouse in warehouses:
        tables = warehouse.rows()
        assert not [
            r
            for rows in tables.values()
            for r in rows
            if about_david(r, david_profiles) or "d-2" in _values(r)
        ], warehouse.name
        fresh = [
            r
            for r in tables["audience_profile_interactions"]
            if str(r["interaction_date"]) == NEXT_DAY
        ]
        assert [r["session_id"] for r in fresh] == [BOB_SESSION], warehouse.name
    new = [r for _, r in stream_records()[len(records_mid) :]]
    assert new and not [r for r in new if DAVID in json.dumps(r) or "d-2" in json.dumps(r)]
    assert any(r["payload"].get("email") == BOB for r in new)
    assert standin.members(FANS) == {ANN, BOB}
    assert query(config, f"SELECT count(*) FROM form_entries WHERE email = '{DAVID}'") == [(0,)]
