-- The run report, one row per run (ds, run_id): reporting the same run again replaces its row
-- (Airflow re-runs and backfills of a date keep its run_id); another run id of the date adds one.
-- `report` holds the full JSON.
{%- macro num(value) %}{{ 'NULL' if value is none else value }}{% endmacro %}
DELETE FROM pipeline_runs WHERE ds = DATE '{{ ds }}' AND run_id = {{ run_id | literal }};
INSERT INTO pipeline_runs VALUES (
    DATE '{{ ds }}',
    {{ run_id | literal }},
    {{ state | literal }},
    {{ num(rows_read) }},
    {{ num(rows_quarantined) }},
    {{ num(profiles) }},
    {{ num(profiles_created) }},
    {{ num(merges) }},
    {{ num(rows_delivered) }},
    {{ num(delivery_failures) }},
    {{ num(seconds) }},
    CAST(current_timestamp AS TIMESTAMP),
    {{ report | literal }}
);
