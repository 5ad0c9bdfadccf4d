-- Take resolved, pending requests out of the warehouse: every partition of the source tables, the
-- derived tables and the current-state tables. `delete` requests delete (restricted copies too);
-- `suppress` requests move source rows to restricted_<table> (kept, never processed) and drop the
-- derived ones. Values are matched as the warehouse holds them (erasure_subjects came from it).
-- Two steps in one session (erasure.remove_from_warehouse): step "remove" takes the rows out;
-- step "log" records the outcome once the run exports were rewritten too (status done, or failed
-- with its detail). Until then the requests stay waiting and the next run does it again: every
-- statement here finds nothing the second time.
{% import "privacy/_macros.sql" as p %}
{% if step == "log" %}
CREATE OR REPLACE TEMP TABLE warehouse_outcome AS
SELECT r.request_id, {{ status | literal }} AS status,
{% if status == "done" %}
       CASE WHEN r.type = 'delete' THEN 'deleted' ELSE 'restricted' END || ' with '
           || (SELECT count(*) FROM removal_requests) || ' request(s): '
           || coalesce((SELECT sum(rows_removed) FROM erasure_report), 0)
           || ' row(s), {{ exported | int }} run export row(s)'
{% else %}
       {{ detail | literal }}
{% endif %}
           AS detail,
       coalesce(l.attempts, 0) + 1 AS attempts,
       coalesce(l.first_at, CAST(current_timestamp AS TIMESTAMP)) AS first_at
FROM removal_requests r
LEFT JOIN erasure_log l ON l.request_id = r.request_id AND l.destination = 'warehouse';
DELETE FROM erasure_log
WHERE destination = 'warehouse' AND request_id IN (SELECT request_id FROM removal_requests);
INSERT INTO erasure_log (request_id, destination, status, detail, attempts, first_at, updated_at)
SELECT request_id, 'warehouse', status, detail, attempts, first_at, CAST(current_timestamp AS TIMESTAMP)
FROM warehouse_outcome;
{% else %}
CREATE OR REPLACE TEMP TABLE erasure_report (source VARCHAR, rows_removed BIGINT);
CREATE OR REPLACE TEMP TABLE removal_requests AS
SELECT r.request_id, r.type FROM erasure_requests r
WHERE r.status = 'pending' AND r.resolved_at IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM erasure_log l
      WHERE l.request_id = r.request_id AND l.destination = 'warehouse' AND l.status = 'done'
  );
CREATE OR REPLACE TEMP TABLE removal_values AS
SELECT s.identifier_type, s.identifier_value AS value,
       max(CASE WHEN r.type = 'delete' THEN 1 ELSE 0 END) = 1 AS erase
FROM erasure_subjects s JOIN removal_requests r USING (request_id)
WHERE s.identifier_value IS NOT NULL  -- a row with a profile id alone (requests.sql)
GROUP BY s.identifier_type, s.identifier_value;
CREATE OR REPLACE TEMP TABLE removal_profiles AS
SELECT DISTINCT s.profile_id FROM erasure_subjects s JOIN removal_requests r USING (request_id)
WHERE s.profile_id IS NOT NULL;

