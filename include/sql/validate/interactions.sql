-- Type-check the staged interactions of one landing partition; bad rows go to quarantine. An
-- interaction dated after its partition is quarantined too: the day's snapshot would count it early.
{% import "validate/_macros.sql" as v with context %}
{% set columns = ["date", "event_id", "poll_id", "session_id", "option", "votes"] %}
CREATE OR REPLACE TEMP TABLE checked_interactions AS
SELECT *, {{ v.reasons(["_error", v.date("date", landed=ds), v.required("event_id"), v.required("poll_id"),
                        v.required("session_id"), v.integer("option"), v.integer("votes")], columns) }} AS reason
FROM {{ v.trimmed_rows(v.staged_rows(staged), columns) }};

DELETE FROM interactions WHERE {{ v.replaced(ds) }};
INSERT INTO interactions
SELECT DATE '{{ ds }}', CAST(date AS DATE),
       event_id, poll_id, session_id,
       CAST(option AS INTEGER), CAST(votes AS INTEGER), _file, _line
FROM checked_interactions WHERE reason IS NULL;

DELETE FROM quarantine WHERE {{ v.replaced(ds, "file") }} AND source = 'interactions';
INSERT INTO quarantine
SELECT DATE '{{ ds }}', 'interactions', _file, _line, reason, {{ v.raw_text("_raw") }}
FROM checked_interactions WHERE reason IS NOT NULL;
