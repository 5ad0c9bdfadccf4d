"""identity.yml: the shipped rules load, and every mistake names the file and the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from audience_profiles.config import ConfigError
from audience_profiles.identity import IdentityRules, load_rules
from audience_profiles.privacy import EMAIL_PATTERN
from tests.identity.world import IDENTITY_YML


def test_the_shipped_rules():
    rules = load_rules(IDENTITY_YML)
    assert "undefined" in rules.blocked_values["session_id"]  # "any" applies to every type
    assert "00000000-0000-0000-0000-000000000000" in rules.blocked_values["external_id"]
    assert "test@test.com" in rules.blocked_values["email"]
    assert rules.email_pattern == EMAIL_PATTERN
    # the file's commented default is the one that applies
    assert f'# email_pattern: "{EMAIL_PATTERN}"' in IDENTITY_YML.read_text()
    assert rules.max_value_length == 1024
    assert rules.shared_device == {"email": 3}
    assert rules.per_session == {"external_id": 1}
    assert rules.per_profile == ("external_id",)
    assert rules.priority == ("external_id", "email", "session_id")
    assert rules.sql_params()["rank"] == {"external_id": 1, "email": 2, "session_id": 3}


def test_the_documented_rules_load(tmp_path):
    # identity.md's examples: its email_pattern placeholder ("...", any three characters) loaded
    # and, copied, called nearly every email "not a valid email"
    page = (Path(IDENTITY_YML).parents[2] / "docs" / "identity.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", page, re.S)]
    assert len(blocks) >= 4
    for number, raw in enumerate(blocks):
        rules = load_rules(write(tmp_path, raw))
        assert rules.email_pattern == EMAIL_PATTERN, number


def test_patterns_are_lower_cased_as_the_values_they_match(tmp_path):
    # values are matched lower-cased: a pattern with a capital letter matched nothing, unremarked
    rules = load_rules(
        write(
            tmp_path,
            {
                "blocked_patterns": {"external_id": ["GUEST-[A-Z0-9]+"]},
                "email_pattern": "^.+@X[.]COM$",
            },
        )
    )
    assert rules.blocked_patterns["external_id"] == ("guest-[a-z0-9]+",)
    assert rules.email_pattern == "^.+@x[.]com$"


def write(tmp_path, raw) -> str:
    path = tmp_path / "identity.yml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_null_switches_a_limit_off_and_missing_sections_take_defaults(tmp_path):
    rules = load_rules(write(tmp_path, {"limits": {"shared_device": {"email": None}}}))
    assert rules.shared_device == {}
    assert rules.per_session == {"external_id": 1} and rules.per_profile == ("external_id",)
    # an empty key is a section without entries, or the default of a single value
    empty = {"limits": {"per_session": None}, "email_pattern": None, "priority": None}
    rules = load_rules(write(tmp_path, empty))
    assert rules.per_session == {} and rules.shared_device == {"email": 3}
    assert (rules.email_pattern, rules.priority) == (EMAIL_PATTERN, IdentityRules().priority)


@pytest.mark.parametrize("text", ["", "# blocked_values:\n#   any: [anonymous]\n"])
def test_an_empty_file_fails_and_braces_mean_the_defaults(tmp_path, text):
    # Read as the defaults, which block no values: sessions sharing external_id "anonymous"
    # (blocked by the shipped file) merged into one profile.
    path = tmp_path / "identity.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"empty \(or only comments\): the defaults block no"):
        load_rules(path)
    path.write_text("{}\n")
    assert load_rules(path) == IdentityRules()


def test_a_signed_whole_number_in_a_blocked_list_keeps_its_text(tmp_path):
    # YAML read -0 and +1 as 0 and 1: "0" was blocked twice, "-0" and "+1" not at all
    path = tmp_path / "identity.yml"
    path.write_text("blocked_values:\n  external_id: [-0, +1, +1.5, 7, -7]\n")
    assert load_rules(path).blocked_values["external_id"] == ("-0", "+1", "+1.5", "7", "-7")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"blocked_values": {"phone": ["0"]}}, "blocked_values: unknown identifier type"),
        ({"blocked_values": {"email": "test@test.com"}}, "blocked_values.email must be a list"),
        ({"blocked_patterns": {"any": ["\\d+"]}}, "backslashes"),
        ({"blocked_patterns": {"any": ["(unclosed"]}}, "not a regular expression"),
        # lower-cased, (?U) became RE2's invalid (?u); nor are inline flags Snowflake's
        ({"blocked_patterns": {"external_id": ["(?U)guest-.*"]}}, r"no \(\?\.\.\.\) groups"),
        ({"limits": {"per_profile": {"external_id": 2}}}, "only 1"),
        # a part holding only a session became a profile of its own, keyed by the session
        ({"limits": {"per_profile": {"session_id": 1}}}, "limits.per_profile.session_id"),
        ({"limits": {"shared_device": {"session_id": 3}}}, "limits.shared_device.session_id"),
        ({"limits": {"per_session": {"email": "three"}}}, "limits.per_session.email"),
        ({"priority": ["email", "session_id"]}, "priority"),
        ({"max_value_length": "long"}, "max_value_length"),
        # a typo fell back to the default silently: a kiosk's sessions merged everyone on it
        ({"limts": {"shared_device": {"email": 2}}}, r"limts.*did you mean 'limits'"),
        ({"limits": {"shared_devices": {"email": 2}}}, r"limits\.shared_devices: unknown key"),
        ({"priorty": ["email", "external_id", "session_id"]}, "unknown key 'priorty'"),
        # 2.9 was read as 2, true as 1
        ({"max_value_length": 2.9}, "max_value_length: must be a whole number, not 2.9"),
        ({"max_value_length": True}, "max_value_length: must be a whole number, not True"),
        ({"max_value_length": 0}, "max_value_length: must be 1 or more"),
        # YAML's reading, not the text meant: "None", "1.5" and "True" were blocked instead
        ({"blocked_values": {"any": [None]}}, r"blocked_values\.any: None is not text"),
        ({"blocked_values": {"external_id": [1.50]}}, "1.5 is not text as written: quote it"),
        # read as "nothing": the defaults, or a whole section of rules off, without a word
        ({"limits": []}, r"limits must be a mapping, not \[\]"),
        (
            {"limits": {"per_session": 0}},
            r"limits\.per_session must map identifier types to numbers",
        ),
        ({"limits": {"shared_device": ""}}, r"limits\.shared_device must map identifier types"),
        ({"blocked_values": []}, r"blocked_values must map identifier types to lists, not \[\]"),
        ({"blocked_patterns": ""}, "blocked_patterns must map identifier types to lists"),
        ({"email_pattern": ""}, "email_pattern must be a regular expression, not ''"),
        ({"email_pattern": 0}, "email_pattern must be a regular expression, not 0"),
        ({"priority": []}, "priority must list each of"),
        ({"priority": ""}, "priority must list each of"),
        ({"blocked_values": {"session_id": [True]}}, "True is not text"),
    ],
)
def test_mistakes_name_the_file_and_the_key(tmp_path, raw, message):
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError, match=message) as error:
        load_rules(path)
    assert path in str(error.value)
