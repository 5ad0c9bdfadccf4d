-- The micro-batch's files, as the ledger (stream_files) records them once it is delivered.
CREATE TABLE {{ bs }}.batch_files AS
SELECT * FROM (VALUES
{%- for f in files %}
    ({{ f.source | literal }}, {{ f.name | literal }}, {{ f.version | literal }},
     CAST({{ f.modified | literal }} AS TIMESTAMP),
     {% if f.ds %}CAST({{ f.ds | literal }} AS DATE){% else %}CAST(NULL AS DATE){% endif %}){{ "," if not loop.last }}
{%- endfor %}
) AS t (source, file, version, modified, ds);
