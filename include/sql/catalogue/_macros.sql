{#- The element catalogue in force on date `ds`: per element, its latest element_history row on
    or before ds, unless that row removed it. An element no row on or before ds knows takes the
    first content recorded for it later: its catalogue row landed after the date ran (or the date
    is older than the first record, as after the upgrade that added the history), and a later
    title is better than none. With
    `loaded`, a warehouse with no history yet (set up before it was kept, and no daily validate
    since) takes the catalogue loaded last, `elements`, as every run did before. `at`: the
    history's schema, with its dot, when the default schema is another (a stream batch's).
    `before`: the catalogue in force before ds, from the records of earlier dates only (what a
    record of ds is the change from). -#}
{% macro in_force(ds, loaded=true, at="", before=false) -%}
SELECT poll_id, title, option, option_label, element_type, event_id
FROM (
    SELECT h.*,
           row_number() OVER (
               PARTITION BY poll_id, option
               ORDER BY CASE WHEN valid_from <= DATE '{{ ds }}' THEN 0 ELSE 1 END,
                        CASE WHEN valid_from <= DATE '{{ ds }}' THEN valid_from END DESC,
                        valid_from) AS nearest_first
    FROM {{ at }}element_history h
    {%- if before %}
    WHERE valid_from < DATE '{{ ds }}'
    {%- endif %}
) AS recorded
WHERE nearest_first = 1 AND NOT removed
{%- if loaded %}
UNION ALL
SELECT poll_id, title, option, option_label, element_type, event_id
FROM elements WHERE NOT EXISTS (SELECT 1 FROM {{ at }}element_history_dates)
{%- endif %}
{%- endmacro %}

{#- Whether the daily run of `ds` records the catalogue it landed (catalogue/record.sql): no
    later date has recorded one, and ds has not been published. A run that got as far as
    publishing keeps the titles it gave its outputs, so clearing it later gives the same outputs
    whatever has landed since (restate_catalogue aside); one that failed before records again on
    its retry, which may find the catalogue corrected. `at`: the warehouse's schema, with its
    dot, when the default schema is another (a stream batch's). -#}
{% macro records(ds, at="") -%}
{{ records_on("DATE '" ~ ds ~ "'", at) }}
{%- endmacro %}

{#- The same, for the date a SQL expression holds (`day`: a column, per row). -#}
{% macro records_on(day, at="") -%}
({{ day }} >= (SELECT coalesce(max(dt), DATE '1900-01-01') FROM {{ at }}element_history_dates)
 AND {{ day }} NOT IN (SELECT dt FROM {{ at }}published_snapshots WHERE dt IS NOT NULL))
{%- endmacro %}

{#- A stream batch's catalogue for its interactions of date `ds`: the one the daily run of ds
    will enrich them with. That is the catalogue loaded last (`elements`, the batch's or the
    warehouse's) when that run records it, and otherwise the catalogue in force on ds. -#}
{% macro for_stream(ds, at) -%}
SELECT poll_id, title, option, option_label, element_type, event_id
FROM elements
WHERE {{ records(ds, at) }}
UNION ALL
SELECT * FROM ({{ in_force(ds, at=at) }}) AS dated
WHERE NOT {{ records(ds, at) }}
{%- endmacro %}