{% set v = "removal_values" %}
{% set form_rows = p.listed("email", "email", v) ~ " OR " ~ p.listed("session_id", "session_id", v) %}
{% set form_erase = p.listed("email", "email", v, true) ~ " OR " ~ p.listed("session_id", "session_id", v, true) %}
{% set identity_rows = form_rows ~ " OR " ~ p.listed("external_id", "external_id", v) %}
{% set identity_erase = form_erase ~ " OR " ~ p.listed("external_id", "external_id", v, true) %}
{% set session_rows = p.listed("session_id", "session_id", v) %}
{% set session_erase = p.listed("session_id", "session_id", v, true) %}
{{ p.restrict_or_delete("form_entries", form_rows, form_erase, "erasure_report") }}
{{ p.restrict_or_delete("identities", identity_rows, identity_erase, "erasure_report") }}
{{ p.restrict_or_delete("interactions", session_rows, session_erase, "erasure_report") }}
{{ p.delete_counted("interactions_enriched", session_rows, "erasure_report") }}
-- Rows kept for an earlier suppress request go too when a delete request names them, or when
-- the suppression list names them for deletion: by hash, as a finished request keeps no plain
-- value (a delete after a suppress takes over the person's entries, requests.sql).
{% macro listed_as(kind, column, identifier_type) -%}
{{ p.on_list("'" ~ identifier_type ~ "'", column, " AND kind = '" ~ kind ~ "'") }}
{%- endmacro %}
{% macro delete_listed(column, identifier_type) %}{{ listed_as("delete", column, identifier_type) }}{% endmacro %}
{#- A session is a device: a restricted row whose person is on the list only as `suppress` (its
    email or SSO id) is theirs, kept, even when a delete names its session (someone who used the
    same kiosk later and asked to be deleted). -#}
{% macro suppress_listed(column, identifier_type) %}{{ listed_as("suppress", column, identifier_type) }}{% endmacro %}
{% set session_deleted = "(" ~ p.listed("session_id", "session_id", v, true) ~ " OR " ~ delete_listed("session_id", "session_id") ~ ")" %}
{% set email_deleted = p.listed("email", "email", v, true) ~ " OR " ~ delete_listed("email", "email") %}
{{ p.delete_counted("restricted_form_entries",
    email_deleted ~ " OR (" ~ session_deleted ~ " AND NOT " ~ suppress_listed("email", "email") ~ ")", "erasure_report") }}
{{ p.delete_counted("restricted_identities",
    email_deleted ~ " OR " ~ p.listed("external_id", "external_id", v, true) ~ " OR " ~ delete_listed("external_id", "external_id")
    ~ " OR (" ~ session_deleted ~ " AND NOT " ~ suppress_listed("external_id", "external_id")
    ~ " AND NOT coalesce(" ~ suppress_listed("email", "email") ~ ", false))", "erasure_report") }}
{{ p.delete_counted("restricted_interactions",
    session_erase ~ " OR " ~ delete_listed("session_id", "session_id"), "erasure_report") }}

-- Quarantine rows naming any of the values as a whole token (an email whatever its case, a
-- session or SSO id exactly); restricted ones also when a token's hash is listed for deletion.
CREATE OR REPLACE TEMP TABLE removal_quarantine AS
SELECT DISTINCT t.src, t.raw, v.erase
FROM ({{ p.tokens("src, raw", "(SELECT 'quarantine' AS src, raw FROM quarantine UNION SELECT 'restricted', raw FROM restricted_quarantine) q", engine) }}) t
JOIN removal_values v
  ON lower(v.value) = lower(t.token) AND (v.identifier_type = 'email' OR v.value = t.token)
UNION
SELECT DISTINCT t.src, t.raw, true
FROM ({{ p.tokens("src, raw", "(SELECT 'restricted' AS src, raw FROM restricted_quarantine) q", engine) }}) t
WHERE {{ p.token_on_list("t.token", " AND kind = 'delete'") }};
{% set quarantined = "raw IN (SELECT raw FROM removal_quarantine WHERE src = 'quarantine'" %}
{{ p.restrict_or_delete("quarantine", quarantined ~ ")", quarantined ~ " AND erase)", "erasure_report") }}
{{ p.delete_counted("restricted_quarantine", "raw IN (SELECT raw FROM removal_quarantine WHERE src = 'restricted' AND erase)", "erasure_report") }}

-- Current-state and history tables built from the sources (the next build rebuilds them without
-- these people).
{% for table in current_tables %}
{{ p.delete_counted(table, "profile_id IN (SELECT profile_id FROM removal_profiles)", "erasure_report") }}
{% endfor %}
{% if has_merges %}
{{ p.delete_counted("profile_merges",
    "merged_profile_id IN (SELECT profile_id FROM removal_profiles) OR surviving_profile_id IN (SELECT profile_id FROM removal_profiles) OR identifier_type || ':' || identifier_value IN (SELECT identifier_type || ':' || value FROM removal_values)",
    "erasure_report") }}
{% endif %}
{% if has_audit %}
{{ p.delete_counted("identity_link_audit",
    "left_type || ':' || left_value IN (SELECT identifier_type || ':' || value FROM removal_values) OR right_type || ':' || right_value IN (SELECT identifier_type || ':' || value FROM removal_values)",
    "erasure_report") }}
{% endif %}
{% if has_stream %}
-- What the stream attached to these profiles since the last daily publish (stream.py's state).
{{ p.delete_counted("stream_identifiers",
    "profile_id IN (SELECT profile_id FROM removal_profiles) OR identifier_type || ':' || identifier_value IN (SELECT identifier_type || ':' || value FROM removal_values)",
    "erasure_report") }}
{% endif %}
{% if has_stream_shared %}
{{ p.delete_counted("stream_shared_sessions",
    "'session_id:' || session_id IN (SELECT identifier_type || ':' || value FROM removal_values)",
    "erasure_report") }}
{% endif %}
{% endif %}
