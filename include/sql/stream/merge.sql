-- Add a validated micro-batch ({{ bs }}) to the warehouse's source tables, keyed by file: rows of
-- a file seen before (an earlier attempt, the daily build, a re-landed version) are replaced, no
-- other row is touched. The daily build still owns each partition and re-reads it whole.
{% if elements %}
DELETE FROM elements;
INSERT INTO elements SELECT * FROM {{ bs }}.elements;
{% endif %}
{% for table in ["interactions", "form_entries", "identities", "interactions_enriched"] %}
DELETE FROM {{ table }} WHERE _file IN (SELECT file FROM {{ bs }}.batch_files);
INSERT INTO {{ table }} SELECT * FROM {{ bs }}.{{ table }};
{% endfor %}
{% if elements %}
-- Interactions merged before their element was known are enriched now, as the daily enrich
-- would: a later batch (a form claiming the session's history) emits them with their content.
UPDATE interactions_enriched
SET title = e.title, element_type = e.element_type, option_label = e.option_label
FROM elements e
WHERE interactions_enriched.title IS NULL
  AND e.poll_id = interactions_enriched.poll_id AND e.option = interactions_enriched.option;
{% endif %}
-- Rows the batch's suppression kept for a `suppress` request: kept here too, as the daily run
-- keeps them (a file the daily validate leaves as merged is not re-read by it). EXCEPT: kept once.
{% for table in ["form_entries", "identities", "interactions", "quarantine"] %}
INSERT INTO restricted_{{ table }}
SELECT * FROM {{ bs }}.restricted_{{ table }} EXCEPT SELECT * FROM restricted_{{ table }};
{% endfor %}
-- Element rows are quarantined by the daily build, which re-reads the whole catalogue.
DELETE FROM quarantine
WHERE source <> 'elements' AND file IN (SELECT file FROM {{ bs }}.batch_files);
INSERT INTO quarantine SELECT * FROM {{ bs }}.quarantine WHERE source <> 'elements';
