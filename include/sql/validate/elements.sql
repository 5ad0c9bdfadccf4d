-- The element catalogue (titles and option labels) is replaced whole on every run. A second row
-- for the same poll_id and option would duplicate interactions in the join, so only the last
-- valid one (by file and line) is kept and the other valid ones are quarantined as duplicates.
-- Invalid rows are ranked apart (quarantined for their own reason): a later invalid row must not
-- turn the valid one into a duplicate and leave the element out of the catalogue. An element
-- type other than the five the contract names is kept as given (validate warns): quarantined,
-- the element's interactions lost their title and labels.
-- The date's quarantined element rows are written by the run that records its catalogue
-- (`write_quarantine`: catalogue/_macros.sql, records): a re-run of a date whose catalogue is
-- final keeps the ones its outputs were built with, as it keeps the titles.
{% import "validate/_macros.sql" as v with context %}
{% set columns = ["poll_id", "title", "option", "option_label", "element_type", "event_id"] %}
CREATE OR REPLACE TEMP TABLE checked_elements AS
SELECT c.*,
       CASE WHEN reason IS NULL AND row_number() OVER (
                PARTITION BY poll_id, try_cast(option AS INTEGER),
                             CASE WHEN reason IS NULL THEN 1 ELSE 0 END
                ORDER BY _file DESC, _line DESC) > 1
            THEN 'poll_id, option: duplicate of a later element row' ELSE reason END AS final_reason
FROM (
    SELECT *, {{ v.reasons(["_error", v.required("poll_id"), v.integer("option"), v.required("title"),
                            v.required("option_label")], columns) }} AS reason
    FROM {{ v.trimmed_rows(staged, columns) }}
) c;

-- Not by a catalogue whose every row was quarantined: every interaction would lose its title
-- (validate then fails, naming the reasons). A folder with no row at all fails before this.
DELETE FROM elements
WHERE EXISTS (SELECT 1 FROM checked_elements WHERE final_reason IS NULL)
   OR NOT EXISTS (SELECT 1 FROM checked_elements);
INSERT INTO elements
SELECT poll_id, title, CAST(option AS INTEGER),
       option_label,
       NULLIF(lower(element_type), ''), NULLIF(event_id, ''),
       _file, _line
FROM checked_elements WHERE final_reason IS NULL;

{% if write_quarantine %}
DELETE FROM quarantine WHERE dt = DATE '{{ ds }}' AND source = 'elements';
INSERT INTO quarantine
SELECT DATE '{{ ds }}', 'elements', _file, _line, final_reason, {{ v.raw_text("_raw") }}
FROM checked_elements WHERE final_reason IS NOT NULL;
{% endif %}
