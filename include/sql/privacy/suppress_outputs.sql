-- Belt and braces before publishing: profiles the suppression list names (through any of their
-- identifiers) leave the run's snapshot tables, so no export and no current table carries them.
-- The source tables were filtered after validation; this catches a request filed while the run
-- was being built.
{% import "privacy/_macros.sql" as p %}
CREATE OR REPLACE TEMP TABLE run_suppressed_profiles AS
SELECT DISTINCT pi.profile_id
FROM {{ rs }}.profile_identifiers pi
JOIN suppression_list s
  ON s.identifier_type = pi.identifier_type AND s.identifier_hash = {{ p.hashed("pi.identifier_value") }};
{% for table in profile_tables %}
DELETE FROM {{ rs }}.{{ table }} WHERE profile_id IN (SELECT profile_id FROM run_suppressed_profiles);
{% endfor %}
{% if has_merges %}
DELETE FROM {{ rs }}.profile_merges
WHERE merged_profile_id IN (SELECT profile_id FROM run_suppressed_profiles)
   OR surviving_profile_id IN (SELECT profile_id FROM run_suppressed_profiles);
{% endif %}
{% if has_audit %}
-- Rejected links name identifiers directly (no profile): match them by hash.
DELETE FROM {{ rs }}.identity_link_audit
WHERE left_type || ':' || {{ p.hashed("left_value") }} IN (SELECT identifier_type || ':' || identifier_hash FROM suppression_list)
   OR right_type || ':' || {{ p.hashed("right_value") }} IN (SELECT identifier_type || ':' || identifier_hash FROM suppression_list);
{% endif %}
