{#- The seed's final output: every interaction of a known profile up to the run's date, earlier
    ones included (a form entry today claims the session's whole history). A query, not a table:
    the publish step exports it straight from the run's profile tables, and the warehouse's
    current audience_profile_interactions is a view of it over the current tables. Materialised,
    it was the build's largest write, copied twice more (bench/README.md).
    schema: the run's schema with a dot, or "" for the current tables; ds: the cutoff date, or
    none for "what is published"; interactions_from: retention's first date kept, if any (the
    run must not hand on what retention is about to remove). -#}
SELECT p.profile_id, p.first_name, p.last_name, p.email,
       ie.date AS interaction_date, ie.title AS attribute, ie.option_label AS option,
       ie.poll_id, ie.event_id, ie.session_id, ie.votes
FROM interactions_enriched ie
JOIN {{ schema }}profile_identifiers pi ON pi.identifier_type = 'session_id' AND pi.identifier_value = ie.session_id
JOIN {{ schema }}audience_profiles p ON p.profile_id = pi.profile_id
{% if ds %}
WHERE ie.dt <= DATE '{{ ds }}'{% if interactions_from | default(none) %} AND ie.dt >= DATE '{{ interactions_from }}'{% endif %}
{% else %}
WHERE ie.dt <= (SELECT max(dt) FROM published_snapshots){% if interactions_from | default(none) %} AND ie.dt >= DATE '{{ interactions_from }}'{% endif %}
{% endif %}
