-- The interactions a micro-batch emits, in the daily audience_profile_interactions shape: the
-- batch's own interactions of known profiles, and the whole history of every session the batch
-- attached to a profile or moved to a surviving one (a form entry claims its session's past);
-- none dated before the retention cutoff (interactions_cutoff, when retention is configured).
CREATE OR REPLACE TABLE {{ rs }}.audience_profile_interactions AS
SELECT p.profile_id, p.first_name, p.last_name, p.email,
       ie.date AS interaction_date, ie.title AS attribute, ie.option_label AS option,
       ie.poll_id, ie.event_id, ie.session_id, ie.votes
FROM {{ home }}.interactions_enriched ie
JOIN {{ rs }}.profile_identifiers pi
  ON pi.identifier_type = 'session_id' AND pi.identifier_value = ie.session_id
JOIN {{ rs }}.audience_profiles p ON p.profile_id = pi.profile_id
WHERE (ie._file IN (SELECT file FROM {{ bs }}.batch_files)
       OR ie.session_id IN (
           SELECT identifier_value FROM {{ rs }}.changed WHERE identifier_type = 'session_id'))
{%- if interactions_cutoff %}
  -- retention (interactions_days): nothing aged out is emitted, even before retention has run
  AND ie.dt >= DATE '{{ interactions_cutoff }}'
{%- endif %};
