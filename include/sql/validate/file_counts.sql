{#- Each landed file's rows as its dated source's validation judged them: read, valid and
    quarantined (checked_<source>: the validate SQL's temp table of every row it read, with its
    reason; the undated catalogue's verdict is another column). The daily validate keeps them in
    landed_files; a stream batch reads them for its own rows there. -#}
SELECT _file AS file, count(*) AS rows_read,
       sum(CASE WHEN reason IS NULL THEN 1 ELSE 0 END) AS rows_valid,
       sum(CASE WHEN reason IS NULL THEN 0 ELSE 1 END) AS rows_quarantined
FROM checked_{{ source }}
GROUP BY _file
