{#- The elements of the catalogue in force on the run date having an event id, poll id, title,
    element type or option label segments.yml names (segments.catalogue_misses): one small
    query, however many segments. `named`: (column, literals). With `events`, also one row of
    NULL poll_id (which every element has) when any element records an event id, which the
    contract makes optional. -#}
{% import "catalogue/_macros.sql" as catalogue %}
WITH c AS (
{{ catalogue.in_force(ds) }}
)
SELECT DISTINCT event_id, poll_id, title, element_type, option_label
FROM c
WHERE {% for column, values in named %}{{ column }} IN ({{ values | join(", ") }}) OR {% endfor %}FALSE
{%- if events %}
UNION ALL
SELECT * FROM (
    SELECT event_id, CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR),
           CAST(NULL AS VARCHAR)
    FROM c WHERE event_id IS NOT NULL LIMIT 1
) AS events_recorded
{%- endif %}
