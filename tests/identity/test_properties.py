"""Property tests: identity resolution on random link sets, checked against plain Python.

- Without limits, profiles are exactly the connected components of all links (union-find).
- With the default rules, profiles are exactly the components of the links the rules accepted
  (every other link is in identity_link_audit), no profile holds two external_ids, no shared
  device belongs to a profile, and every cut link was between two SSO accounts' profiles.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from audience_profiles.identity import resolve_as_of
from tests.identity.world import World
from tests.support import union_find

DS = "2022-04-25"
SESSIONS = [f"s-{i}" for i in range(7)]
EMAILS = [f"fan{i}@example.com" for i in range(5)]
EXTERNALS = [f"sso-{i}" for i in range(4)]

form_links = st.tuples(st.just("form"), st.sampled_from(SESSIONS), st.sampled_from(EMAILS))
sso_links = st.tuples(
    st.just("sso"),
    st.sampled_from(SESSIONS),
    st.sampled_from(EXTERNALS),
    st.none() | st.sampled_from(EMAILS),
)
KIOSK = [("form", "s-kiosk", email) for email in EMAILS[:4]]  # four emails: a shared device
link_sets = st.tuples(
    st.lists(st.one_of(form_links, sso_links), min_size=1, max_size=14), st.booleans()
).map(lambda drawn: drawn[0] + KIOSK if drawn[1] else drawn[0])


def resolve(world: World, links) -> tuple[set[frozenset[str]], list, list[tuple]]:
    """Load ``links`` (one a minute), resolve as of DS; return profiles, links, rejections."""
    typed = []  # (file, line, left, right) per identity link, as the SQL sees them
    for minute, link in enumerate(links):
        at = f"{DS}T10:{minute:02d}:00"
        if link[0] == "form":
            _, session, email = link
            world.form(at, session, email)
            typed.append([f"session_id:{session}", f"email:{email}"])
        else:
            _, session, external, email = link
            world.sso(at, session, external, email=email)
            typed.append([f"session_id:{session}", f"external_id:{external}"])
            if email:
                typed.append([f"external_id:{external}", f"email:{email}"])
    world.load()
    world.wh.execute_script("CREATE SCHEMA IF NOT EXISTS rs")
    resolve_as_of(world.wh, "rs", world.rules, DS, f"{DS} 23:59:59")
    profiles: dict[str, set[str]] = defaultdict(set)
    for type_, value, profile_id in world.wh.query(
        "SELECT identifier_type, identifier_value, profile_id FROM rs.profile_identifiers"
    ):
        profiles[profile_id].add(f"{type_}:{value}")
    rejected = world.wh.query(
        "SELECT left_type || ':' || left_value, right_type || ':' || right_value, rule "
        "FROM id_rejected"
    )
    return {frozenset(p) for p in profiles.values()}, typed, rejected


def components(nodes: set[str], links: list[tuple[str, str]]) -> set[frozenset[str]]:
    component = union_find(links)
    groups: dict[str, set[str]] = defaultdict(set)
    for n in nodes:
        groups[component.get(n, n)].add(n)
    return {frozenset(g) for g in groups.values()}


@settings(max_examples=20, deadline=None)
@given(links=link_sets)
def test_without_limits_profiles_are_the_components_of_all_links(links):
    rules = dataclasses.replace(World().rules, shared_device={}, per_session={}, per_profile=())
    world = World(rules)
    try:
        profiles, typed, rejected = resolve(world, links)
    finally:
        world.close()
    assert rejected == []
    nodes = {n for link in typed for n in link}
    assert profiles == components(nodes, [tuple(link) for link in typed])


@settings(max_examples=20, deadline=None)
@given(links=link_sets)
def test_with_the_rules_profiles_are_the_components_of_the_accepted_links(links):
    world = World()
    try:
        profiles, typed, rejected = resolve(world, links)
    finally:
        world.close()
    rejected_pairs = [(left, right) for left, right, _ in rejected]
    accepted = [tuple(link) for link in typed if tuple(link) not in rejected_pairs]
    # A rejected link still leaves its email and external_id as people; sessions only exist
    # through an accepted link.
    nodes = {n for link in accepted for n in link} | {
        n for link in typed for n in link if not n.startswith("session_id:")
    }
    assert profiles == components(nodes, accepted)

    for profile in profiles:
        assert sum(n.startswith("external_id:") for n in profile) <= 1
    emails_of = defaultdict(set)
    for left, right in typed:
        if left.startswith("session_id:") and right.startswith("email:"):
            emails_of[left].add(right)
    shared = {s for s, emails in emails_of.items() if len(emails) > 3}
    assert not shared & {n for p in profiles for n in p}
    profile_of = {n: p for p in profiles for n in p}
    for left, right, rule in rejected:
        if rule == "profile_limit":
            assert profile_of[left] != profile_of[right]
            assert all(
                any(n.startswith("external_id:") for n in profile_of[end]) for end in (left, right)
            )
