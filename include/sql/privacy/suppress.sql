-- Suppression of one landing partition (dt = ds), right after validation: rows of people on the
-- suppression list leave the source tables before anything is built or exported from them.
-- Rows of a `suppress` request move to restricted_<table> (kept, never processed); rows of a
-- `delete` request are deleted. docs/privacy.md, "Suppression in every run".
--
-- Run in three steps (privacy/suppression.py): `people` finds the listed emails and external ids
-- on the partition's rows, `grow` (repeated until it finds nothing new) adds the other email or
-- external id of every SSO row carrying one of them (the same person's), `apply` does the rest in
-- one script.
--
-- People are emails and external ids; a session is a device, which people may share. A session
-- on the list covers the rows that carry no one else: from the first landing date on which a
-- form entry or SSO row puts a usable email or external id that is not on the list on it (it is
-- "claimed"), its rows are that person's and stay. The claim date comes from the data (every
-- partition), so re-running a date gives the same result, and a row carrying a listed identifier
-- goes whatever the session. A session a request names itself is the requester's word: it
-- covers all its rows. A usable session this partition links to a listed person and that nobody
-- else claimed by ds joins the list, and its interactions of every partition before its claim
-- go too (a form entry claims a session's history).
--
-- Parameters: ds; home, the schema holding the warehouse's history and erasure_requests (a
-- stream batch runs in a scratch schema); the identity rules (identity.IdentityRules.sql_params)
-- that say which values are identifiers at all.
{% import "privacy/_macros.sql" as p %}
{% set day = "DATE '" ~ ds ~ "'" %}
{% import "identity/_macros.sql" as idm with context %}
{#- A value the identity graph would take as an identifier of this type: identity's own value
    rules, on the value normalised (a quarantined line's word is not trimmed or lower-cased). -#}
{% macro usable(type, value) -%}
({{ idm.blocked(type, p.normalised(value)) }} IS NULL)
{%- endmacro %}
{% if step == "people" %}
-- Listed people on the partition's rows, as the rows spell them; erase: 1 if some request asks
-- to delete them.
CREATE OR REPLACE TEMP TABLE person_values AS
WITH present AS (
    SELECT 'email' AS identifier_type, email AS value FROM form_entries WHERE dt = {{ day }}
    UNION SELECT 'email', email FROM identities WHERE dt = {{ day }}
    UNION SELECT 'external_id', external_id FROM identities WHERE dt = {{ day }}
)
SELECT v.identifier_type, v.value, max(CASE WHEN s.kind = 'delete' THEN 1 ELSE 0 END) AS erase,
       min(s.request_id) AS request_id
FROM present v
JOIN suppression_list s
  ON s.identifier_type = v.identifier_type AND s.identifier_hash = {{ p.hashed("v.value") }}
 AND {{ p.exactly("s", "v.identifier_type", "v.value") }}
GROUP BY v.identifier_type, v.value;
{% elif step == "grow" %}
-- An SSO row carrying a listed email or external id is that person's: so are its other usable
-- email and external id (with the same action). person_grown: what this round added or turned
-- into a delete; the caller repeats the step until it is empty.
CREATE OR REPLACE TEMP TABLE person_grown AS
WITH hits AS (
    SELECT i.email, i.external_id, max(v.erase) AS erase, min(v.request_id) AS request_id
    FROM identities i
    JOIN person_values v
      ON (v.identifier_type = 'email' AND v.value = i.email)
      OR (v.identifier_type = 'external_id' AND v.value = i.external_id)
    WHERE i.dt = {{ day }}
    GROUP BY i.email, i.external_id
), candidates AS (
    SELECT 'email' AS identifier_type, email AS value, max(erase) AS erase, min(request_id) AS request_id
    FROM hits WHERE {{ usable("email", "email") }}
    GROUP BY email
    UNION ALL
    SELECT 'external_id', external_id, max(erase), min(request_id)
    FROM hits WHERE {{ usable("external_id", "external_id") }}
    GROUP BY external_id
)
SELECT c.identifier_type, c.value, c.erase, c.request_id
FROM candidates c
LEFT JOIN person_values v ON v.identifier_type = c.identifier_type AND v.value = c.value
WHERE v.value IS NULL OR v.erase < c.erase;
DELETE FROM person_values WHERE EXISTS (
    SELECT 1 FROM person_grown g
    WHERE g.identifier_type = person_values.identifier_type AND g.value = person_values.value
);
INSERT INTO person_values SELECT identifier_type, value, erase, request_id FROM person_grown;
{% else %}
CREATE OR REPLACE TEMP TABLE suppression_report (source VARCHAR, rows_removed BIGINT);

-- The identifiers found to be a listed person's join the list.
INSERT INTO suppression_list
SELECT DISTINCT v.identifier_type, v.identifier_hash, v.kind, v.request_id,
       CAST(current_timestamp AS TIMESTAMP), v.exact_hash
FROM (
    SELECT identifier_type, {{ p.hashed("value") }} AS identifier_hash,
           CASE WHEN erase = 1 THEN 'delete' ELSE 'suppress' END AS kind, request_id,
           {{ p.exact_hashed("identifier_type", "value") }} AS exact_hash
    FROM person_values
) v
LEFT JOIN (SELECT DISTINCT identifier_type, identifier_hash, kind, exact_hash FROM suppression_list) s
  ON s.identifier_type = v.identifier_type AND s.identifier_hash = v.identifier_hash AND s.kind = v.kind
 AND {{ p.exact_match("s", "v.exact_hash") }}
WHERE s.identifier_hash IS NULL;

-- Listed sessions of the partition...
CREATE OR REPLACE TEMP TABLE listed_sessions AS
WITH present AS (
    SELECT session_id FROM form_entries WHERE dt = {{ day }}
    UNION SELECT session_id FROM identities WHERE dt = {{ day }}
    UNION SELECT session_id FROM interactions WHERE dt = {{ day }}
)
SELECT v.session_id, max(CASE WHEN s.kind = 'delete' THEN 1 ELSE 0 END) AS erase,
       min(s.request_id) AS request_id, 0 AS derived
FROM present v
JOIN suppression_list s
  ON s.identifier_type = 'session_id' AND s.identifier_hash = {{ p.hashed("v.session_id") }}
 AND {{ p.exactly("s", "'session_id'", "v.session_id") }}
GROUP BY v.session_id;
-- ...and usable sessions the partition links to a listed person, not listed yet.
INSERT INTO listed_sessions
SELECT l.session_id, max(v.erase), min(v.request_id), 1
FROM (
    SELECT session_id, 'email' AS identifier_type, email AS value FROM form_entries WHERE dt = {{ day }}
    UNION SELECT session_id, 'email', email FROM identities WHERE dt = {{ day }}
    UNION SELECT session_id, 'external_id', external_id FROM identities WHERE dt = {{ day }}
) l
JOIN person_values v ON v.identifier_type = l.identifier_type AND v.value = l.value
WHERE {{ usable("session_id", "l.session_id") }}
  AND l.session_id NOT IN (SELECT session_id FROM listed_sessions)
GROUP BY l.session_id;
-- The first landing date on which someone not on the list claimed each of these sessions: a
-- form entry or SSO row with a usable email or external id that is not listed. Every partition
-- of the warehouse, and this one as validated (in a stream batch, the scratch schema).
CREATE OR REPLACE TEMP TABLE session_claims AS
WITH links AS (
{% for schema in [home ~ ".", ""] %}
    SELECT dt, session_id, 'email' AS identifier_type, email AS value FROM {{ schema }}form_entries
    WHERE session_id IN (SELECT session_id FROM listed_sessions){{ " AND dt = " ~ day if not schema }}
    UNION ALL
    SELECT dt, session_id, 'email', email FROM {{ schema }}identities
    WHERE email IS NOT NULL AND session_id IN (SELECT session_id FROM listed_sessions){{ " AND dt = " ~ day if not schema }}
    UNION ALL
    SELECT dt, session_id, 'external_id', external_id FROM {{ schema }}identities
    WHERE session_id IN (SELECT session_id FROM listed_sessions){{ " AND dt = " ~ day if not schema }}
    {{ "UNION ALL" if loop.first }}
{% endfor %}
)
SELECT l.session_id, min(l.dt) AS claimed_from
FROM (
    SELECT dt, session_id, identifier_type, {{ p.hashed("value") }} AS identifier_hash,
           {{ p.exact_hashed("identifier_type", "value") }} AS exact_hash
    FROM links
    WHERE (identifier_type = 'email' AND {{ usable("email", "value") }})
       OR (identifier_type = 'external_id' AND {{ usable("external_id", "value") }})
) l
LEFT JOIN (SELECT DISTINCT identifier_type, identifier_hash, exact_hash FROM suppression_list) s
  ON s.identifier_type = l.identifier_type AND s.identifier_hash = l.identifier_hash
 AND {{ p.exact_match("s", "l.exact_hash") }}
WHERE s.identifier_hash IS NULL
GROUP BY l.session_id;

-- A session someone else claimed by ds is shared: not derived. The others join the list.
DELETE FROM listed_sessions
WHERE derived = 1 AND session_id IN (SELECT session_id FROM session_claims WHERE claimed_from <= {{ day }});
INSERT INTO suppression_list
SELECT 'session_id', {{ p.hashed("session_id") }}, CASE WHEN erase = 1 THEN 'delete' ELSE 'suppress' END,
       request_id, CAST(current_timestamp AS TIMESTAMP), {{ p.exact_hashed("'session_id'", "session_id") }}
FROM listed_sessions WHERE derived = 1;

-- Sessions a valid request names itself.
CREATE OR REPLACE TEMP TABLE named_sessions AS
SELECT DISTINCT identifier_hash, exact_hash FROM {{ home }}.erasure_requests
WHERE identifier_type = 'session_id' AND status <> 'invalid';

-- What each session covers: rows up to the day before its claim (named: every row). covered: on
-- this partition; derived sessions also take their earlier (and backfilled) interactions.
CREATE OR REPLACE TEMP TABLE covered_sessions AS
SELECT l.session_id, l.erase, l.derived,
       CASE WHEN n.identifier_hash IS NULL THEN c.claimed_from END AS claimed_from,
       CASE WHEN n.identifier_hash IS NOT NULL OR c.claimed_from IS NULL OR c.claimed_from > {{ day }}
            THEN 1 ELSE 0 END AS covered
FROM listed_sessions l
LEFT JOIN session_claims c ON c.session_id = l.session_id
LEFT JOIN named_sessions n
  ON l.derived = 0 AND n.identifier_hash = {{ p.hashed("l.session_id") }}
 AND {{ p.exactly("n", "'session_id'", "l.session_id") }};

{% set covered = "session_id IN (SELECT session_id FROM covered_sessions WHERE covered = 1)" %}
{% set covered_erase = "session_id IN (SELECT session_id FROM covered_sessions WHERE covered = 1 AND erase = 1)" %}
{% macro person(column, type, erase_only=false) -%}
{{ column }} IN (SELECT value FROM person_values WHERE identifier_type = '{{ type }}'{{ " AND erase = 1" if erase_only }})
{%- endmacro %}
{#- A row of a listed person goes as that person asked (a `suppress` keeps it), even on a session
    a delete names: the session is a device, the row is the person's (as erase_warehouse.sql). -#}
{{ p.restrict_or_delete("form_entries",
    "dt = " ~ day ~ " AND (" ~ person("email", "email") ~ " OR " ~ covered ~ ")",
    person("email", "email", true) ~ " OR (" ~ covered_erase ~ " AND NOT " ~ person("email", "email") ~ ")",
    "suppression_report") }}
{{ p.restrict_or_delete("identities",
    "dt = " ~ day ~ " AND (" ~ person("email", "email") ~ " OR " ~ person("external_id", "external_id")
        ~ " OR " ~ covered ~ ")",
    person("email", "email", true) ~ " OR " ~ person("external_id", "external_id", true)
        ~ " OR (" ~ covered_erase ~ " AND NOT coalesce(" ~ person("email", "email") ~ ", false) AND NOT "
        ~ person("external_id", "external_id") ~ ")",
    "suppression_report") }}
-- Interactions carry no person: their session decides, by their own landing date
-- (interactions_enriched holds the same rows, enriched).
CREATE OR REPLACE TEMP TABLE covered_days AS
SELECT DISTINCT i.dt, i.session_id, c.erase
FROM interactions i
JOIN covered_sessions c ON c.session_id = i.session_id
WHERE (c.covered = 1 AND i.dt = {{ day }})
   OR (c.derived = 1 AND (c.claimed_from IS NULL OR i.dt < c.claimed_from));
{% macro session_rows(erase_only=false) -%}
session_id IN (SELECT session_id FROM covered_days)
AND CAST(dt AS VARCHAR) || ':' || session_id IN (
    SELECT CAST(dt AS VARCHAR) || ':' || session_id FROM covered_days{{ " WHERE erase = 1" if erase_only }})
{%- endmacro %}
{{ p.restrict_or_delete("interactions", session_rows(), session_rows(true), "suppression_report") }}
{{ p.delete_counted("interactions_enriched", session_rows(), "suppression_report") }}

-- Quarantine rows naming a listed email or external id anywhere in their raw text, or a listed
-- session unless they also name an email not on the list (someone else's line) and the session
-- is not one a request names itself.
CREATE OR REPLACE TEMP TABLE quarantine_tokens AS
SELECT DISTINCT t.source, t.raw, t.token, {{ p.hashed("t.token") }} AS token_hash
FROM ({{ p.tokens("source, raw", "quarantine WHERE dt = " ~ day, engine) }}) t;
CREATE OR REPLACE TEMP TABLE suppressed_quarantine AS
SELECT t.source, t.raw, max(CASE WHEN s.kind = 'delete' THEN 1 ELSE 0 END) = 1 AS erase,
       max(CASE WHEN s.identifier_type = 'session_id' THEN 0 ELSE 1 END) AS names_person
FROM quarantine_tokens t
JOIN suppression_list s
  ON s.identifier_hash = t.token_hash AND {{ p.exactly("s", "s.identifier_type", "t.token") }}
GROUP BY t.source, t.raw;
DELETE FROM suppressed_quarantine
WHERE names_person = 0
  AND EXISTS (
      SELECT 1 FROM quarantine_tokens t
      WHERE t.source = suppressed_quarantine.source AND t.raw = suppressed_quarantine.raw
        AND {{ usable("email", "t.token") }}
        AND t.token_hash NOT IN (SELECT identifier_hash FROM suppression_list WHERE identifier_type = 'email')
  )
  AND NOT EXISTS (
      SELECT 1 FROM quarantine_tokens t
      WHERE t.source = suppressed_quarantine.source AND t.raw = suppressed_quarantine.raw
        AND EXISTS (
            SELECT 1 FROM named_sessions n
            WHERE n.identifier_hash = t.token_hash AND {{ p.exactly("n", "'session_id'", "t.token") }}
        )
  );
{% set quarantined = "EXISTS (SELECT 1 FROM suppressed_quarantine q WHERE q.source = quarantine.source AND q.raw = quarantine.raw" %}
{{ p.restrict_or_delete("quarantine", "dt = " ~ day ~ " AND " ~ quarantined ~ ")", quarantined ~ " AND q.erase)",
    "suppression_report") }}
{% endif %}
