-- Merges this run made: a profile of the previous snapshot (as of the interval start) whose id is
-- no longer live while its identifiers are. One row per merged-away id, naming
-- - the survivor: the live profile now holding its earliest-seen identifier;
-- - how: the first of this interval's new links that led out of the merged profile, its other end
--   (identifier_type/value: the identifier the two now share) and its source as reason
--   ('form_entries:session_id-email', ...). With no such link the profiles were regrouped by a
--   rule (a session found to be a shared device, say): reason 'regrouped';
-- - when: the later of the first links out of either profile, i.e. when both were joined.
CREATE OR REPLACE TABLE {{ rs }}.profile_merges AS
WITH prev AS (
    SELECT profile_id, identifier_type, identifier_value, first_seen
    FROM profile_identifiers_prev
),
cur AS (
    SELECT profile_id, identifier_type, identifier_value FROM {{ rs }}.profile_identifiers
),
gone AS (
    SELECT profile_id FROM prev
    EXCEPT
    SELECT profile_id FROM cur
),
survivors AS (
    SELECT p.profile_id AS merged_profile_id, c.profile_id AS surviving_profile_id,
           p.identifier_type, p.identifier_value
    FROM prev p
    JOIN cur c ON c.identifier_type = p.identifier_type AND c.identifier_value = p.identifier_value
    WHERE p.profile_id IN (SELECT profile_id FROM gone)
    QUALIFY row_number() OVER (PARTITION BY p.profile_id
                               ORDER BY p.first_seen, p.identifier_type, p.identifier_value) = 1
),
ends AS (
    SELECT left_type AS end_type, left_value AS end_value, right_type AS other_type,
           right_value AS other_value, left_type, right_type, observed_at, source
    FROM id_new_links
    UNION ALL
    SELECT right_type, right_value, left_type, left_value, left_type, right_type, observed_at,
           source
    FROM id_new_links
),
exits AS (
    SELECT p.profile_id, e.other_type, e.other_value, e.observed_at,
           e.source || ':' || e.left_type || '-' || e.right_type AS reason
    FROM ends e
    JOIN prev p ON p.identifier_type = e.end_type AND p.identifier_value = e.end_value
    LEFT JOIN prev o ON o.identifier_type = e.other_type AND o.identifier_value = e.other_value
    WHERE o.profile_id IS NULL OR o.profile_id <> p.profile_id
    QUALIFY row_number() OVER (PARTITION BY p.profile_id
                               ORDER BY e.observed_at, e.end_type, e.end_value,
                                        e.other_type, e.other_value) = 1
)
SELECT s.merged_profile_id, s.surviving_profile_id,
       coalesce(greatest(xm.observed_at, coalesce(xs.observed_at, xm.observed_at)),
                TIMESTAMP '{{ interval_start }}') AS merged_at,
       coalesce(xm.reason, 'regrouped') AS reason,
       coalesce(xm.other_type, s.identifier_type) AS identifier_type,
       coalesce(xm.other_value, s.identifier_value) AS identifier_value
FROM survivors s
LEFT JOIN exits xm ON xm.profile_id = s.merged_profile_id
LEFT JOIN exits xs ON xs.profile_id = s.surviving_profile_id;
