"""Named identity scenarios, each a short story through the daily run's SQL (see world.py)."""

from __future__ import annotations

import dataclasses

import pytest

from tests.identity.world import World, profile_id

D1, D2, D3 = "2022-04-25", "2022-04-26", "2022-04-27"
S1, S2, S3, KIOSK = "s-1111", "s-2222", "s-3333", "s-kiosk"


def test_cookie_reset_rejoined_by_email_keeps_the_firstprofile_id(world):
    world.form(f"{D1}T10:00:00", S1, "fan@example.com", "Ann", "Lee")
    world.run(D1)
    first_id = world.profile_of(D1, "email:fan@example.com")

    # New cookie: an anonymous session until the fan enters the same email again.
    world.interaction(D2, S2, "p1", 0)
    world.run(D2)
    assert world.profile_of(D2, f"session_id:{S2}") is None

    world.form(f"{D3}T09:30:00", S2, "fan@example.com")
    world.run(D3)
    assert world.groups(D3) == {
        frozenset({f"session_id:{S1}", f"session_id:{S2}", "email:fan@example.com"})
    }
    assert world.profile_of(D3, f"session_id:{S2}") == first_id
    assert world.merges(D3) == []  # S2 joined a profile; no profile disappeared


def test_cookie_reset_with_its_own_profile_merges_into_the_older_one(world):
    world.form(f"{D1}T10:00:00", S1, "fan@example.com", "Ann", "Lee")
    world.sso(f"{D2}T08:00:00", S2, "sso-ann")  # the new cookie signs in: a profile of its own
    world.run(D2)
    older, newer = (world.profile_of(D2, i) for i in ("email:fan@example.com", f"session_id:{S2}"))
    assert older != newer

    world.form(f"{D3}T12:15:00", S2, "FAN@example.com ")
    world.run(D3)
    assert world.profile_of(D3, "external_id:sso-ann") == older
    assert [(m["merged_profile_id"], m["surviving_profile_id"]) for m in world.merges(D3)] == [
        (newer, older)
    ]
    merge = world.merges(D3)[0]
    assert merge["reason"] == "form_entries:session_id-email"
    assert (merge["identifier_type"], merge["identifier_value"]) == ("email", "fan@example.com")
    assert str(merge["merged_at"]) == f"{D3} 12:15:00"
    assert world.merges(D2) == []  # the merge is reported once, on the run it happened in


def test_email_case_and_whitespace_variants_are_one_identifier(world):
    world.form(f"{D1}T10:00:00", S1, " David.Wilson@Example.com ")
    world.form(f"{D1}T11:00:00", S2, "DAVID.WILSON@EXAMPLE.COM")
    world.form(f"{D1}T12:00:00", S3, "david.wilson@example.com")
    world.run(D1)
    assert world.groups(D1) == {
        frozenset({f"session_id:{s}" for s in (S1, S2, S3)} | {"email:david.wilson@example.com"})
    }


def test_shared_kiosk_links_to_no_one(world):
    emails = [f"fan{i}@example.com" for i in range(4)]  # limit 3: four is a shared device
    for i, email in enumerate(emails):
        world.form(f"{D1}T15:1{i}:00", KIOSK, email)
    world.interaction(D1, KIOSK, "p1", 0)
    world.run(D1)

    assert world.groups(D1) == {frozenset({f"email:{e}"}) for e in emails}
    audit = world.audit(D1)
    assert [a["rule"] for a in audit] == ["shared_device"] * 4
    assert audit[0]["detail"] == "session carries 4 distinct email values (limit 3)"
    assert {(a["left_value"], a["right_value"]) for a in audit} == {(KIOSK, e) for e in emails}
    assert world.table(D1, "audience_profile_interactions") == []  # nobody gets its votes


def test_session_with_emails_up_to_the_limit_is_a_person(world):
    for i in range(3):
        world.form(f"{D1}T15:1{i}:00", S1, f"fan{i}@example.com")
    world.run(D1)
    assert len(world.groups(D1)) == 1
    assert world.audit(D1) == []


