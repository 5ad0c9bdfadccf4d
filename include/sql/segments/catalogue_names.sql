{#- The element titles and option labels segments.yml names (segments.catalogue_misses) that the
    catalogue in force on the run date has: one small query, however many segments. -#}
{% import "catalogue/_macros.sql" as catalogue %}
SELECT DISTINCT title, option_label
FROM ({{ catalogue.in_force(ds) }}) AS c
WHERE {% if titles %}title IN ({{ titles | join(", ") }}){% else %}FALSE{% endif %}
   OR {% if labels %}option_label IN ({{ labels | join(", ") }}){% else %}FALSE{% endif %}
