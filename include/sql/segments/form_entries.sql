{#- form_entries: at least `min` form entries, matched to the profile by email as its facts are
    (and, with within_days, made in the window ending on the run date). since: the day of the
    min-th one. -#}
SELECT profile_id, CAST(entry_datetime AS DATE) AS since
FROM (
    SELECT pi.profile_id, f.entry_datetime,
           row_number() OVER (
               PARTITION BY pi.profile_id
               ORDER BY f.entry_datetime, f.dt, f._file, f._line
           ) AS n
    FROM form_entries f
    JOIN {{ rs }}.profile_identifiers pi
      ON pi.identifier_type = 'email' AND pi.identifier_value = f.email
    WHERE f.dt <= DATE '{{ ds }}' AND f.entry_datetime < TIMESTAMP '{{ interval_end }}'
{% if window_start %}
      AND f.entry_datetime >= TIMESTAMP '{{ window_start }} 00:00:00'
{% endif %}
{% for column, values in filters %}
      AND f.{{ column }} IN ({{ values | join(", ") }})
{% endfor %}
) counted
WHERE n = {{ min }}
