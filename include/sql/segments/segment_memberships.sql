-- The run's segment memberships: one row per (segment, profile) with the date the profile
-- qualified from. Each segment's rule is compiled from segments.yml by
-- include/audience_profiles/segments.py out of the templates beside this one.
CREATE OR REPLACE TABLE {{ rs }}.segment_memberships AS
{% for segment_id, rule in segments %}
SELECT CAST({{ segment_id | literal }} AS VARCHAR) AS segment_id,
       CAST(m.profile_id AS VARCHAR) AS profile_id,
       CAST(m.since AS DATE) AS since
FROM (
{{ rule }}
) m
{% if not loop.last %}
UNION ALL
{% endif %}
{% else %}
SELECT CAST(NULL AS VARCHAR) AS segment_id, CAST(NULL AS VARCHAR) AS profile_id,
       CAST(NULL AS DATE) AS since
WHERE 1 = 0
{% endfor %}
;
