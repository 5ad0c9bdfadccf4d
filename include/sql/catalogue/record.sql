-- Record the catalogue validate loaded (`elements`) in element_history, as its changes from the
-- catalogue in force before the run's date (earlier dates' records), valid from that date;
-- element_history_dates gets the date, with its count of changes. Run only when the date
-- records (catalogue/_macros.sql, records), or restates: a re-run of the date's own record
-- replaces it. A date whose folder held no element row (a day without interactions passes
-- validate so) records no change: its elements are not taken as removed, which the next day's
-- catalogue would only add back. The changes are computed first, and the statements that
-- replace the record follow in one run of DML: on Snowflake, which commits around each DDL
-- statement, the record is replaced whole or not at all.
{% import "catalogue/_macros.sql" as catalogue %}
CREATE OR REPLACE TEMP TABLE catalogue_changes AS
WITH prior_catalogue AS ({{ catalogue.in_force(ds, loaded=false, before=true) }})
SELECT e.poll_id, e.option, e.title, e.option_label, e.element_type, e.event_id,
       false AS removed
FROM elements e
LEFT JOIN prior_catalogue p ON p.poll_id = e.poll_id AND p.option = e.option
WHERE p.poll_id IS NULL OR p.title IS DISTINCT FROM e.title
   OR p.option_label IS DISTINCT FROM e.option_label
   OR p.element_type IS DISTINCT FROM e.element_type OR p.event_id IS DISTINCT FROM e.event_id
UNION ALL
SELECT p.poll_id, p.option, NULL, NULL, NULL, NULL, true
FROM prior_catalogue p
WHERE NOT EXISTS (SELECT 1 FROM elements e WHERE e.poll_id = p.poll_id AND e.option = p.option)
  AND EXISTS (SELECT 1 FROM elements);
{% if restate %}
-- A run with `restate_catalogue` (docs/operations.md, "Re-running a date"; `restate`: its
-- text): what later dates recorded goes too, so that the catalogue landed now holds from this
-- date on, and the dates after it find it in force when they run again. The restate is kept in
-- element_history_restates, which nothing deletes from: each text restates a date once.
DELETE FROM element_history WHERE valid_from > DATE '{{ ds }}';
DELETE FROM element_history_dates WHERE dt > DATE '{{ ds }}';
INSERT INTO element_history_restates
SELECT DATE '{{ ds }}', {{ restate | literal }}, CAST(current_timestamp AS TIMESTAMP);
{% endif %}
DELETE FROM element_history WHERE valid_from = DATE '{{ ds }}';
DELETE FROM element_history_dates WHERE dt = DATE '{{ ds }}';
INSERT INTO element_history
SELECT DATE '{{ ds }}', poll_id, option, title, option_label, element_type, event_id, removed
FROM catalogue_changes;
INSERT INTO element_history_dates
SELECT DATE '{{ ds }}', count(*), CAST(current_timestamp AS TIMESTAMP) FROM catalogue_changes;
