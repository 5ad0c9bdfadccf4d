"""Two people whose SSO ids and sessions differ only in case, in every destination (the eight of
test_erasure_everywhere.py's fixture plus Firehose and Kafka): identity keeps them apart, so an
erasure of one, by email or by SSO id, must take that one everywhere and leave the other as it
was, also when an export from before the request is delivered again and when the date is re-run.
(The suppression list hashed every identifier lower-cased: a request for one took both.)"""

from __future__ import annotations

import json
import re
import shutil
import uuid

import pytest

from audience_profiles.destinations.drop_erasure import RAW_WORD
from audience_profiles.pipeline import RunWindow, deliver, run_all
from audience_profiles.privacy import hash_identifier
from audience_profiles.privacy.erasure import run_erasure
from tests.destinations.test_firehose import create_delivery_stream, read_bucket
from tests.destinations.test_kafka import kafka_conn
from tests.privacy.people import file_request, form, interaction, query
from tests.privacy.test_erasure_everywhere import FANS, deliver_everywhere
from tests.services.kafka_mock import consume
from tests.support import FORM_HEADER, IDENTITY_HEADER, INTERACTION_HEADER, write_csv

pytestmark = pytest.mark.services

XENA = {"email": "xena.case@example.com", "external_id": "SSO-CASE-1", "session_id": "Sess-Case"}
YURI = {"email": "yuri.case@example.com", "external_id": "sso-case-1", "session_id": "sess-case"}
WORD = re.compile(RAW_WORD)
DAY_1, DAY_2 = "2022-04-28", "2022-04-29"
STREAMED = ["audience_profiles", "audience_profile_interactions"]


def write_twins(landing) -> None:
    """Both sign in, fill a form (opted in) and vote on DAY_1, vote on DAY_2, and leave a
    quarantined form line on DAY_2 naming their session."""
    people = [(XENA, "Xena", 1), (YURI, "Yuri", 2)]
    write_csv(
        landing / "identities" / f"date={DAY_1}" / "twins.csv",
        IDENTITY_HEADER,
        [
            [f"{DAY_1}T09:0{i}:00", p["session_id"], p["external_id"], p["email"], name, "Case"]
            for p, name, i in people
        ],
    )
    write_csv(
        landing / "form_entries" / f"date={DAY_1}" / "twins.csv",
        FORM_HEADER,
        [form(f"{DAY_1}T10:0{i}:00", n, "Case", p["email"], p["session_id"]) for p, n, i in people],
    )
    for day in (DAY_1, DAY_2):
        write_csv(
            landing / "interactions" / f"date={day}" / "twins.csv",
            INTERACTION_HEADER,
            [interaction(day, p["session_id"], option) for p, _, option in people],
        )
    write_csv(
        landing / "form_entries" / f"date={DAY_2}" / "twins.csv",
        FORM_HEADER,
        [
            form(f"{DAY_2}T09:0{i}:00", "Q", n, "", p["session_id"], optin="Maybe")
            for p, n, i in people
        ],
    )


@pytest.fixture
def twins(
    monkeypatch,
    tmp_path,
    aws_conn,
    moto_server,
    azure_conn,
    dotdigital,
    snowflake_conn,
    pg_conn,
    kafka_mock_cluster,
):
    firehose, firehose_bucket = create_delivery_stream(moto_server)
    topic = f"twins-{uuid.uuid4().hex[:8]}"
    kafka = kafka_conn(monkeypatch, {"bootstrap.servers": kafka_mock_cluster})
    more = (
        {"name": "firehose", "kind": "firehose", "conn_id": aws_conn, "tables": STREAMED,
         "delivery_stream": firehose},
        {"name": "kafka", "kind": "kafka", "conn_id": kafka, "topic": topic, "tables": STREAMED},
    )  # fmt: skip
    services = (aws_conn, moto_server, azure_conn, dotdigital, snowflake_conn, pg_conn)
    config, drops, warehouses, kinesis, standin = deliver_everywhere(
        tmp_path, services, more_destinations=more, more_people=write_twins
    )
    records = {
        "kinesis": lambda: [r for _, r in kinesis()],
        "firehose": lambda: read_bucket(moto_server, firehose_bucket),
        "kafka": lambda count: [m["value"] for m in consume(kafka_mock_cluster, topic, count)],
    }
    return config, drops, warehouses, records, standin


