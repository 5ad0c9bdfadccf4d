-- The latest report of every date, oldest first: what the report page plots over time.
SELECT CAST(ds AS VARCHAR) AS ds, profiles, profiles_created, merges, rows_quarantined,
       rows_delivered, state
FROM pipeline_runs
QUALIFY row_number() OVER (PARTITION BY ds ORDER BY reported_at DESC, run_id DESC) = 1
ORDER BY ds
