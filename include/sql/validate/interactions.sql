-- Type-check the staged interactions of one landing partition; bad rows go to quarantine.
{% import "validate/_macros.sql" as v with context %}
CREATE OR REPLACE TEMP TABLE checked_interactions AS
SELECT *, {{ v.reasons(["_error", v.date("date"), v.required("event_id"), v.required("poll_id"),
                        v.required("session_id"), v.integer("option"), v.integer("votes")]) }} AS reason
FROM {{ staged }};

DELETE FROM interactions WHERE dt = DATE '{{ ds }}';
INSERT INTO interactions
SELECT DATE '{{ ds }}', CAST(trim(date) AS DATE), trim(event_id), trim(poll_id), trim(session_id),
       CAST(trim(option) AS INTEGER), CAST(trim(votes) AS INTEGER), _file, _line
FROM checked_interactions WHERE reason IS NULL;

DELETE FROM quarantine WHERE dt = DATE '{{ ds }}' AND source = 'interactions';
INSERT INTO quarantine
SELECT DATE '{{ ds }}', 'interactions', _file, _line, reason, _raw
FROM checked_interactions WHERE reason IS NOT NULL;
