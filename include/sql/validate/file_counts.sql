{#- Each landed file's rows as the source's validation judged them (a dated source's: the
    catalogue's verdict is another column): read, valid, quarantined (checked_<source>: the validate SQL's temp table of every row it read, with its reason).
    The daily validate keeps them in landed_files; a stream batch reads them for its own. -#}
SELECT _file AS file, count(*) AS rows_read,
       sum(CASE WHEN reason IS NULL THEN 1 ELSE 0 END) AS rows_valid,
       sum(CASE WHEN reason IS NULL THEN 0 ELSE 1 END) AS rows_quarantined
FROM checked_{{ source }}
GROUP BY _file
