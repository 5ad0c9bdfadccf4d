-- The run's profiles beside the nearest earlier published date's (the quality checks' volume
-- guard): (earlier date, its profiles, the run's profiles). The count is the one its publish
-- recorded, so a later attempt of that date that failed, or published nothing, does not move
-- it. Dates published before the count was kept are passed over; none: NULL, NULL.
SELECT CAST(earlier.dt AS VARCHAR) AS dt_before, earlier.profiles AS profiles_before,
       cur.profiles
FROM (SELECT count(*) AS profiles FROM {{ rs }}.audience_profiles) cur
LEFT JOIN (
    SELECT dt, profiles
    FROM published_snapshots
    WHERE dt < DATE '{{ ds }}' AND profiles IS NOT NULL
    ORDER BY dt DESC
    LIMIT 1
) earlier ON true
