"""Identity in micro-batches agrees with the daily build: new profiles get the anchor rule's id,
a batch that joins two known profiles merges them into the older one, and the daily build of the
same files names the same survivor and emits the same merge record."""

from __future__ import annotations

import pytest
import yaml

from audience_profiles.stream import run_batch
from tests.stream.support import (
    daily_build,
    emitted,
    form_row,
    kinesis_config,
    of_type,
    profile_ids,
    query,
    write_forms,
    write_interactions,
)
from tests.support import IDENTITY_HEADER, IDENTITY_RULES, write_csv, write_seed_example

pytestmark = pytest.mark.services


def test_a_batch_joining_two_profiles_merges_them_like_the_daily_build(
    aws_conn, moto_server, tmp_path
):
    config = kinesis_config(tmp_path, aws_conn, moto_server)
    landing = tmp_path / "landing"
    write_seed_example(landing)  # the element catalogue (and David)
    write_forms(
        landing,
        "2022-04-28",
        "ann.csv",
        [form_row("2022-04-28T09:00:00", "Ann", "ann@x.org", "s1")],
    )
    write_forms(
        landing,
        "2022-04-29",
        "bob.csv",
        [form_row("2022-04-29T09:00:00", "Bob", "bob@x.org", "s2")],
    )
    write_interactions(
        landing, "2022-04-29", "votes.csv", [("2022-04-29", "s1", 0), ("2022-04-29", "s2", 1)]
    )
    run_batch(config, run_id="batch-1")
    ann, bob = profile_ids(config, moto_server, "ann@x.org", "bob@x.org")
    assert ann != bob

    # One SSO account signs in on both sessions: Ann and Bob are one person, Ann seen first.
    write_csv(
        landing / "identities" / "date=2022-04-30" / "sso.csv",
        IDENTITY_HEADER,
        [
            ["2022-04-30T08:00:00", "s1", "sso-7", "", "", ""],
            ["2022-04-30T08:05:00", "s2", "sso-7", "", "", ""],
        ],
    )
    count = len(emitted(config, moto_server))
    result = run_batch(config, run_id="batch-2")

    assert result["merges"] == 1
    records = emitted(config, moto_server)[count:]
    assert [r["event_type"] for r in records] == ["profile_merge", "profile_upsert", "interaction"]
    merge, upsert, moved = records
    assert (merge["payload"]["merged_profile_id"], merge["profile_id"]) == (bob, ann)
    assert (upsert["profile_id"], upsert["payload"]["sessions"]) == (ann, 2)
    # Bob's interaction now belongs to the survivor.
    assert (moved["profile_id"], moved["payload"]["session_id"]) == (ann, "s2")
    # A later interaction on Bob's old session is attributed to the survivor at once.
    write_interactions(landing, "2022-04-30", "later.csv", [("2022-04-30", "s2", 2)])
    run_batch(config, run_id="batch-3")
    assert emitted(config, moto_server)[-1]["profile_id"] == ann

    daily = daily_build(config, ["2022-01-11", "2022-04-28", "2022-04-29", "2022-04-30"])
    assert set(
        query(
            config,
            "SELECT profile_id FROM profile_identifiers WHERE identifier_value IN ('ann@x.org', 'bob@x.org', 's1', 's2', 'sso-7')",
        )
    ) == {(ann,)}
    # The daily build records the same merge (who merged into whom). Since the identity rewrite
    # its row also names the joining link and its time, which the stream does not reproduce yet,
    # so the two merge records' record_ids differ (a known gap, noted on issue 6).
    import duckdb

    daily_merges = duckdb.sql(
        f"SELECT merged_profile_id, surviving_profile_id FROM read_parquet('{daily['profile_merges']}')"
    ).fetchall()
    payload = merge["payload"]
    assert (payload["merged_profile_id"], payload["surviving_profile_id"]) in daily_merges


