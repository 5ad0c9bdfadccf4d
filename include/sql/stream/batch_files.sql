-- The micro-batch's files, as the ledger (stream_files) records them once it is delivered, with
-- each dated file's rows as the batch counts them (file_counts: name -> (read, valid,
-- quarantined, aged out), validate/file_counts.sql; a file with no row has none: 0 of each).
CREATE TABLE {{ bs }}.batch_files (
    source VARCHAR, file VARCHAR, version VARCHAR, modified TIMESTAMP, ds DATE,
    rows_read BIGINT, rows_valid BIGINT, rows_quarantined BIGINT, rows_aged_out BIGINT
);
{#- A thousand files a statement: Snowflake advises statements under 1 MB (a thousand names of
    S3 keys is about 200 kB) and takes at most 200,000 rows in a FROM clause's VALUES, and a
    batch after a pause or a bulk upload can be larger. -#}
{% for chunk in files | batch(1000) %}
INSERT INTO {{ bs }}.batch_files
SELECT source, file, version, CAST(modified AS TIMESTAMP), CAST(ds AS DATE),
       rows_read, rows_valid, rows_quarantined, rows_aged_out
FROM (VALUES
{%- for f in chunk %}
    {%- set read, valid, quarantined, aged_out = file_counts.get(f.name, (0, 0, 0, 0)) %}
    ({{ f.source | literal }}, {{ f.name | literal }}, {{ f.version | literal }},
     {{ f.modified | literal }}, {{ f.ds | literal if f.ds else "CAST(NULL AS VARCHAR)" }},
     {{ read }}, {{ valid }}, {{ quarantined }}, {{ aged_out }}){{ "," if not loop.last }}
{%- endfor %}
) AS t (
    source, file, version, modified, ds, rows_read, rows_valid, rows_quarantined, rows_aged_out
);
{% endfor %}
