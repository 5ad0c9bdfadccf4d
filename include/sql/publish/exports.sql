{#- The run's outputs, one query per table: what every destination receives. Ordered so the same
    data always gives the same files: each ORDER BY is total over distinct rows (one SSO row can
    give two audit rows under one rule; two votes can differ only in their count). audience_profile_interactions comes from its own query. -#}
{% set queries = {
  "interactions_enriched": "SELECT date, event_id, poll_id, title, element_type, session_id, option, option_label, votes FROM interactions_enriched WHERE dt = DATE '" ~ ds ~ "' ORDER BY _file, _line",
  "audience_profiles": "SELECT * FROM " ~ rs ~ ".audience_profiles ORDER BY profile_id",
  "profile_identifiers": "SELECT identifier_type, identifier_value, profile_id FROM " ~ rs ~ ".profile_identifiers ORDER BY profile_id, identifier_type, identifier_value",
  "profile_merges": "SELECT * FROM " ~ rs ~ ".profile_merges ORDER BY merged_profile_id",
  "identity_link_audit": "SELECT rule, detail, left_type, left_value, right_type, right_value, observed_at, source, file, line FROM " ~ rs ~ ".identity_link_audit WHERE dt = DATE '" ~ ds ~ "' ORDER BY file, line, rule, left_type, left_value, right_type, right_value",
  "quarantine": "SELECT source, file, line, reason, raw FROM quarantine WHERE dt = DATE '" ~ ds ~ "' ORDER BY source, file, line",
  "segment_memberships": "SELECT * FROM " ~ rs ~ ".segment_memberships ORDER BY segment_id, profile_id",
} %}
{% if table == "audience_profile_interactions" %}
{% with schema = rs ~ "." %}{% include "profiles/audience_profile_interactions.sql" %}{% endwith %}
ORDER BY profile_id, interaction_date, event_id, poll_id, session_id, option, votes
{% else %}
{{ queries[table] }}
{% endif %}