def test_a_blocked_email_does_not_make_a_session_a_shared_device(world):
    # fan0@, fan1@, fan2@ and test@test.com: three people's emails, not four (docs/identity.md)
    emails = [f"fan{i}@example.com" for i in range(3)]
    for i, email in enumerate([*emails, "test@test.com"]):
        world.form(f"{D1}T15:1{i}:00", S1, email)
    world.run(D1)
    assert world.groups(D1) == {frozenset({f"session_id:{S1}", *(f"email:{e}" for e in emails)})}
    assert [(a["rule"], a["detail"]) for a in world.audit(D1)] == [
        ("blocked_value", "email blocked value")
    ]


def test_two_sso_accounts_on_one_session_never_merge(world):
    world.sso(f"{D1}T10:00:00", S1, "sso-older")
    world.sso(f"{D1}T11:00:00", S1, "sso-newer")
    world.sso(f"{D1}T09:00:00", S2, "sso-older")
    world.run(D1)

    assert world.groups(D1) == {
        frozenset({f"session_id:{S1}", "external_id:sso-newer"}),  # the most recent link wins
        frozenset({f"session_id:{S2}", "external_id:sso-older"}),
    }
    [audit] = world.audit(D1)
    assert (audit["rule"], audit["right_value"]) == ("session_limit", "sso-older")


def test_two_sso_accounts_seen_at_once_on_one_session_keep_the_first_by_value(world):
    world.sso(f"{D1}T10:00:00", S1, "sso-b")
    world.sso(f"{D1}T10:00:00", S1, "sso-a")  # the same second: the tie goes by value
    world.run(D1)
    assert world.profile_of(D1, f"session_id:{S1}") == world.profile_of(D1, "external_id:sso-a")
    [audit] = world.audit(D1)
    assert (audit["rule"], audit["right_value"]) == ("session_limit", "sso-b")


def test_a_blocked_sso_account_does_not_count_towards_the_session_limit(world):
    world.sso(f"{D1}T10:00:00", S1, "sso-a")
    world.sso(f"{D1}T11:00:00", S1, "anonymous")  # blocked: rejected for its value, not the limit
    world.run(D1)
    assert world.profile_of(D1, f"session_id:{S1}") == world.profile_of(D1, "external_id:sso-a")
    assert [a["rule"] for a in world.audit(D1)] == ["blocked_value"]


def test_two_sso_accounts_joined_through_an_email_chain_stay_apart(world):
    # sso-a -- S1 -- shared@ -- S2 -- sso-b: one component, two SSO accounts.
    world.sso(f"{D1}T08:00:00", S1, "sso-a")
    world.form(f"{D1}T09:00:00", S1, "shared@example.com")
    world.form(f"{D1}T10:00:00", S2, "shared@example.com")
    world.sso(f"{D1}T11:00:00", S2, "sso-b")
    world.run(D1)

    groups = world.groups(D1)
    assert all(sum(i.startswith("external_id:") for i in g) == 1 for g in groups)
    assert {f"session_id:{S1}", "external_id:sso-a"} in [set(g) for g in groups]
    assert {f"session_id:{S2}", "external_id:sso-b"} <= set(
        next(g for g in groups if "external_id:sso-b" in g)
    )
    # The email is one link from each session: the more recent link (S2's, 10:00) wins.
    assert world.profile_of(D1, "email:shared@example.com") == world.profile_of(
        D1, "external_id:sso-b"
    )
    [cut] = world.audit(D1)
    assert cut["rule"] == "profile_limit"
    assert (cut["left_value"], cut["right_value"]) == (S1, "shared@example.com")
    assert "external_id:sso-a" in cut["detail"] and "external_id:sso-b" in cut["detail"]


def test_a_session_stays_with_the_account_it_is_linked_to_directly(world):
    # S1 is tied to sso-a directly and to sso-b only through an email: the nearer account wins
    # (docs/identity.md, "the nearest account"), though the email link is the more recent one.
    world.sso(f"{D1}T08:00:00", S1, "sso-a")
    world.sso(f"{D1}T08:30:00", S2, "sso-b", email="b@example.com")
    world.form(f"{D1}T09:00:00", S1, "b@example.com")
    world.run(D1)
    assert world.profile_of(D1, f"session_id:{S1}") == world.profile_of(D1, "external_id:sso-a")
    assert world.profile_of(D1, "email:b@example.com") == world.profile_of(D1, "external_id:sso-b")


