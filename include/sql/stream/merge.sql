-- Add a validated micro-batch ({{ bs }}) to the warehouse's source tables, keyed by file: rows of
-- a file seen before (an earlier attempt, the daily build, a re-landed version) are replaced, no
-- other row is touched. The daily build still owns each partition and re-reads it whole.
{% if elements %}
-- not by an empty catalogue (every row quarantined, or files of only a header): the daily
-- validate fails on it, naming it; until then the stream keeps the one it has
DELETE FROM elements WHERE EXISTS (SELECT 1 FROM {{ bs }}.elements);
INSERT INTO elements SELECT * FROM {{ bs }}.elements;
{% endif %}
{% for table in ["interactions", "form_entries", "identities", "interactions_enriched"] %}
DELETE FROM {{ table }} WHERE _file IN (SELECT file FROM {{ bs }}.batch_files);
INSERT INTO {{ table }} SELECT * FROM {{ bs }}.{{ table }};
{% endfor %}
{% if elements %}
{% import "catalogue/_macros.sql" as catalogue %}
-- Interactions of the dates whose daily run records the catalogue it lands (not published, no
-- later date recorded: catalogue/_macros.sql, records) are enriched again with the new
-- catalogue, as their daily enrich will be: a later batch (a form claiming the session's
-- history) sends them with the content the daily build will have. Other dates keep theirs, as
-- they do in the daily build. An element gone leaves its interactions without content.
UPDATE interactions_enriched
SET title = e.title, element_type = e.element_type, option_label = e.option_label
FROM (
    SELECT ie._file, ie._line, c.title, c.element_type, c.option_label
    FROM interactions_enriched ie
    LEFT JOIN elements c ON c.poll_id = ie.poll_id AND c.option = ie.option
    WHERE {{ catalogue.records_on("ie.dt") }}
      AND (ie.title IS DISTINCT FROM c.title OR ie.option_label IS DISTINCT FROM c.option_label
           OR ie.element_type IS DISTINCT FROM c.element_type)
) e
WHERE interactions_enriched._file = e._file AND interactions_enriched._line = e._line;
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
