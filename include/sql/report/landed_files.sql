-- What the warehouse holds of each dated source's partitions from {{ first }} to {{ ds }}: file
-- and version (file NULL: its extract found none), for pipeline.late_landings to compare with
-- the landing.
SELECT source, CAST(dt AS VARCHAR) AS dt, file, version
FROM landed_files
WHERE dt BETWEEN DATE '{{ first }}' AND DATE '{{ ds }}'
ORDER BY dt, source
