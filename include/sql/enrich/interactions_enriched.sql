-- Join the partition's interactions with element content on (poll_id, option): a daily run's
-- (`dated`) with the catalogue in force on its date, so that a re-run gives the date the titles
-- it had; a stream batch's with the catalogue that daily run will use (catalogue/_macros.sql;
-- `home`: the warehouse's schema, where the history is). An interaction whose element is
-- unknown keeps NULL title and label rather than being dropped.
{% import "catalogue/_macros.sql" as catalogue %}
DELETE FROM interactions_enriched WHERE dt = DATE '{{ ds }}';
INSERT INTO interactions_enriched
SELECT i.dt, i.date, i.event_id, i.poll_id, e.title, e.element_type, i.session_id,
       i.option, e.option_label, i.votes, i._file, i._line
FROM interactions i
{%- if dated %}
LEFT JOIN ({{ catalogue.in_force(ds) }}) AS e ON e.poll_id = i.poll_id AND e.option = i.option
{%- else %}
LEFT JOIN ({{ catalogue.for_stream(ds, home ~ ".") }}) AS e
       ON e.poll_id = i.poll_id AND e.option = i.option
{%- endif %}
WHERE i.dt = DATE '{{ ds }}';