def test_a_batch_that_would_join_two_sso_accounts_is_left_to_the_daily_build(
    aws_conn, moto_server, tmp_path
):
    """identity.yml: a profile holds one external_id. A batch whose links would put two SSO
    accounts in one profile moves nobody: the daily build splits such a component with the
    whole graph in view, and the stream emits nothing the daily build would contradict."""
    config = kinesis_config(tmp_path, aws_conn, moto_server)
    landing = tmp_path / "landing"
    write_seed_example(landing)
    write_forms(
        landing,
        "2022-04-28",
        "people.csv",
        [
            form_row("2022-04-28T09:00:00", "Ann", "ann@x.org", "s1"),
            form_row("2022-04-28T09:30:00", "Bob", "bob@x.org", "s2"),
        ],
    )
    write_csv(
        landing / "identities" / "date=2022-04-28" / "sso.csv",
        IDENTITY_HEADER,
        [
            ["2022-04-28T10:00:00", "s1", "sso-ann", "", "", ""],
            ["2022-04-28T10:05:00", "s2", "sso-bob", "", "", ""],
        ],
    )
    run_batch(config, run_id="batch-1")
    ann, bob = profile_ids(config, moto_server, "ann@x.org", "bob@x.org")
    assert ann != bob

    # One family email entered on both sessions would join the two SSO accounts.
    write_forms(
        landing,
        "2022-04-29",
        "family.csv",
        [
            form_row("2022-04-29T09:00:00", "Ann", "family@x.org", "s1"),
            form_row("2022-04-29T09:10:00", "Bob", "family@x.org", "s2"),
        ],
    )
    write_interactions(landing, "2022-04-29", "votes.csv", [("2022-04-29", "s1", 0)])
    count = len(emitted(config, moto_server))
    result = run_batch(config, run_id="batch-2")

    assert result["merges"] == 0
    records = emitted(config, moto_server)[count:]
    assert not of_type(records, "profile_merge")
    # Ann's vote still goes out, to Ann's profile.
    assert [r["profile_id"] for r in of_type(records, "interaction")] == [ann]

    daily_build(config, ["2022-01-11", "2022-04-28", "2022-04-29"])
    owners = dict(
        query(
            config,
            "SELECT identifier_value, profile_id FROM profile_identifiers "
            "WHERE identifier_value IN ('sso-ann', 'sso-bob')",
        )
    )
    assert owners == {"sso-ann": ann, "sso-bob": bob}


def test_a_batch_follows_every_rule_of_identity_yml_like_the_daily_build(
    aws_conn, moto_server, tmp_path
):
    """The stream applies identity.yml through the daily build's own SQL: a blocked pattern and
    a per-session email limit (rules the stream's older copy of the link rules did not know)
    keep the same links apart in a micro-batch as in the daily build."""
    raw = yaml.safe_load(IDENTITY_RULES.read_text())
    raw["blocked_patterns"]["email"] = [".*@club[.]org"]  # whole-value patterns
    raw["limits"]["per_session"]["email"] = 1
    rules = tmp_path / "identity.yml"
    rules.write_text(yaml.safe_dump(raw))
    config = kinesis_config(tmp_path, aws_conn, moto_server, identity_config=str(rules))
    landing = tmp_path / "landing"
    write_seed_example(landing)
    write_forms(
        landing,
        "2022-04-28",
        "people.csv",
        [
            # a club mailbox shared by staff: blocked, so it links nobody
            form_row("2022-04-28T09:00:00", "Box", "box@club.org", "s1"),
            form_row("2022-04-28T09:05:00", "Box", "box@club.org", "s2"),
            # one session, two people: it keeps only its latest email (Cat)
            form_row("2022-04-28T10:00:00", "Ann", "ann@x.org", "s3"),
            form_row("2022-04-28T10:30:00", "Cat", "cat@x.org", "s3"),
        ],
    )
    write_interactions(
        landing, "2022-04-28", "votes.csv", [("2022-04-28", "s1", 0), ("2022-04-28", "s3", 1)]
    )
    run_batch(config, run_id="batch-1")
    records = emitted(config, moto_server)
    upserts = {r["payload"]["email"]: r for r in of_type(records, "profile_upsert")}

    assert "box@club.org" not in upserts
    assert upserts["ann@x.org"]["payload"]["sessions"] == 0
    assert upserts["cat@x.org"]["payload"]["sessions"] == 1
    # s1 belongs to nobody; s3's vote goes to Cat.
    cat = upserts["cat@x.org"]["profile_id"]
    votes = {r["payload"]["session_id"]: r["profile_id"] for r in of_type(records, "interaction")}
    assert "s1" not in votes and votes["s3"] == cat

    daily_build(config, ["2022-01-11", "2022-04-28"])
    daily = dict(query(config, "SELECT identifier_value, profile_id FROM profile_identifiers"))
    assert "box@club.org" not in daily and "s1" not in daily
    assert {e: daily[e] for e in ("ann@x.org", "cat@x.org", "s3")} == {
        "ann@x.org": upserts["ann@x.org"]["profile_id"],
        "cat@x.org": cat,
        "s3": cat,
    }