def test_two_sso_accounts_sharing_an_email_the_most_recent_keeps_it(world):
    world.sso(f"{D1}T08:00:00", S1, "sso-a", email="family@example.com")
    world.sso(f"{D1}T09:00:00", S2, "sso-b", email="family@example.com")
    world.run(D1)
    assert world.groups(D1) == {
        frozenset({f"session_id:{S1}", "external_id:sso-a"}),
        frozenset({f"session_id:{S2}", "external_id:sso-b", "email:family@example.com"}),
    }
    # sso-a's own email attribute is not another profile's email
    profile_a = world.profile(D1, world.profile_of(D1, "external_id:sso-a"))
    assert profile_a["email"] is None and profile_a["external_id"] == "sso-a"
    profile_b = world.profile(D1, world.profile_of(D1, "external_id:sso-b"))
    assert (profile_b["email"], profile_b["external_id"]) == ("family@example.com", "sso-b")


def test_profile_limit_can_be_switched_off():
    world = World(dataclasses.replace(World().rules, per_profile=()))
    world.sso(f"{D1}T08:00:00", S1, "sso-a", email="family@example.com")
    world.sso(f"{D1}T09:00:00", S2, "sso-b", email="family@example.com")
    world.run(D1)
    assert len(world.groups(D1)) == 1 and world.audit(D1) == []
    world.close()


def test_blocked_values_never_link_but_real_identifiers_stay_people(world):
    zero_uuid = "00000000-0000-0000-0000-000000000000"
    world.form(f"{D1}T10:00:00", "undefined", "real@example.com")  # blocked session
    world.form(f"{D1}T10:05:00", S1, "test@test.com")  # blocked email
    world.form(f"{D1}T10:10:00", zero_uuid, "other@example.com")  # all-zero UUID
    world.form(f"{D1}T10:15:00", "x" * 1025, "long@example.com")  # over 1,024 characters
    world.sso(f"{D1}T10:20:00", S2, "NULL")  # blocked external_id, any case
    world.sso(f"{D1}T10:25:00", S3, "sso-3")
    # rows from another loader, past validation: a blocked word and an invalid email
    world.raw_form(f"{D1}T10:30:00", S3, "Anonymous")
    world.raw_form(f"{D1}T10:35:00", S3, "not an email")
    world.run(D1)

    assert world.groups(D1) == {
        frozenset({"email:real@example.com"}),
        frozenset({"email:other@example.com"}),
        frozenset({"email:long@example.com"}),
        frozenset({f"session_id:{S3}", "external_id:sso-3"}),
    }
    details = sorted((a["rule"], a["detail"]) for a in world.audit(D1))
    assert details == sorted(
        [
            ("blocked_value", "session_id blocked value"),
            ("blocked_value", "email blocked value"),
            ("blocked_value", "session_id blocked value"),
            ("blocked_value", "session_id longer than 1024 characters"),
            ("blocked_value", "external_id blocked value"),
            ("blocked_value", "email blocked value"),
            ("blocked_value", "email not a valid email"),
        ]
    )


def test_a_blocked_sso_accounts_email_is_its_profiles_email_without_the_accounts_names(world):
    # The email is a profile of its own (no account, no session link). Its email column was
    # empty: an SSO row's facts reached only its account's profile.
    world.sso(f"{D1}T10:00:00", S1, "null", email="six@example.com", first_name="Six")
    world.run(D1)
    assert world.groups(D1) == {frozenset({"email:six@example.com"})}
    profile = world.profile(D1, world.profile_of(D1, "email:six@example.com"))
    assert (profile["email"], profile["external_id"], profile["first_name"]) == (
        "six@example.com",
        None,
        None,
    )


