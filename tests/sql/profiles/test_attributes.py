"""Attribute conflicts in include/sql/profiles/audience_profiles.sql, through the daily SQL.

Names take the most recent non-empty value; consent fields the most recent explicit statement,
with its time and form kept; nothing is ever inferred as opted in.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.identity.world import World

DS = "2022-04-26"


@pytest.fixture
def world():
    w = World()
    yield w
    w.close()


def only_profile(world: World) -> dict:
    [profile] = world.table(DS, "audience_profiles")
    return profile


def test_names_take_the_most_recent_non_empty_value(world):
    world.form("2022-04-25T10:00:00", "s1", "ann@example.com", "Ann", "Lee")
    world.form("2022-04-26T09:00:00", "s1", "ann@example.com", None, "Smith")  # no first name
    world.form("2022-04-25T12:00:00", "s2", "ann@example.com", "Annie", None)  # older, landed later
    world.run(DS)
    profile = only_profile(world)
    assert (profile["first_name"], profile["last_name"]) == ("Annie", "Smith")


def test_a_blank_name_from_another_loader_does_not_hide_the_name_before_it(world):
    # validation makes a blank name NULL; a row written past it may hold '' or white space
    world.form("2022-04-25T10:00:00", "s1", "ann@example.com", "Ann", "Lee")
    world.raw_form(
        "2022-04-26T10:00:00", "s1", "ann@example.com", first_name=" \u00a0", last_name=""
    )
    world.run(DS)
    profile = only_profile(world)
    assert (profile["first_name"], profile["last_name"]) == ("Ann", "Lee")


def test_sso_names_count_and_the_latest_wins(world):
    world.form("2022-04-25T10:00:00", "s1", "ann@example.com", "Ann", "Lee")
    world.sso(
        "2022-04-26T08:00:00",
        "s1",
        "sso-ann",
        email="ann@example.com",
        first_name="Anne",
        last_name="Lee-Smith",
    )
    world.run(DS)
    profile = only_profile(world)
    assert (profile["first_name"], profile["last_name"]) == ("Anne", "Lee-Smith")
    assert (profile["email"], profile["external_id"]) == ("ann@example.com", "sso-ann")


def test_consent_is_the_latest_explicit_statement_with_its_time_and_form(world):
    world.form(
        "2022-04-25T10:00:00",
        "s1",
        "ann@example.com",
        optin_1="Yes",
        optin_2="Yes",
        accept_terms="Yes",
        form_name="Meet the Squad",
        form_id=34,
    )
    world.form(
        "2022-04-25T11:00:00",
        "s1",
        "ann@example.com",
        optin_1="No",
        form_name="Matchday Tickets Draw",
        form_id=31,
    )
    world.form(
        "2022-04-26T12:00:00",
        "s1",
        "ann@example.com",
        optin_1="",  # no statement
        form_name="Away Kit Prize Draw",
        form_id=42,
    )
    world.sso("2022-04-26T13:00:00", "s1", "sso-ann")  # SSO says nothing about consent
    world.run(DS)
    p = only_profile(world)
    assert (p["optin_1"], p["optin_1_at"], p["optin_1_source"]) == (
        False,
        dt.datetime(2022, 4, 25, 11, 0),
        "form:Matchday Tickets Draw (31)",
    )
    assert (p["optin_2"], p["optin_2_at"], p["optin_2_source"]) == (
        True,
        dt.datetime(2022, 4, 25, 10, 0),
        "form:Meet the Squad (34)",
    )
    assert p["accept_terms"] is True


def test_consent_is_never_inferred(world):
    world.form("2022-04-25T10:00:00", "s1", "ann@example.com")  # no opt-in answers at all
    world.sso("2022-04-25T11:00:00", "s2", "sso-bob")
    world.run(DS)
    for p in world.table(DS, "audience_profiles"):
        for field in ("optin_1", "optin_2", "accept_terms"):
            assert (p[field], p[f"{field}_at"], p[f"{field}_source"]) == (None, None, None)


def test_sub_second_order_and_ties_are_deterministic(world):
    # 10:00:00.5 is after 10:00:00 (a text sort of the timestamps would say otherwise)
    world.form("2022-04-25T10:00:00.500", "s1", "ann@example.com", optin_1="No", first_name="B")
    world.form("2022-04-25T10:00:00", "s1", "ann@example.com", optin_1="Yes", first_name="A")
    # the same instant: the later row of the file wins
    world.form("2022-04-25T11:00:00", "s2", "bob@example.com", optin_1="Yes", first_name="C")
    world.form("2022-04-25T11:00:00", "s2", "bob@example.com", optin_1="No", first_name="D")
    world.run(DS)
    profiles = {p["email"]: p for p in world.table(DS, "audience_profiles")}
    assert (profiles["ann@example.com"]["optin_1"], profiles["ann@example.com"]["first_name"]) == (
        False,
        "B",
    )
    assert (profiles["bob@example.com"]["optin_1"], profiles["bob@example.com"]["first_name"]) == (
        False,
        "D",
    )


def test_at_one_instant_a_no_wins_whatever_the_file_order(world):
    # Two forms stating at the same minute (forms that export minutes): the file named later
    # said Yes. File order decided, so the opt-out was lost; names still follow file order.
    for optin_1, form_name in (("No", "Unsubscribe"), ("Yes", "Win a Signed Shirt")):
        world.form(
            "2022-04-25T10:00:00",
            "s1",
            "ann@example.com",
            first_name=form_name[:3],
            optin_1=optin_1,
            accept_terms=optin_1,
            form_name=form_name,
            form_id=7,
        )
    world.run(DS)
    p = only_profile(world)
    assert (p["optin_1"], p["optin_1_at"], p["optin_1_source"]) == (
        False,
        dt.datetime(2022, 4, 25, 10, 0),
        "form:Unsubscribe (7)",
    )
    assert (p["accept_terms"], p["first_name"]) == (False, "Win")


def test_statements_after_the_run_are_not_seen(world):
    world.form("2022-04-25T10:00:00", "s1", "ann@example.com", optin_1="Yes")
    world.form("2022-04-27T10:00:00", "s1", "ann@example.com", optin_1="No")  # the day after
    world.form("2022-04-27T09:00:00", "s1", "ann@example.com", optin_1="No", dt="2022-04-26")
    world.form("2022-04-27T00:00:00", "s1", "ann@example.com", optin_1="No", dt="2022-04-26")
    world.run(DS)  # the 04-27 entries landed in 04-26's partition but are at or after its end
    p = only_profile(world)
    assert (p["optin_1"], p["optin_1_at"]) == (True, dt.datetime(2022, 4, 25, 10, 0))


def test_an_sso_row_landing_after_the_run_is_not_seen(world):
    world.sso("2022-04-26T08:00:00", "s1", "sso-ann", first_name="Ann", last_name="Lee")
    # observed on the run's day but landed a day late: it counts from 04-27's run on, so a
    # re-run of 04-26 after it arrived gives what the first run gave
    world.sso("2022-04-26T09:00:00", "s1", "sso-ann", first_name="Annie", dt="2022-04-27")
    world.run(DS)
    p = only_profile(world)
    assert (p["first_name"], p["last_name"], p["last_seen"]) == (
        "Ann",
        "Lee",
        dt.datetime(2022, 4, 26, 8, 0),
    )


@pytest.mark.parametrize("first", ["ann@example.com", "bob@example.com"])
def test_facts_without_file_or_line_at_one_instant_do_not_depend_on_row_order(first):
    """Another loader's rows may have no file and line: at one instant, the values decide."""
    other = {"ann@example.com": "bob@example.com", "bob@example.com": "ann@example.com"}[first]
    world = World()
    try:
        for email in (first, other):  # inserted in this order
            world.raw_form("2022-04-25T10:00:00", "s1", email, file=None)
        world.run(DS)
        assert only_profile(world)["email"] == "bob@example.com"  # the greater value, always
    finally:
        world.close()


