-- The identity history around a micro-batch, as {{ rs }}.form_entries and {{ rs }}.identities:
-- every form entry and SSO identity sharing a session, email or external id with the batch
-- (the batch included; it is already merged into {{ home }}). identity/links.sql then runs on
-- these, so identity.yml's limits (shared devices, one SSO account per session) count a
-- session's whole history, not just the batch. A value identity.yml blocks (an SSO platform's
-- "null" email, test@test.com) links nothing, so it brings in no history: through it, every
-- batch re-sent every profile whose rows carried it.
{% import "identity/_macros.sql" as idm with context %}
CREATE OR REPLACE TABLE {{ rs }}.batch_identifiers AS
SELECT t, v FROM (
    SELECT 'session_id' AS t, session_id AS v FROM {{ bs }}.form_entries
    UNION SELECT 'email', email FROM {{ bs }}.form_entries
    UNION SELECT 'session_id', session_id FROM {{ bs }}.identities
    UNION SELECT 'external_id', external_id FROM {{ bs }}.identities
    UNION SELECT 'email', email FROM {{ bs }}.identities WHERE email IS NOT NULL
) batch
WHERE CASE t
{%- for type in ("session_id", "email", "external_id") %}
      WHEN '{{ type }}' THEN {{ idm.blocked(type, "v") }} IS NULL
{%- endfor %}
      END;

CREATE OR REPLACE TABLE {{ rs }}.form_entries AS
SELECT f.* FROM {{ home }}.form_entries f
WHERE f.session_id IN (SELECT v FROM {{ rs }}.batch_identifiers WHERE t = 'session_id')
   OR f.email IN (SELECT v FROM {{ rs }}.batch_identifiers WHERE t = 'email');

CREATE OR REPLACE TABLE {{ rs }}.identities AS
SELECT i.* FROM {{ home }}.identities i
WHERE i.session_id IN (SELECT v FROM {{ rs }}.batch_identifiers WHERE t = 'session_id')
   OR i.external_id IN (SELECT v FROM {{ rs }}.batch_identifiers WHERE t = 'external_id')
   OR i.email IN (SELECT v FROM {{ rs }}.batch_identifiers WHERE t = 'email');