def about(row: dict, person: dict, profiles: set[str]) -> bool:
    """Whether a delivered row names ``person``: their email in any case (or its hash), their
    SSO id or session exactly, or one of their profile ids, as a whole word of any value."""
    words = {w for v in row.values() if v is not None for w in WORD.findall(str(v).lstrip("'"))}
    lowered = {w.lower() for w in words}
    return bool(
        {person["email"], hash_identifier(person["email"])} & lowered
        or {person["external_id"], person["session_id"]} & words
        or profiles & words
    )


def profiles_of(config, person: dict) -> set[str]:
    return {
        r[0]
        for r in query(
            config,
            "SELECT DISTINCT profile_id FROM profile_identifiers WHERE identifier_type = "
            f"'external_id' AND identifier_value = '{person['external_id']}'",
        )
    }


def rows_about(drops, warehouses, person: dict, profiles: set[str]) -> dict:
    """Every delivered row about ``person``, by destination and part or table."""
    found = {d.name: d.parts() for d in drops} | {w.name: w.rows() for w in warehouses}
    return {
        (name, part): [r for r in rows if about(r, person, profiles)]
        for name, parts in found.items()
        for part, rows in parts.items()
    }


def count(rows: dict) -> int:
    return sum(len(v) for v in rows.values())


@pytest.mark.parametrize(
    ("erased", "kept", "asked"),
    [
        (XENA, YURI, ("email", "  XENA.Case@Example.com ")),
        (YURI, XENA, ("external_id", "sso-case-1")),
    ],
    ids=["by-email", "by-sso-id"],
)
def test_an_erasure_takes_one_of_two_case_twins_everywhere(twins, tmp_path, erased, kept, asked):
    config, drops, warehouses, records, standin = twins
    erased_ids, kept_ids = profiles_of(config, erased), profiles_of(config, kept)
    assert erased_ids and kept_ids and not erased_ids & kept_ids
    kept_before = rows_about(drops, warehouses, kept, kept_ids)
    assert count(rows_about(drops, warehouses, erased, erased_ids)) > 0
    members = standin.members(FANS)
    assert {XENA["email"], YURI["email"]} <= members
    streamed = {"kinesis": len(records["kinesis"]()), "firehose": len(records["firehose"]())}
    saved = tmp_path / "saved-export"  # DAY_2's export, as delivered before the request
    shutil.copytree(f"{config.work_dir}/runs/{DAY_2}/export", saved)

    file_request(tmp_path / "landing", "r-1", *asked)
    result = run_erasure("2022-04-30", config)

    assert result["record"]["completed"] == ["r-1"], result
    log = query(config, "SELECT status FROM erasure_log WHERE request_id = 'r-1'")
    assert {status for (status,) in log} == {"done"}
    assert count(rows_about(drops, warehouses, erased, erased_ids)) == 0
    assert rows_about(drops, warehouses, kept, kept_ids) == kept_before
    for drop in drops:
        drop.check_manifests()
    for stream in ("kinesis", "firehose"):
        new = records[stream]()[streamed[stream] :]
        assert sorted((r["event_type"], r["profile_id"]) for r in new) == sorted(
            ("profile_erased", p) for p in erased_ids
        ), stream
    kafka = records["kafka"](streamed["kinesis"] + len(erased_ids))
    assert {r["profile_id"] for r in kafka if r["event_type"] == "profile_erased"} == erased_ids
    assert standin.members(FANS) == members - {erased["email"]}

    # An export from before the request, delivered again: the tombstones keep one out only.
    window = RunWindow.for_date(DAY_2)
    published = json.loads(next(saved.glob("_published*")).read_text())
    tables = {t: str(saved / path.rsplit("/", 1)[-1]) for t, path in published["tables"].items()}
    for name in ("snowflake", "postgres"):
        deliver(name, window, tables, config)
    assert count(rows_about([], warehouses, erased, erased_ids)) == 0
    again = rows_about([], warehouses, kept, kept_ids)
    assert again == {k: v for k, v in kept_before.items() if k[0] in ("snowflake", "postgres")}

    # The date re-run: the list tells the two apart in its suppression too.
    run_all(window, config)
    assert count(rows_about(drops, warehouses, erased, erased_ids)) == 0
    assert rows_about(drops, warehouses, kept, kept_ids) == kept_before
    assert kept["email"] in standin.members(FANS)
