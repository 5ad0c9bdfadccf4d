{#- The files the date's partition of the source now holds (landed_files, setup/tables.sql), in
    the validation's transaction: those the extract read, at the versions it read (none: one row
    with file NULL). A file kept as a stream batch merged it (validate_streamed) keeps the batch's
    row. versions: (file, version) pairs; streamed: whether validate_streamed exists;
    keep_days: how far back the report looks (rows older are never read). -#}
DELETE FROM landed_files WHERE dt < DATE '{{ ds | days_after(-keep_days) }}';
DELETE FROM landed_files
WHERE source = {{ source | literal }} AND dt = DATE '{{ ds }}'
{%- if streamed %}
  AND (file IS NULL OR file NOT IN (SELECT file FROM validate_streamed))
{%- endif %};
{#- A thousand files a statement: Snowflake advises statements under 1 MB. -#}
{% for chunk in (versions or [(none, none)]) | batch(1000) %}
INSERT INTO landed_files
SELECT {{ source | literal }}, DATE '{{ ds }}', file, version, CAST(current_timestamp AS TIMESTAMP)
FROM (VALUES
{%- for file, version in chunk %}
  {%- if file is none %}
    (CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR))
  {%- else %}
    ({{ file | literal }}, {{ version | literal }}){{ "," if not loop.last }}
  {%- endif %}
{%- endfor %}
) AS t (file, version)
{%- if streamed %}
WHERE file NOT IN (SELECT file FROM validate_streamed)
{%- endif %};
{% endfor %}
