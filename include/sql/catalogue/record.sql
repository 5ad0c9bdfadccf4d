-- Record the catalogue validate loaded (`elements`) in element_history, as its changes from the
-- catalogue in force before the run's date, valid from that date. Only when no later date has
-- recorded one: a re-run or a backfill of an earlier date records nothing, and its enrich reads
-- the catalogue that date had (catalogue/_macros.sql). A re-run of the latest date replaces its
-- own record (the catalogue may have been corrected since). An empty catalogue is not recorded:
-- a day without interactions passes validate with none, and the next day's would add it all back.
{% import "catalogue/_macros.sql" as catalogue %}
{% if restate %}
-- `audience-profiles restate-catalogue`: the catalogue loaded last holds from this date on, and
-- what later dates recorded goes (their re-runs then take it).
DELETE FROM element_history WHERE valid_from >= DATE '{{ ds }}';
DELETE FROM element_history_dates WHERE dt >= DATE '{{ ds }}';
{% endif %}
CREATE OR REPLACE TEMP TABLE catalogue_recording AS
SELECT NOT EXISTS (SELECT 1 FROM element_history_dates WHERE dt > DATE '{{ ds }}')
       AND EXISTS (SELECT 1 FROM elements) AS latest;
DELETE FROM element_history
WHERE valid_from = DATE '{{ ds }}' AND (SELECT latest FROM catalogue_recording);
DELETE FROM element_history_dates
WHERE dt = DATE '{{ ds }}' AND (SELECT latest FROM catalogue_recording);
CREATE OR REPLACE TEMP TABLE catalogue_changes AS
WITH prior_catalogue AS ({{ catalogue.in_force(ds, loaded=false) }})
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
WHERE NOT EXISTS (SELECT 1 FROM elements e WHERE e.poll_id = p.poll_id AND e.option = p.option);
INSERT INTO element_history
SELECT DATE '{{ ds }}', poll_id, option, title, option_label, element_type, event_id, removed
FROM catalogue_changes WHERE (SELECT latest FROM catalogue_recording);
INSERT INTO element_history_dates
SELECT DATE '{{ ds }}', (SELECT count(*) FROM catalogue_changes),
       CAST(current_timestamp AS TIMESTAMP)
FROM catalogue_recording WHERE latest;
