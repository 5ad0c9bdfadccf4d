-- The seed's final output: every interaction of a known profile up to the run's date, earlier
-- ones included (a form entry today claims the session's whole history).
CREATE OR REPLACE TABLE {{ rs }}.audience_profile_interactions AS
SELECT p.profile_id, p.first_name, p.last_name, p.email,
       ie.date AS interaction_date, ie.title AS attribute, ie.option_label AS option,
       ie.poll_id, ie.event_id, ie.session_id, ie.votes
FROM interactions_enriched ie
JOIN {{ rs }}.profile_identifiers pi ON pi.identifier_type = 'session_id' AND pi.identifier_value = ie.session_id
JOIN {{ rs }}.audience_profiles p ON p.profile_id = pi.profile_id
WHERE ie.dt <= DATE '{{ ds }}';
