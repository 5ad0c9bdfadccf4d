-- Type-check signed-in SSO links (session_id -- external_id, optionally an email and names).
-- The email is not checked here: an SSO platform's placeholder ("null", "n/a") or malformed
-- email must not cost the login its link. The identity rules leave such an email out of every
-- profile and write its link to identity_link_audit (docs/identity.md, "Blocked values").
{% import "validate/_macros.sql" as v with context %}
{% set columns = ["observed_at", "session_id", "external_id", "email", "first_name", "last_name"] %}
CREATE OR REPLACE TEMP TABLE checked_identities AS
SELECT *, {{ v.reasons(["_error", v.timestamp("observed_at", landed=ds), v.required("session_id"),
                        v.required("external_id")], columns) }} AS reason
FROM {{ v.trimmed_rows(v.staged_rows(staged), columns) }};

DELETE FROM identities WHERE {{ v.replaced(ds) }};
INSERT INTO identities
SELECT DATE '{{ ds }}', {{ v.utc_timestamp("observed_at") }},
       session_id, external_id,
       NULLIF(lower(email), ''),
       NULLIF(first_name, ''), NULLIF(last_name, ''),
       _file, _line
FROM checked_identities WHERE reason IS NULL;

DELETE FROM quarantine WHERE {{ v.replaced(ds, "file") }} AND source = 'identities';
INSERT INTO quarantine
SELECT DATE '{{ ds }}', 'identities', _file, _line, reason, {{ v.raw_text("_raw") }}
FROM checked_identities WHERE reason IS NOT NULL;
