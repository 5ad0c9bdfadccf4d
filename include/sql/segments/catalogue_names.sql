{#- What segments.yml names that the run date has (segments.catalogue_misses), in one small
    query however many segments: the elements of the catalogue in force on ds having a poll id,
    title, element type or option label it names (`named`: (column, literals)), and, with
    `events`, the event ids it names that the interactions the run reads carry, each as a row of
    NULL poll_id (which every element has). An interaction carries its event (required), which
    its element need not record (optional): the rule filters on the interaction's. -#}
{% import "catalogue/_macros.sql" as catalogue %}
SELECT DISTINCT CAST(NULL AS VARCHAR) AS event_id, poll_id, title, element_type, option_label
FROM ({{ catalogue.in_force(ds) }}) AS c
WHERE {% for column, values in named %}{{ column }} IN ({{ values | join(", ") }}) OR {% endfor %}FALSE
{%- if events %}
UNION ALL
SELECT DISTINCT event_id, CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR),
       CAST(NULL AS VARCHAR)
FROM interactions_enriched
WHERE dt <= DATE '{{ ds }}'{% if interactions_from %} AND dt >= DATE '{{ interactions_from }}'{% endif %}
  AND event_id IN ({{ events | join(", ") }})
{%- endif %}