def test_a_value_of_the_maximum_length_is_an_identifier(world):
    world.form(f"{D1}T10:00:00", "x" * 1024, "long@example.com")  # 1,024 characters: the limit
    world.run(D1)
    assert world.groups(D1) == {frozenset({f"session_id:{'x' * 1024}", "email:long@example.com"})}
    assert world.audit(D1) == []


def test_an_observation_at_midnight_belongs_to_the_next_day(world):
    # D1's interval ends before D2 00:00:00: a row landed in D1's partition and observed at that
    # instant (the day after its partition is allowed) counts from D2's run on
    world.form(f"{D1}T10:00:00", S1, "fan@example.com")
    world.form(f"{D2}T00:00:00", S2, "fan@example.com", dt=D1)
    world.run(D1)
    world.run(D2)
    assert world.groups(D1) == {frozenset({f"session_id:{S1}", "email:fan@example.com"})}
    assert world.groups(D2) == {
        frozenset({f"session_id:{S1}", f"session_id:{S2}", "email:fan@example.com"})
    }


def test_blocked_patterns_and_per_type_lists_come_from_the_rules():
    rules = dataclasses.replace(
        World().rules,
        blocked_patterns={
            "session_id": ("0+(-0+)*",),
            "email": (".*@mailinator[.]com",),
            "external_id": (),
        },
    )
    world = World(rules)
    world.form(f"{D1}T10:00:00", "000-000", "a@example.com")
    world.form(f"{D1}T10:05:00", S1, "b@mailinator.com")
    world.run(D1)
    assert {a["detail"] for a in world.audit(D1)} == {
        "session_id matches blocked pattern 0+(-0+)*",
        "email matches blocked pattern .*@mailinator[.]com",
    }
    world.close()


def test_the_seeds_worked_example(world):
    # The seed: David Wilson entered a competition on 2022-01-11 from session e298a949...; on
    # 2022-04-29 that session voted "Manchester Blue" in poll 54663.
    session = "e298a949-fa5a-4fae-b4bb-f468cb185dd9"
    world.element(
        "54663",
        "Which team do you support?",
        ["Manchester Blue", "Manchester Red", "North London White", "West London Blue"],
        element_type="team_selector",
    )
    world.form(
        "2022-01-11T11:34:00",
        session,
        "david.wilson@example.com",
        "David",
        "Wilson",
        optin_1="Yes",
        optin_2="Yes",
        accept_terms="Yes",
    )
    world.interaction("2022-04-29", session, "54663", 0)
    world.run("2022-04-29")

    rows = [
        (
            r["first_name"],
            r["last_name"],
            r["email"],
            str(r["interaction_date"]),
            r["attribute"],
            r["option"],
        )
        for r in world.table("2022-04-29", "audience_profile_interactions")
    ]
    assert rows == [
        (
            "David",
            "Wilson",
            "david.wilson@example.com",
            "2022-04-29",
            "Which team do you support?",
            "Manchester Blue",
        )
    ]


def test_a_merge_is_reported_on_the_day_it_happened_with_its_link(world):
    world.form(f"{D1}T10:00:00", S1, "a@example.com")
    world.form(f"{D2}T10:00:00", S2, "b@example.com")
    world.form(f"{D3}T07:00:00", S3, "a@example.com")  # S3 joins a's profile: no merge
    world.form(f"{D3}T08:00:00", S3, "b@example.com")  # ... and now a's and b's profiles meet
    world.run(D2)
    a, b = world.profile_of(D2, "email:a@example.com"), world.profile_of(D2, "email:b@example.com")
    world.run(D3)
    [merge] = world.merges(D3)
    assert (merge["merged_profile_id"], merge["surviving_profile_id"]) == (b, a)  # a is older
    assert (merge["identifier_type"], merge["identifier_value"]) == ("session_id", S3)
    assert str(merge["merged_at"]) == f"{D3} 08:00:00"


