{#- attribute: a profile column is one of the values (NULL, "never stated", never matches).
    since: the column's <column>_at time when there is one (the opt-ins' statement time), else
    the profile's first_seen. -#}
SELECT profile_id, CAST(coalesce({{ since_column }}, first_seen) AS DATE) AS since
FROM {{ rs }}.audience_profiles
WHERE {{ column }} IN ({{ values | join(", ") }})
