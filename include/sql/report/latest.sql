-- The latest report of the latest reported date: what index.html shows.
SELECT CAST(ds AS VARCHAR) AS ds, report, reported_at
FROM pipeline_runs
QUALIFY row_number() OVER (ORDER BY ds DESC, reported_at DESC, run_id DESC) = 1