def test_equally_old_profiles_merge_into_the_smaller_id(world):
    world.form(f"{D1}T10:00:00", S1, "a@example.com")  # same landing day, same second
    world.form(f"{D1}T10:00:00", S2, "b@example.com")
    world.run(D1)
    a, b = world.profile_of(D1, "email:a@example.com"), world.profile_of(D1, "email:b@example.com")
    world.form(f"{D2}T09:00:00", S3, "a@example.com")
    world.form(f"{D2}T09:00:00", S3, "b@example.com")
    world.run(D2)
    assert world.profile_of(D2, "email:b@example.com") == min(a, b)
    [merge] = world.merges(D2)
    assert (merge["merged_profile_id"], merge["surviving_profile_id"]) == (max(a, b), min(a, b))


def test_a_node_id_collision_is_retried_with_the_next_salt(world, monkeypatch):
    world.form(f"{D1}T10:00:00", S1, "a@example.com")
    world.sso(f"{D1}T11:00:00", S1, "sso-a", email="b@example.com")
    world.run(D1)
    expected = world.profiles(D1)

    salts = []
    query_sql = world.wh.query_sql

    def first_salt_collides(name, **params):
        if name == "identity/node_collisions":
            salts.append(params["salt"])
            if params["salt"] == 0:
                return [(1,)]
        return query_sql(name, **params)

    monkeypatch.setattr(world.wh, "query_sql", first_salt_collides)
    world.run(D1)
    assert salts == [0, 1, 0, 1]  # both snapshots retried; ids do not depend on the salt
    assert world.profiles(D1) == expected


def test_a_session_seen_earlier_only_through_a_rejected_link_does_not_rekey(world):
    world.form(f"{D1}T10:00:00", S1, "test@example.com")  # a blocked email: S1 stays anonymous
    world.form(f"{D2}T10:00:00", S2, "fan@example.com")
    world.run(D2)
    profile = world.profile_of(D2, "email:fan@example.com")
    world.form(f"{D3}T10:00:00", S1, "fan@example.com")  # S1 joins: the profile grows
    world.run(D3)
    assert world.profile_of(D3, f"session_id:{S1}") == profile
    assert world.merges(D3) == []


def test_an_old_observation_landing_late_does_not_rekey(world):
    # All three identifiers arrive in one D1 row; the email must not be the anchor then, so that
    # an earlier observation of it could (wrongly) make it one.
    email = next(
        f"fan{i}@example.com"
        for i in range(100)
        if profile_id(f"email:fan{i}@example.com") > profile_id("external_id:sso-x")
    )
    world.sso(f"{D1}T10:00:00", S1, "sso-x", email=email)
    world.run(D1)
    profile = world.profile_of(D1, f"email:{email}")
    assert profile == profile_id("external_id:sso-x")
    world.form(f"{D1}T09:00:00", S2, email, dt=D2)  # observed before, landed the day after
    world.run(D2)
    assert world.profile_of(D2, f"email:{email}") == profile
    assert world.merges(D2) == []


def test_a_shared_session_never_hands_one_sso_accounts_id_to_another(world):
    # A session whose id sorts before both accounts': as an anchor it would name their profiles.
    laptop = next(
        f"s-{i}"
        for i in range(1000)
        if profile_id(f"session_id:s-{i}") < profile_id("external_id:sso-a")
    )
    world.sso(f"{D1}T10:00:00", S1, "sso-a")
    world.sso(f"{D1}T10:00:00", laptop, "sso-a")
    world.sso(f"{D1}T11:00:00", laptop, "sso-b")  # the most recent account keeps the laptop
    world.run(D1)
    a, b = (world.profile_of(D1, f"external_id:{x}") for x in ("sso-a", "sso-b"))
    assert (a, b) == (profile_id("external_id:sso-a"), profile_id("external_id:sso-b"))
    world.sso(f"{D2}T09:00:00", laptop, "sso-a")  # and back again the next day
    world.run(D2)
    assert world.profile_of(D2, "external_id:sso-a") == a
    assert world.profile_of(D2, "external_id:sso-b") == b
    assert world.merges(D2) == []


