"""The one rule for error texts that may quote a person (audience_profiles.redaction)."""

from __future__ import annotations

from audience_profiles.redaction import redact, redactor


def test_addresses_go_whatever_the_caller_knows():
    text = "no contact 'fan.name@example.c' at /v3/email/o%27brien%2Btag@example.com, o'hara@x.ie"
    assert redact(text) == "no contact '<email>' at /v3/email/<email>, <email>"


def test_known_values_go_whatever_they_look_like_and_whatever_their_case():
    known = [("external_id", "sso-99812"), ("session_id", "kiosk-1"), ("profile_id", "ap_1f")]
    text = "refused SSO-99812 on 'kiosk-1' (ap_1f); sso-998123 and kiosk-12 are others"
    assert redact(text, known) == (
        "refused <external_id> on '<session_id>' (<profile_id>); sso-998123 and kiosk-12 are others"
    )


def test_a_value_inside_another_goes_with_the_longer_one_and_marks_are_left_alone():
    known = [("session_id", "id"), ("external_id", "id-7"), ("first_name", "")]
    assert redact("id-7 and id: ok", known) == "<external_id> and <session_id>: ok"
    assert redact("a\\1 (x)", [("last_name", "a\\1")]) == "<last_name> (x)"


def test_a_redactor_reads_a_large_batch_once_and_serves_several_texts():
    known = [(f, f"{f.lower()}-{i}") for i in range(20_000) for f in ("FIRSTNAME", "EXTERNALID")]
    known.append(("LASTNAME", "Straße"))
    clean = redactor(known)
    assert (
        clean("row FIRSTNAME-19999 (externalid-7) x@y.io")
        == "row <FIRSTNAME> (<EXTERNALID>) <email>"
    )
    assert clean("externalid-70 firstname-1x STRASSE straße") == (
        "<EXTERNALID> firstname-1x STRASSE <LASTNAME>"
    )
    assert clean("nothing personal") == "nothing personal"