def test_latest_answers_are_found_among_more_than_32767_interaction_files(world):
    """The answer's order key packs the file's rank into a HUGEINT: with 2^15 files a BIGINT
    product overflowed and the profile build failed (a landing of many small files)."""
    world.element("p1", "Which team do you support?", ["Manchester Blue", "Manchester Red"])
    world.form("2022-04-25T10:00:00", "s1", "ann@example.com")
    world.interaction("2022-04-25", "s1", "p1", 0)
    world.load()
    world.wh.con.execute(
        "INSERT INTO interactions_enriched "
        "SELECT DATE '2022-04-01', DATE '2022-04-01', 'e', 'p1', 'Which team do you support?', "
        "'vote', 'anonymous-s', 0, 'Manchester Blue', 1, 'part-' || i || '.json', 1 "
        "FROM range(32768) t(i)"
    )
    world.run(DS)
    assert only_profile(world)["answers"] == '{"Which team do you support?":"Manchester Blue"}'


@pytest.mark.parametrize("inserted", [(0, 1), (1, 0)])
def test_answers_of_rows_without_file_or_line_follow_one_order(inserted):
    """Another loader's rows may have no file and line: DuckDB took one as the latest answer
    (after the day's files, and between two of them by row order), Snowflake and the answer
    segment none. They come before the partition's files; with no line, the option decides."""
    world = World()
    try:
        world.element("p1", "Which team do you support?", ["Manchester Blue", "Manchester Red"])
        world.form("2022-04-25T10:00:00", "s1", "ann@example.com")
        world.load()
        rows = [("2022-04-25", None, 1, None), ("2022-04-25", "a.csv", 0, 7)]  # the file's wins
        rows += [("2022-04-26", None, option, None) for option in inserted]  # option 1 wins
        for day, file, option, line in rows:  # as validated, in this order
            world.wh.con.execute(
                "INSERT INTO interactions (dt, date, event_id, poll_id, session_id, option, "
                "votes, _file, _line) VALUES (?, ?, 'e', 'p1', 's1', ?, 1, ?, ?)",
                [day, day, option, file, line],
            )
        for day in ("2022-04-25", "2022-04-26"):
            world.wh.run_sql("enrich/interactions_enriched", ds=day, dated=True)

        world.run("2022-04-25")
        [profile] = world.table("2022-04-25", "audience_profiles")
        assert profile["answers"] == '{"Which team do you support?":"Manchester Blue"}'
        world.run(DS)
        assert only_profile(world)["answers"] == '{"Which team do you support?":"Manchester Red"}'
    finally:
        world.close()
