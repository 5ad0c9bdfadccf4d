{#- all / any: every / at least one condition holds. Each part has one row per profile, so
    "all" is a count of parts; since is when the last (all) or first (any) part began to hold. -#}
SELECT profile_id, {{ "max" if how == "all" else "min" }}(since) AS since
FROM (
{% for part in parts %}
    SELECT profile_id, since FROM (
{{ part }}
    ) p{{ loop.index }}
{% if not loop.last %}
    UNION ALL
{% endif %}
{% endfor %}
) parts
GROUP BY profile_id
{% if how == "all" %}
HAVING count(*) = {{ parts | length }}
{% endif %}