@pytest.mark.parametrize("written", ["Fan@Example.com", "fan@example.com\t"])
def test_an_email_written_past_validation_in_another_case_is_rejected_not_a_second_person(
    world, written
):
    world.form(f"{D1}T10:00:00", S1, "fan@example.com")
    world.raw_form(f"{D1}T11:00:00", S2, written)  # another loader's row
    world.run(D1)
    assert world.groups(D1) == {frozenset({f"session_id:{S1}", "email:fan@example.com"})}
    [rejected] = world.audit(D1)
    assert (rejected["rule"], rejected["detail"]) == (
        "blocked_value",
        "email not normalised (trim and lower-case)",
    )


@pytest.mark.parametrize("written", [f" {S1}", f"{S1}\u00a0"])
def test_a_session_id_written_past_validation_with_white_space_is_rejected_not_a_second_session(
    world, written
):
    # validation trims session ids; another loader's padded copy is no second cookie
    world.form(f"{D1}T10:00:00", S1, "fan@example.com")
    world.raw_form(f"{D1}T11:00:00", written, "ann@example.com")  # another loader's row
    world.run(D1)
    assert world.groups(D1) == {
        frozenset({f"session_id:{S1}", "email:fan@example.com"}),
        frozenset({"email:ann@example.com"}),
    }
    [rejected] = world.audit(D1)
    assert (rejected["rule"], rejected["detail"]) == (
        "blocked_value",
        "session_id not normalised (trim)",
    )


def test_an_external_id_written_past_validation_with_white_space_is_rejected_not_a_second_account(
    world,
):
    # "sso-1 " is no second SSO account: taken as one, the profile limit split it from "sso-1"
    # and it took the account's email
    world.sso(f"{D1}T10:00:00", S1, "sso-1", email="fan@example.com")
    world.raw_sso(f"{D1}T11:00:00", S2, "sso-1 ", email="fan@example.com")
    world.run(D1)
    assert world.groups(D1) == {
        frozenset({f"session_id:{S1}", "external_id:sso-1", "email:fan@example.com"})
    }
    assert (
        sorted((a["rule"], a["detail"]) for a in world.audit(D1))
        == [("blocked_value", "external_id not normalised (trim)")] * 2
    )


def test_a_placeholder_observation_time_does_not_rekey(world):
    # 0001-01-01 (validation quarantines it now, another loader's row may hold it); packed
    # unclamped into the first-seen key it borrowed days from its landing day and made the late
    # email the profile's anchor
    world.form(f"{D1}T10:00:00", S1, "fan@example.com")
    world.run(D1)
    profile = world.profile_of(D1, "email:fan@example.com")
    world.raw_form("0001-01-01T00:00:00", S1, "late@example.com", dt=D3)
    world.run(D3)
    assert world.profile_of(D3, "email:late@example.com") == profile
    assert world.merges(D3) == []


def test_a_rejected_row_without_a_file_is_audited_once(world):
    world.form(f"{D1}T09:00:00", S2, "fan@example.com")
    world.raw_form(f"{D1}T10:00:00", S1, "test@test.com", file=None)  # blocked, no file name
    world.run(D1)
    assert [a["rule"] for a in world.audit(D1)] == ["blocked_value"]
    world.run(D2)
    assert world.audit(D2) == []


def test_the_collision_check_finds_two_identifiers_with_one_node_id(world):
    world.wh.execute_script(
        "CREATE OR REPLACE TEMP TABLE id_values AS SELECT * FROM (VALUES (7, 'a'), (3, 'b'),"
        " (7, 'c'), (5, 'd')) t(node_id, node_value)"
    )
    assert world.wh.query_sql("identity/node_collisions", suffix="") == [(1,)]
    world.wh.execute_script("DELETE FROM id_values WHERE node_value = 'c'")
    assert world.wh.query_sql("identity/node_collisions", suffix="") == [(0,)]


def test_a_placeholder_padded_with_white_space_is_still_blocked(world):
    """Validation trims white space, another loader may not: "null" + a no-break space
    or "undefined" + an em space must not become one identifier shared by strangers."""
    world.sso(f"{D1}T10:00:00", S1, "null\u00a0", email="ann@example.com")
    world.sso(f"{D1}T11:00:00", S2, "NULL\u00a0", email="bob@example.com")
    world.raw_form(f"{D1}T12:00:00", "undefined\u2003", "cat@example.com")
    world.raw_form(f"{D1}T13:00:00", "undefined\u2003", "dan@example.com")
    world.run(D1)

    # four people, each alone: the SSO rows' sessions link through the external_id only
    assert world.groups(D1) == {
        frozenset({f"email:{who}@example.com"}) for who in ("ann", "bob", "cat", "dan")
    }
    details = sorted(a["detail"] for a in world.audit(D1))  # an SSO row links twice
    assert details == ["external_id blocked value"] * 4 + ["session_id blocked value"] * 2


