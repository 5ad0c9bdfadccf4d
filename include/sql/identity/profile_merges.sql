-- Merges that happened in this run's interval: a profile of the previous snapshot (as of the
-- interval start) whose identifiers now belong to a profile with another id. The identifier
-- named is the earliest-seen identifier of the merged-away profile that the survivor holds.
CREATE OR REPLACE TABLE {{ rs }}.profile_merges AS
WITH moved AS (
    SELECT p.profile_id AS merged_profile_id, c.profile_id AS surviving_profile_id,
           p.identifier_type, p.identifier_value
    FROM {{ rs }}.profile_identifiers_prev p
    JOIN {{ rs }}.profile_identifiers c
      ON c.identifier_type = p.identifier_type AND c.identifier_value = p.identifier_value
    WHERE c.profile_id <> p.profile_id
      AND p.profile_id NOT IN (SELECT profile_id FROM {{ rs }}.profile_identifiers)
    QUALIFY row_number() OVER (PARTITION BY p.profile_id, c.profile_id
                               ORDER BY p.first_seen, p.identifier_type, p.identifier_value) = 1
),
new_links AS (
    SELECT left_type AS t, left_value AS v, observed_at FROM {{ rs }}.identity_links
    WHERE dt = DATE '{{ ds }}' OR observed_at >= TIMESTAMP '{{ interval_start }}'
    UNION ALL
    SELECT right_type, right_value, observed_at FROM {{ rs }}.identity_links
    WHERE dt = DATE '{{ ds }}' OR observed_at >= TIMESTAMP '{{ interval_start }}'
),
merge_time AS (
    -- when the survivor last gained a link in this interval: the moment the merge happened
    SELECT x.profile_id, max(nl.observed_at) AS merged_at
    FROM {{ rs }}.profile_identifiers x
    JOIN new_links nl ON nl.t = x.identifier_type AND nl.v = x.identifier_value
    GROUP BY x.profile_id
)
SELECT m.merged_profile_id, m.surviving_profile_id, t.merged_at, 'shared_identifier' AS reason,
       m.identifier_type, m.identifier_value
FROM moved m LEFT JOIN merge_time t ON t.profile_id = m.surviving_profile_id;
