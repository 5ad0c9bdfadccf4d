-- Suppression of one landing partition (dt = ds), right after validation: rows of people on the
-- suppression list leave the source tables before anything is built or exported from them.
-- Rows of a `suppress` request move to restricted_<table> (kept, never processed); rows of a
-- `delete` request are deleted. A session seen in this partition only with suppressed emails or
-- external_ids is that person's device: it joins the list, and its interactions (all partitions)
-- go too. A session also linked to someone not suppressed is shared and stays. docs/privacy.md
{% import "privacy/_macros.sql" as p %}
{% set day = "DATE '" ~ ds ~ "'" %}
CREATE OR REPLACE TEMP TABLE suppression_report (source VARCHAR, rows_removed BIGINT);

-- Suppressed values present in the partition; erase: some request asks to delete them.
CREATE OR REPLACE TEMP TABLE suppressed_values AS
WITH present AS (
    SELECT 'email' AS identifier_type, email AS value FROM form_entries WHERE dt = {{ day }}
    UNION SELECT 'session_id', session_id FROM form_entries WHERE dt = {{ day }}
    UNION SELECT 'email', email FROM identities WHERE dt = {{ day }}
    UNION SELECT 'external_id', external_id FROM identities WHERE dt = {{ day }}
    UNION SELECT 'session_id', session_id FROM identities WHERE dt = {{ day }}
    UNION SELECT 'session_id', session_id FROM interactions WHERE dt = {{ day }}
)
SELECT v.identifier_type, v.value, max(CASE WHEN s.kind = 'delete' THEN 1 ELSE 0 END) = 1 AS erase,
       min(s.request_id) AS request_id
FROM present v
JOIN suppression_list s
  ON s.identifier_type = v.identifier_type AND s.identifier_hash = {{ p.hashed("v.value") }}
GROUP BY v.identifier_type, v.value;

-- Sessions this partition links to a suppressed email or external_id...
CREATE OR REPLACE TEMP TABLE linked_sessions AS
WITH links AS (
    SELECT session_id, 'email' AS identifier_type, email AS value FROM form_entries WHERE dt = {{ day }}
    UNION ALL SELECT session_id, 'external_id', external_id FROM identities WHERE dt = {{ day }}
    UNION ALL SELECT session_id, 'email', email FROM identities WHERE dt = {{ day }}
)
SELECT l.session_id, max(CASE WHEN v.erase THEN 1 ELSE 0 END) = 1 AS erase,
       min(v.request_id) AS request_id
FROM links l
JOIN suppressed_values v ON v.identifier_type = l.identifier_type AND v.value = l.value
WHERE NOT EXISTS (
    SELECT 1 FROM suppressed_values s WHERE s.identifier_type = 'session_id' AND s.value = l.session_id
)
GROUP BY l.session_id;
-- ...unless any partition also links it to someone who is not suppressed (a shared device).
DELETE FROM linked_sessions WHERE session_id IN (
    SELECT l.session_id FROM (
        SELECT session_id, 'email' AS identifier_type, email AS value FROM form_entries
        WHERE session_id IN (SELECT session_id FROM linked_sessions)
        UNION ALL SELECT session_id, 'external_id', external_id FROM identities
        WHERE session_id IN (SELECT session_id FROM linked_sessions)
        UNION ALL SELECT session_id, 'email', email FROM identities
        WHERE email IS NOT NULL AND session_id IN (SELECT session_id FROM linked_sessions)
    ) l
    WHERE NOT EXISTS (
        SELECT 1 FROM suppression_list s
        WHERE s.identifier_type = l.identifier_type AND s.identifier_hash = {{ p.hashed("l.value") }}
    )
);
INSERT INTO suppression_list
SELECT 'session_id', {{ p.hashed("session_id") }}, CASE WHEN erase THEN 'delete' ELSE 'suppress' END,
       request_id, CAST(current_timestamp AS TIMESTAMP)
FROM linked_sessions;
INSERT INTO suppressed_values SELECT 'session_id', session_id, erase, request_id FROM linked_sessions;

{% set v = "suppressed_values" %}
{{ p.restrict_or_delete("form_entries",
    "dt = " ~ day ~ " AND (" ~ p.listed("email", "email", v) ~ " OR " ~ p.listed("session_id", "session_id", v) ~ ")",
    p.listed("email", "email", v, true) ~ " OR " ~ p.listed("session_id", "session_id", v, true),
    "suppression_report") }}
{{ p.restrict_or_delete("identities",
    "dt = " ~ day ~ " AND (" ~ p.listed("email", "email", v) ~ " OR " ~ p.listed("external_id", "external_id", v)
        ~ " OR " ~ p.listed("session_id", "session_id", v) ~ ")",
    p.listed("email", "email", v, true) ~ " OR " ~ p.listed("external_id", "external_id", v, true)
        ~ " OR " ~ p.listed("session_id", "session_id", v, true),
    "suppression_report") }}
{% set session_rows = p.listed("session_id", "session_id", v)
    ~ " AND (dt = " ~ day ~ " OR session_id IN (SELECT session_id FROM linked_sessions))" %}
{{ p.restrict_or_delete("interactions", session_rows, p.listed("session_id", "session_id", v, true),
    "suppression_report") }}
{{ p.delete_counted("interactions_enriched", session_rows, "suppression_report") }}

-- Quarantine rows carrying a suppressed identifier anywhere in their raw text.
CREATE OR REPLACE TEMP TABLE suppressed_quarantine AS
SELECT t.source, t.raw, max(CASE WHEN s.kind = 'delete' THEN 1 ELSE 0 END) = 1 AS erase
FROM ({{ p.tokens("source, raw", "quarantine WHERE dt = " ~ day, engine) }}) t
JOIN suppression_list s ON s.identifier_hash = {{ p.hashed("t.token") }}
GROUP BY t.source, t.raw;
{% set quarantined = "EXISTS (SELECT 1 FROM suppressed_quarantine q WHERE q.source = quarantine.source AND q.raw = quarantine.raw" %}
{{ p.restrict_or_delete("quarantine", "dt = " ~ day ~ " AND " ~ quarantined ~ ")", quarantined ~ " AND q.erase)",
    "suppression_report") }}
