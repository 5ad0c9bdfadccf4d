-- Join the partition's interactions with element content on (poll_id, option). An interaction
-- whose element is unknown keeps NULL title and label rather than being dropped.
DELETE FROM interactions_enriched WHERE dt = DATE '{{ ds }}';
INSERT INTO interactions_enriched
SELECT i.dt, i.date, i.event_id, i.poll_id, e.title, e.element_type, i.session_id,
       i.option, e.option_label, i.votes, i._file, i._line
FROM interactions i
LEFT JOIN elements e ON e.poll_id = i.poll_id AND e.option = i.option
WHERE i.dt = DATE '{{ ds }}';
