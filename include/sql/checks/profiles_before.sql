-- The run's profiles beside the nearest earlier published date's (the quality checks' volume
-- guard): (earlier date, its profiles, the run's profiles). The earlier date is the latest
-- before the run's whose run reported its profiles (pipeline_runs); none: NULL, NULL.
SELECT CAST(earlier.dt AS VARCHAR) AS dt_before, earlier.profiles AS profiles_before,
       cur.profiles
FROM (SELECT count(*) AS profiles FROM {{ rs }}.audience_profiles) cur
LEFT JOIN (
    SELECT p.dt, r.profiles
    FROM published_snapshots p
    JOIN pipeline_runs r ON r.ds = p.dt AND r.run_id = p.run_id
    WHERE p.dt < DATE '{{ ds }}' AND r.profiles IS NOT NULL
    ORDER BY p.dt DESC, r.reported_at DESC
    LIMIT 1
) earlier ON true
