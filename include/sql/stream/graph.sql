{% import "identity/_macros.sql" as m with context %}
{% import "privacy/_macros.sql" as priv %}
-- The batch's identity graph joined to what is already known. identity.label_as_of ran the daily
-- build's link rules, graph and components on the history around the batch (link_sources.sql):
-- the session's id_labels holds every identifier with its component label, under every rule of
-- identity.yml but the per-profile limits (assign.sql leaves those to the daily build).
-- Known state: identifiers the stream attached since the last daily publish, then the daily
-- build's current profile_identifiers. A known profile holding identifiers of several components
-- joins them: one more round of connected components (suffix _s) on the labels.
-- Identifiers on the suppression list are left out (hash match, privacy/_macros.sql): the
-- erasure DAG lists a person (resolve_requests) before it removes their rows (a later task), and
-- a batch in between must not attach anyone to, or rebuild, a suppressed person's profile.
-- (`suppressed`: the list is not empty. Every known identifier is hashed then, once: a table.)
-- Sessions the batch's graph makes shared devices (more people than their limit: links.sql). A
-- table of the work schema, not the TEMP id_shared: a view may not read a temporary table on
-- Snowflake.
CREATE OR REPLACE TABLE {{ rs }}.shared_sessions AS
SELECT DISTINCT session_id FROM (
    SELECT session_id FROM {{ rs }}.form_entries UNION SELECT session_id FROM {{ rs }}.identities
) s
WHERE {{ m.node_id("session_id", "s.session_id") }} IN (SELECT session_node FROM id_shared);

CREATE OR REPLACE {{ "TABLE" if suppressed else "VIEW" }} {{ rs }}.state AS
SELECT identifier_type, identifier_value, profile_id FROM (
    SELECT identifier_type, identifier_value, profile_id FROM {{ home }}.stream_identifiers
    UNION ALL
    SELECT p.identifier_type, p.identifier_value, p.profile_id FROM {{ home }}.profile_identifiers p
    WHERE NOT EXISTS (
        SELECT 1 FROM {{ home }}.stream_identifiers s
        WHERE s.identifier_type = p.identifier_type AND s.identifier_value = p.identifier_value
    )
) known
-- A session the batch's graph makes a shared device links to nothing, as the next daily build
-- will decide: its known profile must not keep it, or the strangers' interactions on it would go
-- out under that profile. So does one an earlier batch made shared, until the daily build has it.
WHERE NOT (known.identifier_type = 'session_id'
           AND known.identifier_value IN (SELECT session_id FROM {{ rs }}.shared_sessions
                                          UNION ALL
                                          SELECT session_id FROM {{ home }}.stream_shared_sessions))
{% if suppressed %}
  AND NOT EXISTS (
    SELECT 1 FROM {{ home }}.suppression_list l
    WHERE l.identifier_type = known.identifier_type
      AND l.identifier_hash = {{ priv.hashed("known.identifier_value") }}
      AND {{ priv.exactly("l", "known.identifier_type", "known.identifier_value") }}
)
{% endif %};

CREATE OR REPLACE TABLE {{ rs }}.node_profile AS
SELECT l.node_id, l.label, s.profile_id
FROM id_labels l
JOIN {{ rs }}.state s ON s.identifier_type = l.node_type AND s.identifier_value = l.node_value;

-- Each known profile links the labels of the components it touches to the smallest of them.
CREATE OR REPLACE TEMP TABLE id_edges_s AS
SELECT DISTINCT first_label AS a, label AS b
FROM (
    SELECT label, min(label) OVER (PARTITION BY profile_id) AS first_label
    FROM {{ rs }}.node_profile
) p
WHERE label <> first_label;

-- The accepted links among the batch's own rows: when the batch joined profiles (assign.sql).
CREATE OR REPLACE TABLE {{ rs }}.batch_links AS
{% for k in m.kinds %}
SELECT '{{ k.left_type }}' AS left_type, src.{{ k.left }} AS left_value,
       src.{{ k.observed_at }} AS observed_at
FROM {{ k.relation }} src
JOIN id_checked c
  ON c.kind = {{ k.kind }} AND c.rule IS NULL
 AND c.left_id = {{ m.node_id(k.left_type, "src." ~ k.left) }}
 AND c.right_id = {{ m.node_id(k.right_type, "src." ~ k.right) }}
WHERE src._file IN (SELECT file FROM {{ bs }}.batch_files){% if "where" in k %} AND src.{{ k.where }}{% endif %}
{{ "UNION ALL" if not loop.last }}
{% endfor %};
