"""The SQL build against the pandas reference (bench/pandas_reference.py), on random landings.

`bench_build.py --verify` compares the two on the generator's data, which is well-behaved. Here
hypothesis writes small landings (each source as CSV or newline-delimited JSON) made of the
rules' edge cases instead: a few sessions, emails and SSO accounts shared at random (so profiles
chain, kiosks appear and two accounts meet on one session), case and whitespace variants,
blocked and malformed values, offsets, observations in the same second, rows landing a day late,
names and consents given, blank, withdrawn or invalid. The real pipeline (landing extract,
validation, enrichment) loads every date into a DuckDB file and then builds one of them
(identity, profiles, checks, publish), the last or an earlier one with later data already
loaded, as a re-run does; the reference builds the same date from the files up to it. Every
output table must hold the same rows. Two implementations written separately agreeing on such
inputs is the evidence that the rules in docs/identity.md are what the SQL does.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audience_profiles.identity import load_rules
from tests.edge_landings import DATES, EDGE_CASE_LANDING, landings, sql_build, write_landing
from tests.support import IDENTITY_RULES

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import pandas_reference  # noqa: E402

# Each output table with the columns both builds fill: the reference leaves out what only the
# warehouse knows (ids of runs, the time of the run).
COMPARED = {
    "profile_identifiers": "identifier_type, identifier_value, profile_id",
    "audience_profiles": "profile_id, email, external_id, first_name, last_name, optin_1, optin_2, "
    "accept_terms, first_seen, last_seen, sessions, interactions, answers, optin_1_at, "
    "optin_1_source, optin_2_at, optin_2_source, accept_terms_at, accept_terms_source",
    "profile_merges": "merged_profile_id, surviving_profile_id, merged_at, reason, "
    "identifier_type, identifier_value",
    "audience_profile_interactions": "profile_id, first_name, last_name, email, interaction_date, "
    "attribute, option, poll_id, event_id, session_id, votes",
    "identity_link_audit": "rule, detail, left_type, left_value, right_type, right_value, "
    "observed_at, source, file, line",
    "interactions_enriched": "date, event_id, poll_id, title, element_type, session_id, option, "
    "option_label, votes",
    # the reference keeps which rows it quarantined, not why
    "quarantine": "source, file, line",
}


# Rules other than the shipped ones, each of which the reference got wrong once: two per-profile
# types (the cuts of the first were not taken out before the second was split), a stricter email
# pattern than validation's (the reference quarantined the entry), a pattern with capitals.
OTHER_RULES = {
    "limits": {"per_profile": {"external_id": 1, "email": 1}, "shared_device": {"email": 2}},
    "email_pattern": "^[A-E][a-z0-9._%+'-]*@example[.]com$",
    "blocked_patterns": {"session_id": ["SESS-[56]"], "external_id": ["U-2"]},
}


def differences_on(landing: dict, ds: str, rules_file: Path = IDENTITY_RULES) -> dict[str, dict]:
    """Both builds of ``ds`` from one landing; what differs, table by table."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_landing(work / "landing", landing)
        sql_dir = sql_build(work / "sql", work / "landing", ds, identity_config=str(rules_file))
        # the reference reads only the partitions up to ds
        pandas_dir = work / "pandas"
        pandas_reference.build(str(work / "landing"), ds, str(pandas_dir), load_rules(rules_file))
        compared = pandas_reference.compare_exports(sql_dir, pandas_dir, COMPARED)
        return {table: c for table, c in compared.items() if c["differing"]}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(landing=landings, ds=st.sampled_from(DATES[1:]))
def test_sql_build_matches_the_pandas_reference(landing, ds):
    assert differences_on(landing, ds) == {}


def test_a_landing_with_every_edge_case_at_once():
    """One fixed landing, so a failure here is reproducible without hypothesis's database."""
    assert differences_on(EDGE_CASE_LANDING, DATES[-1]) == {}


@pytest.fixture(scope="module")
def other_rules(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "identity.yml"
    path.write_text(yaml.safe_dump(OTHER_RULES))
    return path


@pytest.mark.parametrize("ds", DATES[1:])
def test_the_edge_case_landing_under_other_rules(other_rules, ds):
    assert differences_on(EDGE_CASE_LANDING, ds, other_rules) == {}


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(landing=landings, ds=st.sampled_from(DATES[1:]))
def test_sql_build_matches_the_pandas_reference_under_other_rules(other_rules, landing, ds):
    assert differences_on(landing, ds, other_rules) == {}
