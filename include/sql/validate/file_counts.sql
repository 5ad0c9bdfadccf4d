{#- Each landed file's rows, as the run's counts take them: read = valid (kept in the source's
    table) + quarantined + aged out (checked_<source>: the validate SQL's temp table of every
    row it read, with its reason, for a dated source; the undated catalogue's verdict is another
    column). aged_out: the tables whose rows of this date retention has aged out
    (pipeline.aged_out_partitions), which therefore keep none. The daily validate keeps the
    counts in landed_files; a stream batch reads them for its own rows there. -#}
{%- set valid = "CASE WHEN reason IS NULL THEN 1 ELSE 0 END" %}
{%- set quarantined = "CASE WHEN reason IS NULL THEN 0 ELSE 1 END" %}
{%- set valid_aged = source in aged_out %}
{%- set quarantined_aged = "quarantine" in aged_out %}
SELECT _file AS file, count(*) AS rows_read,
       {{ "0" if valid_aged else "sum(" ~ valid ~ ")" }} AS rows_valid,
       {{ "0" if quarantined_aged else "sum(" ~ quarantined ~ ")" }} AS rows_quarantined,
       {%- set aged = ([valid] if valid_aged else []) + ([quarantined] if quarantined_aged else []) %}
       {{ "sum(" ~ aged | join(" + ") ~ ")" if aged else "0" }} AS rows_aged_out
FROM checked_{{ source }}
GROUP BY _file
