{% import "profiles/_macros.sql" as profiles %}
{% import "privacy/_macros.sql" as p %}
-- One row per profile as of the run's cutoff. Facts come from form entries (through the email
-- identifier) and SSO identities (through the external_id; the email alone through the email):
-- names take the most recent non-empty value; consent fields the most recent explicit
-- statement, with when and where it was made.
-- Nothing is ever inferred as opted in: no statement stays NULL.
-- The tables before audience_profiles are the task's scratch: TEMP, so nothing writes
-- them to disk (persisted, they cost a tenth of the profile build at 10M; bench/README.md).
CREATE OR REPLACE TEMP TABLE profile_facts AS
SELECT facts.*,
       -- recency order within the profile: later statements win; ties by file and line, then
       -- (rows from another loader have neither) by the values, so row order never decides
       row_number() OVER (PARTITION BY profile_id ORDER BY observed_at, file, line, fact_source,
                                                         email, first_name, last_name, external_id) AS recency,
       -- the statement's instant, in order: at one instant a No wins (consent, below)
       dense_rank() OVER (PARTITION BY profile_id ORDER BY observed_at) AS instant
FROM (
    SELECT pi.profile_id, f.entry_datetime AS observed_at, f._file AS file, f._line AS line,
           'form:' || coalesce(f.form_name, '') || coalesce(' (' || CAST(f.form_id AS VARCHAR) || ')', '') AS fact_source,
           f.first_name, f.last_name, f.email, CAST(NULL AS VARCHAR) AS external_id,
           f.optin_1, f.optin_2, f.accept_terms
    FROM form_entries f
    JOIN {{ rs }}.profile_identifiers pi ON pi.identifier_type = 'email' AND pi.identifier_value = f.email
    WHERE f.dt <= DATE '{{ ds }}' AND f.entry_datetime < TIMESTAMP '{{ interval_end }}'
    UNION ALL
    -- An SSO account's email is the profile's only if the identity rules put it there (a rule
    -- may have given that email to another profile).
    SELECT pi.profile_id, i.observed_at, i._file, i._line, 'sso', i.first_name, i.last_name,
           CASE WHEN pe.profile_id = pi.profile_id THEN i.email END, i.external_id,
           CAST(NULL AS BOOLEAN), CAST(NULL AS BOOLEAN), CAST(NULL AS BOOLEAN)
    FROM identities i
    JOIN {{ rs }}.profile_identifiers pi ON pi.identifier_type = 'external_id' AND pi.identifier_value = i.external_id
    LEFT JOIN {{ rs }}.profile_identifiers pe ON pe.identifier_type = 'email' AND pe.identifier_value = i.email
    WHERE i.dt <= DATE '{{ ds }}' AND i.observed_at < TIMESTAMP '{{ interval_end }}'
    UNION ALL
    -- ... and it is the email's profile's when the account is not there: its external_id
    -- blocked, or with another profile. The email only: the names are the account's.
    SELECT pe.profile_id, i.observed_at, i._file, i._line, 'sso', CAST(NULL AS VARCHAR),
           CAST(NULL AS VARCHAR), i.email, CAST(NULL AS VARCHAR), CAST(NULL AS BOOLEAN), CAST(NULL AS BOOLEAN), CAST(NULL AS BOOLEAN)
    FROM identities i
    JOIN {{ rs }}.profile_identifiers pe ON pe.identifier_type = 'email' AND pe.identifier_value = i.email
    LEFT JOIN {{ rs }}.profile_identifiers pi ON pi.identifier_type = 'external_id' AND pi.identifier_value = i.external_id
    WHERE i.dt <= DATE '{{ ds }}' AND i.observed_at < TIMESTAMP '{{ interval_end }}'
      AND (pi.profile_id IS NULL OR pi.profile_id <> pe.profile_id)
) facts;

-- Per profile and poll title, from every interaction of the profile's sessions: how many, their
-- dates and the latest answer (by interaction date, then landing date, file and line; rows of
-- another loader, with no file, come before the partition's files, and with no line either they
-- order by their option: engines and re-runs agree, segments/answer.sql too). One pass
-- over the interactions feeds both the activity and the answers below: 5.5 s at 10M, where a
-- pass for each took 6.9-7.8 s.
CREATE OR REPLACE TEMP TABLE profile_titles AS
SELECT pi.profile_id, ie.title, count(*) AS interactions,
       min(ie.date) AS first_interaction, max(ie.date) AS last_interaction,
{% if engine == "duckdb" %}
       -- One integer per interaction, ordered as (date, landing date, file, line): date days
       -- times 2^80, the file's rank by (landing date, file) times 2^48, the line. Comparing
       -- a row (struct) or string key of those fields took two to three times as long
       -- (bench/README.md). A NULL key (no answer) is no candidate.
       arg_max(ie.option_label,
               CASE WHEN ie.title IS NOT NULL AND ie.option_label IS NOT NULL THEN
                   CAST(ie.date - DATE '1970-01-01' AS HUGEINT) * 1208925819614629174706176
                   + CAST(f.file_rank AS HUGEINT) * 281474976710656
                   + coalesce(ie._line, ie.option) END) AS option
{% else %}
       max_by(ie.option_label,
              CASE WHEN ie.title IS NOT NULL AND ie.option_label IS NOT NULL THEN
                  {{ profiles.answer_order_key("ie") }} END) AS option
{% endif %}
FROM interactions_enriched ie
JOIN {{ rs }}.profile_identifiers pi ON pi.identifier_type = 'session_id' AND pi.identifier_value = ie.session_id
{% if engine == "duckdb" %}
JOIN (SELECT dt, _file, row_number() OVER (ORDER BY dt, _file NULLS FIRST) AS file_rank
      FROM (SELECT DISTINCT dt, _file FROM interactions_enriched WHERE dt <= DATE '{{ ds }}') d) f
  ON f.dt = ie.dt AND f._file IS NOT DISTINCT FROM ie._file
{% endif %}
WHERE ie.dt <= DATE '{{ ds }}'{% if interactions_from | default(none) %} AND ie.dt >= DATE '{{ interactions_from }}'{% endif %}
GROUP BY pi.profile_id, ie.title;

