{#- interaction: at least `min` interactions matching every filter (and, with within_days, dated
    in the window ending on the run date). since: the day of the min-th one. -#}
SELECT profile_id, date AS since
FROM (
    SELECT pi.profile_id, ie.date,
           row_number() OVER (
               PARTITION BY pi.profile_id
               ORDER BY ie.date, ie.dt, ie._file, ie._line
           ) AS n
    FROM interactions_enriched ie
    JOIN {{ rs }}.profile_identifiers pi
      ON pi.identifier_type = 'session_id' AND pi.identifier_value = ie.session_id
    WHERE ie.dt <= DATE '{{ ds }}'{% if interactions_from | default(none) %} AND ie.dt >= DATE '{{ interactions_from }}'{% endif %}
{% if window_start %}
      AND ie.date >= DATE '{{ window_start }}' AND ie.date <= DATE '{{ ds }}'
{% endif %}
{% for column, values in filters %}
      AND ie.{{ column }} IN ({{ values | join(", ") }})
{% endfor %}
) counted
WHERE n = {{ min }}
