-- Remove partitions older than their cutoff (dt < cutoff) and log, per table, how many rows went.
-- retention_log is append-only and names only what was removed (the task log says the rest).
-- retention_dates keeps every date retention ran for: a daily run of an older date counts its
-- cutoffs from the latest of them (retention.cutoffs_as_of), so it cannot load what went here.
CREATE TABLE IF NOT EXISTS retention_dates (ds DATE, run_id VARCHAR, ran_at TIMESTAMP);
CREATE OR REPLACE TEMP TABLE retention_run (
    target VARCHAR, table_name VARCHAR, cutoff DATE, rows_removed BIGINT
);
{% for target, table, cutoff in plan %}
INSERT INTO retention_run
SELECT '{{ target }}', '{{ table }}', DATE '{{ cutoff }}', count(*) FROM {{ table }} WHERE dt < DATE '{{ cutoff }}';
DELETE FROM {{ table }} WHERE dt < DATE '{{ cutoff }}';
{% endfor %}
{% for target, name, cutoff, count in folders %}
INSERT INTO retention_run VALUES ('{{ target }}', '{{ name }}', DATE '{{ cutoff }}', {{ count }});
{% endfor %}
INSERT INTO retention_log
SELECT DATE '{{ ds }}', {{ run_id | literal }}, target, table_name, cutoff, rows_removed,
       CAST(current_timestamp AS TIMESTAMP)
FROM retention_run WHERE rows_removed > 0;
DELETE FROM retention_dates WHERE ds = DATE '{{ ds }}';
INSERT INTO retention_dates
VALUES (DATE '{{ ds }}', {{ run_id | literal }}, CAST(current_timestamp AS TIMESTAMP));
