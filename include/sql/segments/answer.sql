{% import "profiles/_macros.sql" as profiles %}
{#- answer: the profile's latest answer to the element titled `attribute` is one of the
    options. "Latest" orders exactly as the answers column of audience_profiles does
    (profiles/_macros.sql). since: the first matching answer after the profile's last different
    one, i.e. the day the current answer was first given. -#}
{%- set answer_key = profiles.answer_order_key("ie") %}
SELECT profile_id, min(date) AS since
FROM (
    SELECT pi.profile_id, ie.date,
           ie.option_label IN ({{ options | join(", ") }}) AS matches,
           {{ answer_key }} AS answer_key,
           max(CASE WHEN ie.option_label NOT IN ({{ options | join(", ") }}) THEN {{ answer_key }} END)
               OVER (PARTITION BY pi.profile_id) AS last_other_key
    FROM interactions_enriched ie
    JOIN {{ rs }}.profile_identifiers pi
      ON pi.identifier_type = 'session_id' AND pi.identifier_value = ie.session_id
    WHERE ie.dt <= DATE '{{ ds }}'{% if interactions_from | default(none) %} AND ie.dt >= DATE '{{ interactions_from }}'{% endif %} AND ie.title = {{ attribute }} AND ie.option_label IS NOT NULL
) answers
WHERE matches AND (last_other_key IS NULL OR answer_key > last_other_key)
GROUP BY profile_id
