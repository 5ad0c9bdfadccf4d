-- Write-audit-publish: every check counts the rows that break it; any non-zero count stops the
-- run before a destination receives anything. One row per check: (check_name, failures).
-- (DuckDB's count_if gives NULL over no rows, hence the coalesce.)
{% import "validate/_macros.sql" as v %}
SELECT 'audience_profiles.profile_id unique and not null' AS check_name,
       count(*) - count(DISTINCT profile_id) + coalesce(count_if(profile_id IS NULL), 0) AS failures
FROM {{ rs }}.audience_profiles
UNION ALL
SELECT 'profile_identifiers: one profile per identifier',
       count(*) - count(DISTINCT identifier_type || ':' || identifier_value)
FROM {{ rs }}.profile_identifiers
UNION ALL
SELECT 'profile_merges: merged-away ids are not live', count(*)
FROM {{ rs }}.profile_merges m
WHERE m.merged_profile_id IN (SELECT profile_id FROM {{ rs }}.audience_profiles)
UNION ALL
SELECT 'consent: every opt-in has its statement time and source', count(*)
FROM {{ rs }}.audience_profiles
WHERE (optin_1 IS NOT NULL AND (optin_1_at IS NULL OR optin_1_source IS NULL))
   OR (optin_2 IS NOT NULL AND (optin_2_at IS NULL OR optin_2_source IS NULL))
   OR (accept_terms IS NOT NULL AND (accept_terms_at IS NULL OR accept_terms_source IS NULL))
UNION ALL
SELECT 'interactions_enriched reconciles with interactions for the partition',
       abs((SELECT count(*) FROM interactions WHERE dt = DATE '{{ ds }}')
           - (SELECT count(*) FROM interactions_enriched WHERE dt = DATE '{{ ds }}'))
UNION ALL
SELECT 'audience_profiles.email is normalised', count(*)
FROM {{ rs }}.audience_profiles WHERE email <> lower({{ v.trimmed("email") }})
{% if min_profiles_kept | default(0) %}
{#- A volume guard: a lost history or a truncated source would sync every destination down to
    what is left. The baseline is the profiles the nearest earlier published date published
    (checks/profiles_before.sql); none: nothing to compare with. Failures: the profiles missing
    below the floor. -#}
UNION ALL
SELECT 'audience_profiles keeps at least {{ "%g" | format(min_profiles_kept * 100) }}% of the nearest earlier published date''s profiles',
       coalesce(CASE WHEN counts.profiles < counts.profiles_before * {{ min_profiles_kept }}
                     THEN CAST(ceil(counts.profiles_before * {{ min_profiles_kept }}) AS BIGINT)
                          - counts.profiles END, 0)
FROM ({% include "checks/profiles_before.sql" %}) counts
{% endif %}
{% if segments | default(false) %}
UNION ALL
SELECT 'segment_memberships.profile_id is a live profile', count(*)
FROM {{ rs }}.segment_memberships s
WHERE s.profile_id IS NULL
   OR s.profile_id NOT IN (SELECT profile_id FROM {{ rs }}.audience_profiles)
UNION ALL
SELECT 'segment_memberships: one row per segment and profile, with its since date',
       count(*) - count(DISTINCT segment_id || ':' || profile_id) + coalesce(count_if(since IS NULL), 0)
FROM {{ rs }}.segment_memberships
{% endif %}
