-- Belt and braces before publishing: profiles the suppression list names leave the run's
-- snapshot tables, so no export and no current table carries them.
-- The source tables were filtered after validation; this catches a request filed while the run
-- was being built.
{% import "privacy/_macros.sql" as p %}
-- A profile is named through a listed email or external id, or a session a request names itself;
-- through any other listed session only when no email or external id of the profile is unlisted
-- (a session covers no one else: docs/privacy.md).
CREATE OR REPLACE TEMP TABLE run_hit_identifiers AS
SELECT pi.profile_id, pi.identifier_type, {{ p.hashed("pi.identifier_value") }} AS identifier_hash,
       {{ p.exact_hashed("pi.identifier_type", "pi.identifier_value") }} AS exact_hash
FROM {{ rs }}.profile_identifiers pi
WHERE pi.profile_id IN (
    SELECT hit.profile_id FROM {{ rs }}.profile_identifiers hit
    JOIN suppression_list s
      ON s.identifier_type = hit.identifier_type AND s.identifier_hash = {{ p.hashed("hit.identifier_value") }}
     AND {{ p.exactly("s", "hit.identifier_type", "hit.identifier_value") }}
);
CREATE OR REPLACE TEMP TABLE run_suppressed_profiles AS
SELECT i.profile_id
FROM run_hit_identifiers i
LEFT JOIN (SELECT DISTINCT identifier_type, identifier_hash, exact_hash FROM suppression_list) l
  ON l.identifier_type = i.identifier_type AND l.identifier_hash = i.identifier_hash
 AND {{ p.exact_match("l", "i.exact_hash") }}
LEFT JOIN (
    SELECT DISTINCT identifier_hash, exact_hash FROM erasure_requests
    WHERE identifier_type = 'session_id' AND status <> 'invalid'
) n ON i.identifier_type = 'session_id' AND n.identifier_hash = i.identifier_hash
 AND {{ p.exact_match("n", "i.exact_hash") }}
GROUP BY i.profile_id
HAVING max(CASE WHEN l.identifier_hash IS NOT NULL
                 AND (i.identifier_type <> 'session_id' OR n.identifier_hash IS NOT NULL) THEN 1 ELSE 0 END) = 1
    OR max(CASE WHEN l.identifier_hash IS NULL AND i.identifier_type <> 'session_id' THEN 1 ELSE 0 END) = 0;
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
WHERE {{ p.on_list("left_type", "left_value") }} OR {{ p.on_list("right_type", "right_value") }};
{% endif %}
