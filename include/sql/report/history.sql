-- The latest report of each of the last {{ dates }} reported dates up to {{ ds }}, oldest first:
-- what the report page of {{ ds }} plots over time (a later date's runs are not its history).
SELECT ds, profiles, profiles_created, merges, rows_quarantined, rows_delivered, state
FROM (
    SELECT CAST(ds AS VARCHAR) AS ds, profiles, profiles_created, merges, rows_quarantined,
           rows_delivered, state
    FROM pipeline_runs
    WHERE ds <= DATE '{{ ds }}'
    QUALIFY row_number() OVER (PARTITION BY ds ORDER BY reported_at DESC, run_id DESC) = 1
    ORDER BY ds DESC
    LIMIT {{ dates }}
) AS recent
ORDER BY ds
