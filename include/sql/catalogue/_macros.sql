{#- The element catalogue in force on date `ds`: per element, its latest element_history row from
    the latest recorded date up to ds, unless that row removed it. A date before the first
    recorded one takes the first recorded catalogue (the earliest known). With `loaded`, a
    warehouse with no history yet (set up before it was kept, and no daily validate since) takes
    the catalogue loaded last, `elements`, as every run did before. -#}
{% macro in_force(ds, loaded=true) -%}
SELECT poll_id, title, option, option_label, element_type, event_id
FROM (
    SELECT h.*,
           row_number() OVER (PARTITION BY poll_id, option ORDER BY valid_from DESC) AS latest
    FROM element_history h
    WHERE valid_from <= coalesce(
        (SELECT max(dt) FROM element_history_dates WHERE dt <= DATE '{{ ds }}'),
        (SELECT min(dt) FROM element_history_dates))
) AS recorded
WHERE latest = 1 AND NOT removed
{%- if loaded %}
UNION ALL
SELECT poll_id, title, option, option_label, element_type, event_id
FROM elements WHERE NOT EXISTS (SELECT 1 FROM element_history_dates)
{%- endif %}
{%- endmacro %}