CREATE OR REPLACE TEMP TABLE profile_activity AS
SELECT profile_id, CAST(sum(interactions) AS BIGINT) AS interactions,
       min(first_interaction) AS first_interaction, max(last_interaction) AS last_interaction
FROM profile_titles
GROUP BY profile_id;

-- The answers as one JSON object per profile (profile_answers), keys sorted: Snowflake prints an
-- OBJECT's keys sorted, and the same order here makes a re-run write the same bytes.
{% if engine == "duckdb" %}
-- Every (title, answer) pair any profile gave, with its rank in that order and its JSON text: a
-- profile sorts its ranks (integers) and looks the texts up. 1.9 s at 10M, where sorting each
-- profile's (title, answer) structs and writing every pair's JSON took 5.8 s. (The pairs as a
-- MATERIALIZED CTE instead of a table of their own: 3.9 s.)
CREATE OR REPLACE TEMP TABLE profile_answer_pairs AS
SELECT title, option, row_number() OVER (ORDER BY title, option) AS pair_rank,
       to_json(title) || ':' || to_json(option) AS pair_json
FROM (SELECT DISTINCT title, option FROM profile_titles WHERE option IS NOT NULL) answered;

CREATE OR REPLACE TEMP TABLE profile_answers AS
WITH texts AS (SELECT list(pair_json ORDER BY pair_rank) AS pair_json FROM profile_answer_pairs),
ranked AS (
    SELECT t.profile_id, list_sort(list(p.pair_rank)) AS ranks
    FROM profile_titles t
    JOIN profile_answer_pairs p ON p.title = t.title AND p.option = t.option
    GROUP BY t.profile_id
)
SELECT r.profile_id,
       '{' || array_to_string(list_transform(r.ranks, lambda pair_rank: texts.pair_json[pair_rank]), ',') || '}' AS answers
FROM ranked r, texts;
DROP TABLE profile_answer_pairs;
{% else %}
CREATE OR REPLACE TEMP TABLE profile_answers AS
SELECT profile_id, CAST(object_agg(title, option) AS VARCHAR) AS answers
FROM profile_titles
WHERE option IS NOT NULL
GROUP BY profile_id;
{% endif %}
DROP TABLE profile_titles;

-- Its columns are the data contract's (docs/data-contract.md), known before the build as
-- config.PROFILE_COLUMNS: change them together (tests/test_pipeline.py checks both).
CREATE OR REPLACE TABLE {{ rs }}.audience_profiles AS
WITH ids AS (
    SELECT profile_id,
           min(profile_first_seen) AS identity_first_seen,
           max(first_seen) AS identity_last_seen,
           CAST(count_if(identifier_type = 'session_id') AS BIGINT) AS sessions
    FROM {{ rs }}.profile_identifiers GROUP BY profile_id
),
facts AS (
    SELECT profile_id,
{% for field in ["email", "external_id"] %}
           max_by({{ field }}, CASE WHEN {{ field }} IS NOT NULL THEN recency END) AS {{ field }},
{% endfor %}
{#- A blank name is no name: validation makes it NULL, but a row of another loader may hold
    '' or white space, which must not hide the name before it. #}
{% for field in ["first_name", "last_name"] %}
           max_by({{ field }}, CASE WHEN {{ p.trimmed_if_padded(field) }} <> '' THEN recency END) AS {{ field }},
{% endfor %}
{#- Consent at one instant, Yes and No: the No wins, whatever the file and line, as an
    opt-out must not be lost to the order files land in (forms that export minutes make such
    ties common). The key orders (instant, a No, recency) in a BIGINT: the instant's rank times
    2^33, 2^32 for a No, the recency (below 2^32). -#}
{% for field in ["optin_1", "optin_2", "accept_terms"] %}
{%- set key -%}
CASE WHEN {{ field }} IS NOT NULL THEN
    CAST(instant AS BIGINT) * 8589934592 + CASE WHEN NOT {{ field }} THEN 4294967296 ELSE 0 END + recency END
{%- endset %}
           max_by({{ field }}, {{ key }}) AS {{ field }},
           max_by(observed_at, {{ key }}) AS {{ field }}_at,
           max_by(fact_source, {{ key }}) AS {{ field }}_source,
{% endfor %}
           max(observed_at) AS last_fact_at
    FROM profile_facts GROUP BY profile_id
)
SELECT i.profile_id, f.email, f.external_id, f.first_name, f.last_name,
       f.optin_1, f.optin_2, f.accept_terms,
       least(i.identity_first_seen, coalesce(CAST(a.first_interaction AS TIMESTAMP), i.identity_first_seen)) AS first_seen,
       greatest(coalesce(f.last_fact_at, i.identity_last_seen), i.identity_last_seen,
                coalesce(CAST(a.last_interaction AS TIMESTAMP), i.identity_last_seen)) AS last_seen,
       i.sessions, coalesce(a.interactions, 0) AS interactions,
       coalesce(ans.answers, '{}') AS answers,
       f.optin_1_at, f.optin_1_source, f.optin_2_at, f.optin_2_source,
       f.accept_terms_at, f.accept_terms_source
FROM ids i
LEFT JOIN facts f USING (profile_id)
LEFT JOIN profile_activity a USING (profile_id)
LEFT JOIN profile_answers ans USING (profile_id);