def test_a_rejected_link_observed_after_its_partitions_day_is_audited_when_it_counts(world):
    # landed in D1's partition but observed after D1's end (allowed): not part of D1's snapshot,
    # so D1's audit cannot hold it; D2's run, the first it counts in, reports it
    world.form(f"{D1}T10:00:00", S1, "fan@example.com")
    world.form(f"{D2}T00:30:00", S2, "test@test.com", dt=D1)
    world.run(D1)
    world.run(D2)
    assert world.audit(D1) == []
    [audit] = world.audit(D2)
    assert (audit["rule"], audit["left_value"], audit["file"]) == (
        "blocked_value",
        S2,
        f"landing/form_entries/date={D1}/part-0.csv",
    )


def test_an_sso_rows_placeholder_or_malformed_email_is_left_out_and_its_login_stays(world):
    # docs/identity.md, rule 1's table: an SSO row's email is optional, so only it is rejected
    world.sso(f"{D1}T10:00:00", S3, "u-3", email="n/a")
    world.sso(f"{D1}T11:00:00", S2, "u-2", email="not an email")
    world.run(D1)
    assert world.groups(D1) == {
        frozenset({f"session_id:{S3}", "external_id:u-3"}),
        frozenset({f"session_id:{S2}", "external_id:u-2"}),
    }
    assert [(a["detail"], a["right_value"]) for a in world.audit(D1)] == [
        ("email blocked value", "n/a"),
        ("email not a valid email", "not an email"),
    ]


def test_the_nearest_account_keeps_a_session_and_the_form_link_is_cut(world):
    # docs/identity.md, "the nearest account": distance decides, and the later form link is cut
    world.sso(f"{D1}T08:00:00", S1, "sso-a")
    world.sso(f"{D1}T08:30:00", S2, "sso-b", email="b@example.com")
    world.form(f"{D1}T09:00:00", S1, "b@example.com")
    world.run(D1)
    assert world.groups(D1) == {
        frozenset({f"session_id:{S1}", "external_id:sso-a"}),
        frozenset({f"session_id:{S2}", "external_id:sso-b", "email:b@example.com"}),
    }
    [cut] = world.audit(D1)
    assert (cut["rule"], cut["left_value"], cut["right_value"], cut["detail"]) == (
        "profile_limit",
        S1,
        "b@example.com",
        "profile holds at most one external_id: would join external_id:sso-a and external_id:sso-b",
    )


def test_the_merge_history_example_is_the_same_after_growth_on_both_sides(world):
    # docs/identity.md, "Merge history": B grows at 06:00, A at 06:30; s-3 joins them at 08:00
    world.form(f"{D1}T10:00:00", S1, "a@example.com")
    world.form(f"{D2}T10:00:00", S2, "b@example.com")
    world.form(f"{D3}T06:00:00", "s-8", "b@example.com")
    world.form(f"{D3}T06:30:00", "s-9", "a@example.com")
    world.form(f"{D3}T07:00:00", S3, "a@example.com")
    world.form(f"{D3}T08:00:00", S3, "b@example.com")
    world.run(D2)
    a, b = world.profile_of(D2, "email:a@example.com"), world.profile_of(D2, "email:b@example.com")
    world.run(D3)
    [merge] = world.merges(D3)
    assert (merge["merged_profile_id"], merge["surviving_profile_id"]) == (b, a)
    assert (str(merge["merged_at"]), merge["reason"]) == (
        f"{D3} 08:00:00",
        "form_entries:session_id-email",
    )
    assert (merge["identifier_type"], merge["identifier_value"]) == ("session_id", S3)
