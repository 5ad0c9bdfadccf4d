-- The micro-batch's files, as the ledger (stream_files) records them once it is delivered, with
-- each dated file's rows as the batch counts them (file_counts: name -> (read, valid,
-- quarantined, aged out), validate/file_counts.sql; a file with no row has none: 0 of each).
CREATE TABLE {{ bs }}.batch_files AS
SELECT * FROM (VALUES
{%- for f in files %}
    {%- set read, valid, quarantined, aged_out = file_counts.get(f.name, (0, 0, 0, 0)) %}
    ({{ f.source | literal }}, {{ f.name | literal }}, {{ f.version | literal }},
     CAST({{ f.modified | literal }} AS TIMESTAMP),
     {% if f.ds %}CAST({{ f.ds | literal }} AS DATE){% else %}CAST(NULL AS DATE){% endif %},
     {{ read }}, {{ valid }}, {{ quarantined }}, {{ aged_out }}){{ "," if not loop.last }}
{%- endfor %}
) AS t (
    source, file, version, modified, ds, rows_read, rows_valid, rows_quarantined, rows_aged_out
);
