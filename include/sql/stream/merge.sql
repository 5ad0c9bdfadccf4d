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
-- Element rows are quarantined by the daily build, which re-reads the whole catalogue.
DELETE FROM quarantine
WHERE source <> 'elements' AND file IN (SELECT file FROM {{ bs }}.batch_files);
INSERT INTO quarantine SELECT * FROM {{ bs }}.quarantine WHERE source <> 'elements';
