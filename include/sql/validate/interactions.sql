-- Type-check the staged interactions of one landing partition; bad rows go to quarantine. An
-- interaction dated after its partition is quarantined too: the day's snapshot would count it early.
{% import "validate/_macros.sql" as v with context %}
CREATE OR REPLACE TEMP TABLE checked_interactions AS
SELECT *, {{ v.reasons(["_error", v.date("date", landed=ds), v.required("event_id"), v.required("poll_id"),
                        v.required("session_id"), v.integer("option"), v.integer("votes")]) }} AS reason
FROM {{ staged }};

DELETE FROM interactions WHERE dt = DATE '{{ ds }}';
INSERT INTO interactions
SELECT DATE '{{ ds }}', CAST({{ v.trimmed("date") }} AS DATE),
       {{ v.trimmed("event_id") }}, {{ v.trimmed("poll_id") }}, {{ v.trimmed("session_id") }},
       CAST({{ v.trimmed("option") }} AS INTEGER), CAST({{ v.trimmed("votes") }} AS INTEGER), _file, _line
FROM checked_interactions WHERE reason IS NULL;

DELETE FROM quarantine WHERE dt = DATE '{{ ds }}' AND source = 'interactions';
INSERT INTO quarantine
SELECT DATE '{{ ds }}', 'interactions', _file, _line, reason, _raw
FROM checked_interactions WHERE reason IS NOT NULL;
