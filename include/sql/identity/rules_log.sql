-- Record the fingerprint of the identity rules the run for {{ ds }} was built with (replaced on a
-- re-run), for the next date's run to compare with (pipeline.note_rules_change).
DELETE FROM identity_rules_log WHERE dt = DATE '{{ ds }}';
INSERT INTO identity_rules_log VALUES (DATE '{{ ds }}', {{ fingerprint | literal }}, CAST(current_timestamp AS TIMESTAMP));
