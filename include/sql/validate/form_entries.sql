-- Type-check form entries. Emails are kept normalised (trim + lower-case: the matching key) and
-- as entered (email_raw). Opt-ins are explicit Yes/No or empty (no statement); anything else is
-- quarantined rather than guessed, since consent must never be inferred.
{% import "validate/_macros.sql" as v with context %}
{% set columns = ["entry_datetime", "first_name", "last_name", "email", "optin_1", "optin_2", "accept_terms",
                  "session_id", "form_name", "form_id"] %}
CREATE OR REPLACE TEMP TABLE checked_form_entries AS
SELECT *, {{ v.reasons(["_error", v.timestamp("entry_datetime", landed=ds), v.required("session_id"),
                        v.email("email"), v.yes_no("optin_1"), v.yes_no("optin_2"),
                        v.yes_no("accept_terms"), v.integer("form_id", required=false)], columns) }} AS reason
FROM {{ v.trimmed_rows(v.staged_rows(staged), columns, as_entered=["email"]) }};

DELETE FROM form_entries WHERE {{ v.replaced(ds) }};
INSERT INTO form_entries
SELECT DATE '{{ ds }}', {{ v.utc_timestamp("entry_datetime") }},
       NULLIF(first_name, ''), NULLIF(last_name, ''),
       lower(email), email_as_entered,
       {{ v.to_bool("optin_1") }}, {{ v.to_bool("optin_2") }}, {{ v.to_bool("accept_terms") }},
       session_id, NULLIF(form_name, ''),
       CAST(NULLIF(form_id, '') AS INTEGER),
       _file, _line
FROM checked_form_entries WHERE reason IS NULL;

DELETE FROM quarantine WHERE {{ v.replaced(ds, "file") }} AND source = 'form_entries';
INSERT INTO quarantine
SELECT DATE '{{ ds }}', 'form_entries', _file, _line, reason, {{ v.raw_text("_raw") }}
FROM checked_form_entries WHERE reason IS NOT NULL;
