-- The run's profiles beside the nearest earlier published date's (the quality checks' volume
-- guard): (earlier date, its profiles, the run's profiles). The count is the one its publish
-- recorded, so a later attempt of that date that failed, or published nothing, does not move
-- it. A date an older version published has none: its run report's count stands in
-- (pipeline_runs, one row per date and run). None at all: NULL, NULL.
SELECT CAST(earlier.dt AS VARCHAR) AS dt_before, earlier.profiles AS profiles_before,
       cur.profiles
FROM (SELECT count(*) AS profiles FROM {{ rs }}.audience_profiles) cur
LEFT JOIN (
    SELECT p.dt, coalesce(p.profiles, r.profiles) AS profiles
    FROM published_snapshots p
    LEFT JOIN pipeline_runs r ON p.profiles IS NULL AND r.ds = p.dt AND r.run_id = p.run_id
    WHERE p.dt < DATE '{{ ds }}' AND coalesce(p.profiles, r.profiles) IS NOT NULL
    ORDER BY p.dt DESC
    LIMIT 1
) earlier ON true
