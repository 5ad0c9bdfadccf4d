{#- The files the date's partition of the source now holds (landed_files, setup/tables.sql), in
    the validation's transaction: those the extract read, at the versions it read (none: one row
    with file NULL), and each one's rows as the run counts them (validate/file_counts.sql: the
    source's checked_<source> must exist; aged_out as there). No DDL here: on Snowflake it would
    commit the validation's statements before it, aged-out rows included. A file kept as a
    stream batch merged it (validate_streamed) keeps the batch's row. versions: (file, version)
    pairs; streamed: whether validate_streamed exists; keep_days: how far back the report looks
    (rows older are never read). -#}
DELETE FROM landed_files WHERE dt < DATE '{{ ds | days_after(-keep_days) }}';
DELETE FROM landed_files
WHERE source = {{ source | literal }} AND dt = DATE '{{ ds }}'
{%- if streamed %}
  AND (file IS NULL OR file NOT IN (SELECT file FROM validate_streamed))
{%- endif %};
{#- A thousand files a statement: Snowflake advises statements under 1 MB. -#}
{% for chunk in (versions or [(none, none)]) | batch(1000) %}
INSERT INTO landed_files (
    source, dt, file, version, recorded_at, rows_read, rows_valid, rows_quarantined, rows_aged_out
)
SELECT {{ source | literal }}, DATE '{{ ds }}', t.file, t.version, CAST(current_timestamp AS TIMESTAMP),
       coalesce(c.rows_read, 0), coalesce(c.rows_valid, 0), coalesce(c.rows_quarantined, 0),
       coalesce(c.rows_aged_out, 0)
FROM (VALUES
{%- for file, version in chunk %}
  {%- if file is none %}
    (CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR))
  {%- else %}
    ({{ file | literal }}, {{ version | literal }}){{ "," if not loop.last }}
  {%- endif %}
{%- endfor %}
) AS t (file, version)
LEFT JOIN (
{% include "validate/file_counts.sql" %}
) AS c ON c.file = t.file
{%- if streamed %}
WHERE t.file NOT IN (SELECT file FROM validate_streamed)
{%- endif %};
{% endfor %}
